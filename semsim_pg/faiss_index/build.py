"""Building a FAISS index from a collection's vectors and saving it atomically with its manifest.

The vectors are streamed out of PostgreSQL in keyset-paginated batches (memory stays bounded
apart from the index itself), keyed by the documents' ids as FAISS int64 ids, with the external
ids in a sidecar file. Everything is written into a temporary directory that replaces the target
only once complete (:func:`semsim_pg.fsutil.atomic_directory`), so a loader only ever finds a
complete index.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsim_pg.errors import InvalidInput
from semsim_pg.faiss_index.format import (
    IDS_FILE,
    INDEX_FILE,
    INDEX_TYPES,
    MANIFEST,
    TRAIN_POINTS_PER_LIST,
    FaissManifest,
    faiss_metric,
    load_faiss,
)
from semsim_pg.faiss_index.stream import count_vectors, stream_vectors, training_sample
from semsim_pg.fsutil import atomic_directory, check_output_path
from semsim_pg.progress import progress_bar

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = ["build_index"]

logger = logging.getLogger(__name__)


def _check_params(index_type: str, dimension: int, params: dict[str, int | None]) -> dict[str, int]:
    """The index's parameters: each one given (None: not given, its default) checked, the others
    defaulted. 0 is a value like any other, refused where it is too small (never read as "unset")."""
    if index_type not in INDEX_TYPES:
        raise InvalidInput(f"Unknown FAISS index type {index_type!r}: use one of {', '.join(INDEX_TYPES)}.")

    def given(name: str, default: int, least: int) -> int:
        value = params.get(name)
        if value is None:
            return default
        if value < least:
            raise InvalidInput(f"--{name.replace('_', '-')} must be at least {least}, got {value}.")
        return int(value)

    chosen: dict[str, int] = {}
    if index_type in ("ivfflat", "ivfpq"):
        chosen["nlist"] = given("nlist", 0, 1)  # 0: chosen from the row count at build time
    if index_type == "hnsw":
        chosen["m"] = given("m", 32, 2)
        chosen["ef_construction"] = given("ef_construction", 64, 1)
    if index_type == "ivfpq":
        pq_m = given("pq_m", _default_pq_m(dimension), 1)
        if dimension % pq_m:
            raise InvalidInput(
                f"--pq-m must divide the dimension {dimension}, got {pq_m}. Try one of "
                f"{', '.join(str(n) for n in range(1, 97) if dimension % n == 0 and n >= 8)}."
            )
        chosen["pq_m"] = pq_m
        chosen["pq_bits"] = given("pq_bits", 8, 1)
        if chosen["pq_bits"] > 16:
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
    faiss = load_faiss()
    coll = store.get_collection(collection)
    out = Path(out)
    params = _check_params(
        index_type,
        coll.dimension,
        {"nlist": nlist, "m": m, "ef_construction": ef_construction, "pq_m": pq_m, "pq_bits": pq_bits},
    )
    metric = faiss_metric(coll.metric, index_type)
    _check_target(out, overwrite)
    total = count_vectors(store, coll)
    if total == 0:
        raise InvalidInput(f"Collection {coll.name!r} holds no vectors for model {coll.model_name}: ingest first.")
    normalise = coll.metric == "cosine"
    if "nlist" in params:
        if params["nlist"] == 0:
            # The FAISS guideline of about sqrt(n) lists, capped so each list can be trained.
            params["nlist"] = max(1, min(int(4 * np.sqrt(total)), total // 39 or 1))
        if params["nlist"] > total:
            raise InvalidInput(f"--nlist {params['nlist']} is larger than the {total} vectors of {coll.name!r}.")
    if index_type == "ivfpq" and total < 2 ** params["pq_bits"]:
        # FAISS trains 2**pq_bits centroids per sub-quantizer and needs a training point for each.
        fits = total.bit_length() - 1
        raise InvalidInput(
            f"--index ivfpq with --pq-bits {params['pq_bits']} needs at least {2 ** params['pq_bits']} vectors to "
            f"train, and {coll.name!r} holds {total} vectors: use --index hnsw or flat (exact, quick at this size)"
            + ("." if fits < 1 else f", or --pq-bits {fits}." if fits == 1 else f", or --pq-bits {fits} or less.")
        )
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
        sample = training_sample(store, coll, size, normalise)
        logger.info("training %s on %d of %d vectors", index_type, len(sample), total)
        inner.train(sample)
        del sample
    index = faiss.IndexIDMap(inner)
    # The manifest goes last: a directory without one is never a complete index, and
    # atomic_directory puts the directory in place only once everything in it is on disk.
    with atomic_directory(out, overwrite=True) as tmp:
        rows = 0
        with (
            progress_bar(progress, total=total, desc=f"faiss {index_type} {coll.name}", unit="vec") as bar,
            (tmp / IDS_FILE).open("w", encoding="utf-8") as sidecar,
        ):
            for ids, external_ids, vectors in stream_vectors(store, coll, batch_size=batch_size, normalise=normalise):
                index.add_with_ids(vectors, ids)
                for doc_id, external_id in zip(ids.tolist(), external_ids, strict=True):
                    sidecar.write(json.dumps([doc_id, external_id]) + "\n")
                rows += len(ids)
                bar.update(len(ids))
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
        with (tmp / MANIFEST).open("w", encoding="utf-8") as handle:
            json.dump(manifest.to_dict(), handle, indent=2)
            handle.write("\n")
    logger.info("built FAISS %s index of %d vectors in %.1f s into %s", index_type, rows, build_seconds, out)
    return manifest


def _write_index(index: Any, path: Path) -> None:
    faiss = load_faiss()
    faiss.write_index(index, str(path))


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir() or not (out / MANIFEST).is_file():
            raise InvalidInput(
                f"{out} exists and is not a FAISS index directory (no {MANIFEST}). Give a new path: semsim "
                "replaces only directories it wrote itself."
            )
        if not overwrite:
            raise InvalidInput(f"{out} holds an index already. Remove it or allow overwriting.")
    check_output_path(out, "FAISS index directory", directory=True)
