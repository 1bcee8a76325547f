"""A saved FAISS index loaded for search: checked against its manifest (and the collection, when
given), with the map from FAISS ids back to external ids."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import DimensionMismatch, InputFileError, InvalidQuery
from semsim_pg.faiss_index.format import (
    IDS_FILE,
    INDEX_FILE,
    FaissManifest,
    check_manifest,
    load_faiss,
    read_manifest,
)
from semsim_pg.faiss_index.stream import count_vectors, normalised

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = ["FaissIndex", "load_index"]


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
        faiss = load_faiss()
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
            matrix = normalised(matrix)
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


def load_index(
    path: str | Path,
    *,
    store: DocumentStore | None = None,
    collection: str | Collection | None = None,
    check_rows: bool = True,
) -> FaissIndex:
    """Load an index saved by :func:`build_index`; with ``store`` and ``collection``, check it still
    matches (model, dimension, metric, collection, row count) and raise naming what differs."""
    faiss = load_faiss()
    path = Path(path)
    manifest = read_manifest(path)
    if store is not None and collection is not None:
        coll = store.get_collection(collection)
        check_manifest(manifest, coll, count_vectors(store, coll) if check_rows else None, path)
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
