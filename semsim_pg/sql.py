"""The distance metrics and pgvector's text form of a vector: facts every layer shares.

A metric maps to a pgvector distance operator (and the pgvector SQLAlchemy comparator method
that writes it), an HNSW operator class and a similarity that grows with closeness. This table
is the one source for the list of metrics: the settings, the query layer, the CLI, FAISS and the
Django app read it; migration 0001's CHECK constraint and its PL/pgSQL spell the same list as
literals (tests/test_queries.py checks that they agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect

__all__ = ["METRICS", "METRIC_NAMES", "Metric", "to_array", "vector_literal"]

Distance = sa.ColumnElement[Any]


@dataclass(frozen=True)
class Metric:
    name: str
    operator: str
    #: the pgvector.sqlalchemy comparator method that writes ``operator``
    comparator: str
    opclass: str
    #: a distance expression -> a similarity (larger is closer)
    similarity: Callable[[Distance], Distance]
    description: str
    #: the distance is undefined for a zero vector (cosine divides by the norms: NaN)
    needs_direction: bool = False

    def distance(self, vectors: Any, query: Any) -> Distance:
        """``vectors <op> query`` through pgvector's SQLAlchemy operators."""
        result: Distance = getattr(vectors, self.comparator)(query)
        return result

    @cached_property
    def similarity_sql(self) -> str:
        """The similarity as SQL around a distance ``{d}`` (for the Django app's expressions)."""
        placeholder = sa.literal_column("{d}", sa.Float)
        dialect = PGDialect()  # type: ignore[no-untyped-call]
        compiled = self.similarity(placeholder).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        return str(compiled)


def _closeness(d: Distance) -> Distance:
    return 1 / (1 + d)


METRICS: dict[str, Metric] = {
    "cosine": Metric(
        "cosine",
        "<=>",
        "cosine_distance",
        "vector_cosine_ops",
        lambda d: 1 - d,
        "1 - cosine distance (cosine similarity)",
        needs_direction=True,
    ),
    "l2": Metric("l2", "<->", "l2_distance", "vector_l2_ops", _closeness, "1 / (1 + Euclidean distance)"),
    "inner_product": Metric(
        "inner_product", "<#>", "max_inner_product", "vector_ip_ops", lambda d: -d, "inner product"
    ),
    "l1": Metric("l1", "<+>", "l1_distance", "vector_l1_ops", _closeness, "1 / (1 + Manhattan distance)"),
}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)


def vector_literal(vector: npt.ArrayLike) -> str:
    """pgvector's text form. Sent as a text parameter cast to ``vector(n)`` this is the fast path
    (measured with benchmarks/ingest_search.py: 0.66 ms against 11.2 ms per query for a binary
    NumPy parameter). Nine significant digits give back the very float32 (what pgvector stores),
    in 60% of the characters of ``repr`` and a quarter of its time (benchmarks/django_bench.py)."""
    array = np.asarray(vector, dtype=np.float32).ravel()
    return "[" + _literal_format(array.shape[0]) % tuple(array.tolist()) + "]"


@lru_cache(maxsize=8)
def _literal_format(dimensions: int) -> str:
    return ",".join(["%.9g"] * dimensions)


def to_array(value: Any) -> npt.NDArray[np.float32]:
    """A vector read from PostgreSQL as a float32 array: pgvector's text form, its Python
    ``Vector`` type, or an array (psycopg with pgvector's loaders registered)."""
    if isinstance(value, str):
        return np.array(value.strip("[]").split(","), dtype=np.float32)
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)
