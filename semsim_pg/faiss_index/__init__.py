"""FAISS indexes built beside the database, never instead of it: a tool for large offline rebuilds
and for measuring pgvector's recall and speed, not a second source of truth.

* :mod:`~semsim_pg.faiss_index.format`: the saved files and manifest; the metric mapping.
* :mod:`~semsim_pg.faiss_index.stream`: reading a collection's vectors out of PostgreSQL.
* :mod:`~semsim_pg.faiss_index.build`: :func:`build_index`, saved atomically.
* :mod:`~semsim_pg.faiss_index.index`: :func:`load_index` and :class:`FaissIndex` (search).
* :mod:`~semsim_pg.faiss_index.compare`: the benchmark against pgvector's HNSW.

``faiss`` is imported inside functions: importing semsim never loads it.
"""

from __future__ import annotations

from semsim_pg.faiss_index.build import build_index
from semsim_pg.faiss_index.compare import (
    CompareRow,
    compare,
    format_table,
    parse_int_list,
    plot,
    rebuild_pg_index,
    sample_queries,
    summarize,
)
from semsim_pg.faiss_index.format import INDEX_TYPES, FaissManifest, check_manifest, read_manifest
from semsim_pg.faiss_index.index import FaissIndex, load_index
from semsim_pg.faiss_index.stream import stream_vectors

__all__ = [
    "INDEX_TYPES",
    "CompareRow",
    "FaissIndex",
    "FaissManifest",
    "build_index",
    "check_manifest",
    "compare",
    "format_table",
    "load_index",
    "parse_int_list",
    "plot",
    "read_manifest",
    "rebuild_pg_index",
    "sample_queries",
    "stream_vectors",
    "summarize",
]
