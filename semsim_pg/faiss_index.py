"""FAISS indexes built beside the database, never instead of it (ARCHITECTURE.md decision 6).

An index is built from a collection's vectors streamed out of PostgreSQL in keyset-paginated
batches (memory stays bounded apart from the index itself), keyed by ``semsim.documents.id`` as
FAISS int64 ids, with the external ids in a sidecar file. It is written into a temporary
directory beside the target, fsynced and renamed into place, so a loader only ever finds a
complete index. A manifest records what the index was built from; loading compares it with the
collection and names every difference.

``faiss`` is imported inside functions: importing semsim never loads it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from semsim_pg.db import connect, vector_connection
from semsim_pg.errors import DimensionMismatch, InputFileError, InvalidInput, InvalidQuery, ModelMismatch

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = [
    "INDEX_TYPES",
    "FaissIndex",
    "FaissManifest",
    "build_index",
    "load_index",
    "stream_vectors",
]

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivfflat", "hnsw", "ivfpq")
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.jsonl"
FORMAT_VERSION = 1
# FAISS warns below ~39 training points per centroid; more buys little for k-means.
TRAIN_POINTS_PER_LIST = 64

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FaissManifest:
    """What an index was built from and how: compared with the collection on load."""

    collection: str
    collection_id: int
    model: str
    dimension: int
    metric: str
    rows: int
    index_type: str
    parameters: dict[str, int]
    build_seconds: float
    faiss_version: str
    created_at: str
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> FaissManifest:
        wanted = {f for f in cls.__dataclass_fields__}
        missing = sorted(wanted - set(data) - {"format_version"})
        if missing:
            raise InputFileError(
                f"{source}: the manifest lacks {', '.join(missing)}. It was not written by `semsim faiss build`, "
                "or is damaged: rebuild the index."
            )
        return cls(**{k: v for k, v in data.items() if k in wanted})


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise InvalidInput("FAISS is not installed: pip install faiss-cpu.") from exc
    return faiss


def faiss_metric(metric: str, index_type: str) -> int:
    """The FAISS metric that ranks like pgvector's operator for ``metric``.

    cosine and inner product both become METRIC_INNER_PRODUCT (cosine on L2-normalised vectors,
    which rank the same as ``<=>``); l2 is METRIC_L2 (FAISS reports it squared); l1 exists only
    for flat indexes in FAISS (the HNSW and IVF codecs here are built for L2/IP).
    """
    faiss = _faiss()
    if metric in ("cosine", "inner_product"):
        return int(faiss.METRIC_INNER_PRODUCT)
    if metric == "l2":
        return int(faiss.METRIC_L2)
    if metric == "l1":
        if index_type != "flat":
            raise InvalidInput(
                f"Collection metric l1 (Manhattan) works only with --index flat in FAISS, not {index_type}: "
                "use --index flat, or a collection with metric cosine, inner_product or l2."
            )
        return int(faiss.METRIC_L1)
    raise InvalidInput(f"Unknown metric {metric!r}.")


def _check_params(index_type: str, dimension: int, params: dict[str, int]) -> dict[str, int]:
    if index_type not in INDEX_TYPES:
        raise InvalidInput(f"Unknown FAISS index type {index_type!r}: use one of {', '.join(INDEX_TYPES)}.")
    chosen: dict[str, int] = {}
    if index_type in ("ivfflat", "ivfpq"):
        chosen["nlist"] = int(params.get("nlist") or 0)  # 0: chosen from the row count at build time
    if index_type == "hnsw":
        chosen["m"] = int(params.get("m") or 32)
        chosen["ef_construction"] = int(params.get("ef_construction") or 64)
        if chosen["m"] < 2 or chosen["ef_construction"] < 1:
            raise InvalidInput(f"HNSW needs m >= 2 and ef_construction >= 1, got {chosen}.")
    if index_type == "ivfpq":
        pq_m = int(params.get("pq_m") or _default_pq_m(dimension))
        if pq_m < 1 or dimension % pq_m:
            raise InvalidInput(
                f"--pq-m must divide the dimension {dimension}, got {pq_m}. Try one of "
                f"{', '.join(str(n) for n in range(1, 97) if dimension % n == 0 and n >= 8)}."
            )
        chosen["pq_m"] = pq_m
        chosen["pq_bits"] = int(params.get("pq_bits") or 8)
        if not 1 <= chosen["pq_bits"] <= 16:
            raise InvalidInput(f"--pq-bits must be from 1 to 16, got {chosen['pq_bits']}.")
    return chosen


def _default_pq_m(dimension: int) -> int:
    # 8 bytes of code per 48 dims (8 dims per sub-quantizer) keeps recall usable for 384-d sentences.
    for m in (dimension // 8, 48, 32, 24, 16, 8, 4, 2, 1):
        if m >= 1 and dimension % m == 0:
            return m
    return 1


def _factory_string(index_type: str, params: dict[str, int]) -> str:
    if index_type == "flat":
        return "Flat"
    if index_type == "ivfflat":
        return f"IVF{params['nlist']},Flat"
    if index_type == "hnsw":
        return f"HNSW{params['m']},Flat"
    return f"IVF{params['nlist']},PQ{params['pq_m']}x{params['pq_bits']}"


# streaming -----------------------------------------------------------------------------------
def stream_vectors(
    store: DocumentStore,
    collection: str | Collection,
    *,
    batch_size: int = 5000,
    normalise: bool = False,
) -> Iterator[tuple[npt.NDArray[np.int64], list[str], Matrix]]:
    """(document ids, external ids, vectors) of a collection's current model, in id order.

    Keyset pagination on ``document_id`` (the primary key's first column): each batch is one
    short query, nothing is held open between batches and memory is bounded by ``batch_size``.
    """
    coll = store.get_collection(collection)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    after = 0
    statement = (
        "SELECT e.document_id, d.external_id, e.embedding FROM semsim.embeddings e"
        " JOIN semsim.documents d ON d.id = e.document_id"
        " WHERE e.collection_id = %(cid)s AND e.model_name = %(model)s AND e.document_id > %(after)s"
        " ORDER BY e.document_id LIMIT %(n)s"
    )
    while True:
        with connect(store.engine) as conn:
            raw = vector_connection(conn)
            with raw.cursor() as cur:
                cur.execute(statement, {"cid": coll.id, "model": coll.model_name, "after": after, "n": batch_size})
                rows = cur.fetchall()
            conn.rollback()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([_as_array(r[2]) for r in rows])
        if vectors.shape[1] != coll.dimension:
            raise DimensionMismatch(
                f"Collection {coll.name!r} says {coll.dimension} dimensions but holds {vectors.shape[1]}-dimensional "
                f"vectors for model {coll.model_name}: re-embed it."
            )
        if normalise:
            vectors = _normalised(vectors)
        yield ids, [str(r[1]) for r in rows], vectors
        after = int(ids[-1])


def _as_array(value: Any) -> Matrix:
    """pgvector's Python type (``Vector``) or an array, as float32."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def _normalised(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _training_sample(store: DocumentStore, coll: Collection, size: int, normalise: bool) -> Matrix:
    """A deterministic pseudo-random sample for k-means (ordered by a hash of the id, not by insertion)."""
    with connect(store.engine) as conn:
        raw = vector_connection(conn)
        with raw.cursor() as cur:
            cur.execute(
                "SELECT e.embedding FROM semsim.embeddings e"
                " WHERE e.collection_id = %(cid)s AND e.model_name = %(model)s"
                " ORDER BY md5(e.document_id::text) LIMIT %(n)s",
                {"cid": coll.id, "model": coll.model_name, "n": size},
            )
            rows = cur.fetchall()
        conn.rollback()
    sample = np.stack([_as_array(r[0]) for r in rows]) if rows else np.zeros((0, coll.dimension), np.float32)
    return _normalised(sample) if normalise else np.ascontiguousarray(sample, dtype=np.float32)


def _count_vectors(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM semsim.embeddings WHERE collection_id = :cid AND model_name = :model"),
                {"cid": coll.id, "model": coll.model_name},
            ).scalar_one()
        )


# building ------------------------------------------------------------------------------------
def build_index(
    store: DocumentStore,
    collection: str | Collection,
    out: str | Path,
    *,
    index_type: str = "hnsw",
    nlist: int | None = None,
    m: int | None = None,
    ef_construction: int | None = None,
    pq_m: int | None = None,
    pq_bits: int | None = None,
    batch_size: int = 5000,
    progress: bool | None = None,
    overwrite: bool = True,
) -> FaissManifest:
    """Build a FAISS index of a collection's vectors and save it atomically in ``out``.

    An existing index directory (one holding a manifest) is replaced; any other existing
    path is refused, so a typo never deletes a user's folder.
    """
    faiss = _faiss()
    coll = store.get_collection(collection)
    out = Path(out)
    params = _check_params(
        index_type,
        coll.dimension,
        {
            "nlist": nlist or 0,
            "m": m or 0,
            "ef_construction": ef_construction or 0,
            "pq_m": pq_m or 0,
            "pq_bits": pq_bits or 0,
        },
    )
    metric = faiss_metric(coll.metric, index_type)
    _check_target(out, overwrite)
    total = _count_vectors(store, coll)
    if total == 0:
        raise InvalidInput(f"Collection {coll.name!r} holds no vectors for model {coll.model_name}: ingest first.")
    normalise = coll.metric == "cosine"
    if "nlist" in params:
        if params["nlist"] == 0:
            # The FAISS guideline of about sqrt(n) lists, capped so each list can be trained.
            params["nlist"] = max(1, min(int(4 * np.sqrt(total)), total // 39 or 1))
        if params["nlist"] > total:
            raise InvalidInput(f"--nlist {params['nlist']} is larger than the {total} vectors of {coll.name!r}.")
    start = time.perf_counter()
    inner = faiss.index_factory(coll.dimension, _factory_string(index_type, params), metric)
    if index_type == "hnsw":
        inner.hnsw.efConstruction = params["ef_construction"]
    if index_type == "ivfpq":
        # Polysemous code reordering only serves Hamming-filtered search, which is not used here.
        inner.do_polysemous_training = False
    if not inner.is_trained:
        size = min(
            total,
            max(params["nlist"] * TRAIN_POINTS_PER_LIST, (2 ** params["pq_bits"]) * 39 if index_type == "ivfpq" else 0),
        )
        sample = _training_sample(store, coll, size, normalise)
        logger.info("training %s on %d of %d vectors", index_type, len(sample), total)
        inner.train(sample)
        del sample
    index = faiss.IndexIDMap(inner)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        bar = _progress(progress, total=total, desc=f"faiss {index_type} {coll.name}", unit="vec")
        rows = 0
        try:
            with (tmp / IDS_FILE).open("w", encoding="utf-8") as sidecar:
                for ids, external_ids, vectors in stream_vectors(
                    store, coll, batch_size=batch_size, normalise=normalise
                ):
                    index.add_with_ids(vectors, ids)
                    for doc_id, external_id in zip(ids.tolist(), external_ids, strict=True):
                        sidecar.write(json.dumps([doc_id, external_id]) + "\n")
                    rows += len(ids)
                    if bar is not None:
                        bar.update(len(ids))
                _fsync(sidecar)
        finally:
            if bar is not None:
                bar.close()
        build_seconds = time.perf_counter() - start
        manifest = FaissManifest(
            collection=coll.name,
            collection_id=coll.id,
            model=coll.model_name,
            dimension=coll.dimension,
            metric=coll.metric,
            rows=rows,
            index_type=index_type,
            parameters=params,
            build_seconds=round(build_seconds, 3),
            faiss_version=str(faiss.__version__),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        _write_index(index, tmp / INDEX_FILE)
        # The manifest goes last: a directory without one is never a complete index.
        with (tmp / MANIFEST).open("w", encoding="utf-8") as handle:
            json.dump(manifest.to_dict(), handle, indent=2)
            handle.write("\n")
            _fsync(handle)
        _fsync_dir(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built FAISS %s index of %d vectors in %.1f s into %s", index_type, rows, build_seconds, out)
    return manifest


def _write_index(index: Any, path: Path) -> None:
    faiss = _faiss()
    faiss.write_index(index, str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir() or not (out / MANIFEST).is_file():
            raise InvalidInput(
                f"{out} exists and is not a FAISS index directory (no {MANIFEST}). Give a new path: semsim "
                "replaces only directories it wrote itself."
            )
        if not overwrite:
            raise InvalidInput(f"{out} holds an index already. Remove it or allow overwriting.")
    if not out.parent.exists():
        raise InvalidInput(f"The parent directory of {out} does not exist: create {out.parent} first.")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory to ``out``. An older index is first renamed aside, then removed:
    a reader sees the old complete index, briefly nothing, then the new complete one; never a mix."""
    old: Path | None = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# loading and searching -----------------------------------------------------------------------
@dataclass
class FaissIndex:
    """A loaded index with its manifest and the map from FAISS ids back to external ids."""

    path: Path
    manifest: FaissManifest
    index: Any
    external_ids: dict[int, str] = field(repr=False)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    @property
    def label(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.manifest.parameters.items() if k != "pq_bits")
        return f"faiss-{self.manifest.index_type}" + (f"({params})" if params else "")

    def set_search_parameters(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """efSearch for HNSW, nprobe for IVF; ignored where the index has no such knob."""
        faiss = _faiss()
        space = faiss.ParameterSpace()
        if ef_search is not None and self.manifest.index_type == "hnsw":
            space.set_index_parameter(self.index, "efSearch", int(ef_search))
        if nprobe is not None and self.manifest.index_type in ("ivfflat", "ivfpq"):
            space.set_index_parameter(self.index, "nprobe", int(nprobe))

    def search(self, queries: npt.ArrayLike, k: int = 10) -> list[list[tuple[str, float]]]:
        """(external id, distance) lists, nearest first, with distances on pgvector's scale:
        cosine distance, Euclidean distance, negative inner product or Manhattan distance."""
        matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if matrix.shape[1] != self.manifest.dimension:
            raise DimensionMismatch(
                f"Query vectors have {matrix.shape[1]} dimensions but the index at {self.path} holds "
                f"{self.manifest.dimension}-dimensional vectors of model {self.manifest.model}."
            )
        if not 1 <= k <= 10_000:
            raise InvalidQuery(f"k must be from 1 to 10000, got {k}.")
        metric = self.manifest.metric
        if metric == "cosine":
            matrix = _normalised(matrix)
        scores, labels = self.index.search(np.ascontiguousarray(matrix), k)
        results: list[list[tuple[str, float]]] = []
        for row_scores, row_labels in zip(scores, labels, strict=True):
            hits = []
            for score, label in zip(row_scores.tolist(), row_labels.tolist(), strict=True):
                if label < 0:  # fewer than k found (IVF with few probes)
                    continue
                if metric == "cosine":
                    distance = 1.0 - score
                elif metric == "inner_product":
                    distance = -score
                elif metric == "l2":
                    distance = float(np.sqrt(max(score, 0.0)))
                else:
                    distance = score
                hits.append((self.external_ids[int(label)], distance))
            results.append(hits)
        return results


def read_manifest(path: str | Path) -> FaissManifest:
    path = Path(path)
    if not path.is_dir():
        raise InputFileError(f"{path}: no such FAISS index directory. Build one with `semsim faiss build`.")
    source = path / MANIFEST
    if not source.is_file():
        raise InputFileError(
            f"{path}: holds no {MANIFEST}, so it is not a complete FAISS index. Build one with `semsim faiss build`."
        )
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{source}: cannot read the manifest ({exc}). Rebuild the index.") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{source}: the manifest must be a JSON object. Rebuild the index.")
    return FaissManifest.from_dict(data, source)


def check_manifest(manifest: FaissManifest, collection: Collection, rows: int | None, path: Path) -> None:
    """Raise, naming each difference, when the index was not built from this collection as it is now."""
    differences = []
    if manifest.collection != collection.name or manifest.collection_id != collection.id:
        differences.append(
            f"collection {manifest.collection!r} (id {manifest.collection_id}) vs {collection.name!r} (id {collection.id})"
        )
    if manifest.metric != collection.metric:
        differences.append(f"metric {manifest.metric} vs {collection.metric}")
    if rows is not None and manifest.rows != rows:
        differences.append(f"row count {manifest.rows} vs {rows} now")
    where = f"The FAISS index at {path} does not match collection {collection.name!r}"
    fix = f"Rebuild it: semsim faiss build -c {collection.name} --index {manifest.index_type} --out {path}"
    if manifest.model != collection.model_name:
        raise ModelMismatch(
            f"{where}: it holds vectors of model {manifest.model}, the collection of {collection.model_name}"
            + (f" (also {'; '.join(differences)})" if differences else "")
            + f". {fix}."
        )
    if manifest.dimension != collection.dimension:
        raise DimensionMismatch(
            f"{where}: {manifest.dimension} dimensions in the index, {collection.dimension} in the collection. {fix}."
        )
    if differences:
        raise InvalidInput(f"{where}: {'; '.join(differences)}. {fix}.")


def load_index(
    path: str | Path,
    *,
    store: DocumentStore | None = None,
    collection: str | Collection | None = None,
    check_rows: bool = True,
) -> FaissIndex:
    """Load an index saved by :func:`build_index`; with ``store`` and ``collection``, check it still
    matches (model, dimension, metric, collection, row count) and raise naming what differs."""
    faiss = _faiss()
    path = Path(path)
    manifest = read_manifest(path)
    if store is not None and collection is not None:
        coll = store.get_collection(collection)
        check_manifest(manifest, coll, _count_vectors(store, coll) if check_rows else None, path)
    for name in (INDEX_FILE, IDS_FILE):
        if not (path / name).is_file():
            raise InputFileError(f"{path}: {name} is missing. Rebuild the index with `semsim faiss build`.")
    index = faiss.read_index(str(path / INDEX_FILE))
    if index.d != manifest.dimension or index.ntotal != manifest.rows:
        raise InputFileError(
            f"{path}: {INDEX_FILE} holds {index.ntotal} vectors of {index.d} dimensions, the manifest says "
            f"{manifest.rows} of {manifest.dimension}. Rebuild the index."
        )
    external_ids: dict[int, str] = {}
    with (path / IDS_FILE).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                doc_id, external_id = json.loads(line)
            except (ValueError, TypeError):
                raise InputFileError(f"{path / IDS_FILE}, line {number}: not a [id, external id] pair.") from None
            external_ids[int(doc_id)] = str(external_id)
    if len(external_ids) != manifest.rows:
        raise InputFileError(
            f"{path / IDS_FILE}: {len(external_ids)} ids for {manifest.rows} vectors. Rebuild the index."
        )
    return FaissIndex(path=path, manifest=manifest, index=index, external_ids=external_ids)


def _progress(enabled: bool | None, **kwargs: Any) -> Any:
    if enabled is None:
        enabled = logger.getEffectiveLevel() <= logging.INFO
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def parse_int_list(text: str, what: str) -> Sequence[int]:
    """``"10,20,40"`` -> [10, 20, 40], for command-line lists."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"{what} must be whole numbers separated by commas, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise InvalidInput(f"{what} must be positive whole numbers separated by commas, got {text!r}.")
    return values


# comparing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompareRow:
    """One method at one setting, measured on the same queries as the others."""

    method: str
    setting: str
    recall: float
    p50_ms: float
    p95_ms: float
    qps: float
    build_seconds: float | None
    size_bytes: int | None
    queries: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_queries(
    store: DocumentStore, collection: str | Collection, n: int, *, seed: int = 0
) -> tuple[Matrix, list[str]]:
    """``n`` stored vectors (pseudo-random, repeatable for a seed) and their external ids.

    Searches for a stored vector leave that document out of the results, so a query never
    counts finding itself."""
    coll = store.get_collection(collection)
    if n < 1:
        raise InvalidInput(f"--sample must be at least 1, got {n}.")
    with connect(store.engine) as conn:
        raw = vector_connection(conn)
        with raw.cursor() as cur:
            cur.execute(
                "SELECT d.external_id, e.embedding FROM semsim.embeddings e"
                " JOIN semsim.documents d ON d.id = e.document_id"
                " WHERE e.collection_id = %(cid)s AND e.model_name = %(model)s"
                " ORDER BY md5(e.document_id::text || %(seed)s) LIMIT %(n)s",
                {"cid": coll.id, "model": coll.model_name, "seed": str(seed), "n": n},
            )
            rows = cur.fetchall()
        conn.rollback()
    if not rows:
        raise InvalidInput(f"Collection {coll.name!r} holds no vectors to sample queries from: ingest first.")
    return np.stack([_as_array(r[1]) for r in rows]), [str(r[0]) for r in rows]


def compare(
    store: DocumentStore,
    collection: str | Collection,
    queries: Matrix,
    *,
    exclude: Sequence[str | None] | None = None,
    k: int = 10,
    ef_search: Sequence[int] = (10, 20, 40, 80, 160),
    indexes: Sequence[FaissIndex] = (),
    nprobe: Sequence[int] = (1, 4, 16, 64),
    pg_build_seconds: float | None = None,
    progress: bool | None = None,
) -> list[CompareRow]:
    """Exact search, pgvector HNSW at each ``ef_search`` and each FAISS index, on the same queries.

    Recall@k is measured against the exact search through the same store (``exact=True``: a
    sequential scan in PostgreSQL). Latencies are per query, one query at a time, from Python:
    for PostgreSQL they include the round trip, as an application sees it; for FAISS they are
    in-process, on one thread. ``exclude[i]`` is an external id to leave out of query i's results (itself).
    """

    coll = store.get_collection(collection)
    vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if vectors.shape[1] != coll.dimension:
        raise DimensionMismatch(
            f"Query vectors have {vectors.shape[1]} dimensions, collection {coll.name!r} {coll.dimension}."
        )
    skip = list(exclude) if exclude is not None else [None] * len(vectors)
    if len(skip) != len(vectors):
        raise InvalidInput(f"{len(skip)} ids to exclude for {len(vectors)} queries.")
    for index in indexes:
        check_manifest(index.manifest, coll, None, index.path)
    fetch = k + (1 if any(x is not None for x in skip) else 0)
    # Every method at every setting, as (label, setting, prepare, search, build seconds, size).
    pg_size = _pg_index_size(store, coll)
    methods: list[tuple[str, str, Any, Any, float | None, int | None]] = [
        ("exact (pgvector scan)", "-", None, _pg_search(store, coll, fetch, True, None), None, None)
    ]
    for ef in ef_search:
        methods.append(
            (
                "pgvector hnsw",
                f"ef_search={ef}",
                None,
                _pg_search(store, coll, fetch, False, ef),
                pg_build_seconds,
                pg_size,
            )
        )
    for index in indexes:
        for name, value in _settings_for(index, ef_search, nprobe):
            setting = f"{'efSearch' if name == 'ef_search' else name}={value}" if name else "-"
            methods.append(
                (
                    index.label,
                    setting,
                    _faiss_prepare(index, name, value),
                    _faiss_search(index, fetch),
                    index.manifest.build_seconds,
                    index.size_bytes,
                )
            )
    found: list[list[list[str]]] = [[] for _ in methods]
    times: list[list[float]] = [[] for _ in methods]
    bar = _progress(progress, total=len(vectors), desc=f"compare {coll.name} ({len(methods)} methods)", unit="query")
    # One query at a time on one thread, like a PostgreSQL backend: FAISS's OpenMP threads add
    # nothing to a single query and, on a busy machine, their barriers cost tens of milliseconds.
    faiss = _faiss() if indexes else None
    threads = faiss.omp_get_max_threads() if faiss is not None else 0
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    try:
        # Query by query, every method in turn: on a shared machine a busy spell then slows all
        # methods alike instead of whichever happened to run during it.
        for vector, own in zip(vectors, skip, strict=True):
            for m, (_, _, prepare, search, _, _) in enumerate(methods):
                if prepare is not None:
                    prepare()
                start = time.perf_counter()
                ids = search(vector)
                times[m].append(time.perf_counter() - start)
                found[m].append([x for x in ids if x != own][:k])
            if bar is not None:
                bar.update(1)
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
        if bar is not None:
            bar.close()
    truth = found[0]
    return [
        _row(label, setting, found[m], truth, times[m], build, size)
        for m, (label, setting, _, _, build, size) in enumerate(methods)
    ]


def _faiss_prepare(index: FaissIndex, name: str, value: int) -> Any:
    if not name:
        return None
    return lambda: index.set_search_parameters(**{name: value})


def _faiss_search(index: FaissIndex, fetch: int) -> Any:
    def search(vector: Matrix) -> list[str]:
        return [x for x, _ in index.search(vector, fetch)[0]]

    return search


def _pg_search(store: DocumentStore, coll: Collection, fetch: int, exact: bool, ef: int | None) -> Any:
    from semsim_pg.store import QueryVector

    def search(vector: Matrix) -> list[str]:
        query = QueryVector(vector, coll.model_name)
        return [h.external_id for h in store.search(coll, query, fetch, exact=exact, ef_search=ef)]

    return search


def _settings_for(index: FaissIndex, ef_search: Sequence[int], nprobe: Sequence[int]) -> list[tuple[str, int]]:
    kind = index.manifest.index_type
    if kind == "hnsw":
        return [("ef_search", ef) for ef in ef_search]
    if kind in ("ivfflat", "ivfpq"):
        nlist = index.manifest.parameters["nlist"]
        return [("nprobe", n) for n in sorted({min(n, nlist) for n in nprobe})]
    return [("", 0)]


def _row(
    method: str,
    setting: str,
    found: list[list[str]],
    truth: list[list[str]],
    times: list[float],
    build_seconds: float | None,
    size_bytes: int | None,
) -> CompareRow:
    recalls = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    ms = np.asarray(times) * 1000.0
    return CompareRow(
        method=method,
        setting=setting,
        recall=float(np.mean(recalls)) if recalls else 0.0,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        qps=float(len(times) / max(sum(times), 1e-9)),
        build_seconds=build_seconds,
        size_bytes=size_bytes,
        queries=len(times),
    )


def _pg_index_size(store: DocumentStore, coll: Collection) -> int | None:
    from semsim_pg import sql

    with connect(store.engine) as conn:
        value = conn.execute(
            sa.text("SELECT pg_relation_size(to_regclass(:name))"),
            {"name": f"semsim.{sql.index_name(coll.id, coll.model_name)}"},
        ).scalar()
    return int(value) if value is not None else None


def rebuild_pg_index(store: DocumentStore, collection: str | Collection) -> float:
    """Rebuild the collection's HNSW index (REINDEX) and return the seconds it took: pgvector's build
    time measured the way FAISS's is. Writes to the embeddings table wait meanwhile; searches do not."""
    from semsim_pg import sql

    coll = store.get_collection(collection)
    start = time.perf_counter()
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"REINDEX INDEX semsim.{sql.index_name(coll.id, coll.model_name)}")
    return time.perf_counter() - start


def format_table(rows: Sequence[CompareRow], k: int) -> str:
    header = ("method", "setting", f"recall@{k}", "p50 ms", "p95 ms", "QPS", "build s", "size MB")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.method,
                r.setting,
                f"{r.recall:.3f}",
                f"{r.p50_ms:.2f}",
                f"{r.p95_ms:.2f}",
                f"{r.qps:.0f}",
                "-" if r.build_seconds is None else f"{r.build_seconds:.1f}",
                "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(rows: Sequence[CompareRow], path: str | Path, *, k: int, title: str = "") -> None:
    """Recall@k against queries per second, one line per method (matplotlib, Agg, imported here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InvalidInput("--plot needs matplotlib: pip install matplotlib.") from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods: dict[str, list[CompareRow]] = {}
    for r in rows:
        methods.setdefault(r.method, []).append(r)
    for method, group in methods.items():
        group = sorted(group, key=lambda r: r.recall)
        marker = "*" if method.startswith("exact") else "o"
        ax.plot([r.recall for r in group], [r.qps for r in group], marker=marker, label=method)
        for r in group:
            if r.setting != "-":
                ax.annotate(
                    r.setting.split("=")[-1], (r.recall, r.qps), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    ax.set_xlabel(f"recall@{k} against exact search")
    ax.set_ylabel("queries per second (one at a time)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
