"""SQL expressions of semantic search: the query vector, distances, similarity, the text hash.

Built the way pgvector-python's ``pgvector.django.functions`` builds its distances: a ``Func``
whose ``arg_joiner`` is the metric's operator. The query vector travels as a text literal cast
to ``vector(n)``: PERFORMANCE.md measured it 17 times faster than a binary NumPy parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import models
from django.db.models import F, FloatField, Func, OuterRef, Subquery
from django.db.models.expressions import Expression
from pgvector.django import VectorField

from semsim_pg.errors import DimensionMismatch, InvalidQuery
from semsim_pg.sql import METRICS, vector_literal
from semsim_pg.validation import check_text

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

__all__ = [
    "Distance",
    "MetricDistance",
    "QueryVector",
    "Similarity",
    "TextHash",
    "companion_model",
    "max_distance",
    "similarity_of",
]


class QueryVector(Expression):
    """A query as ``%s::vector(n)`` with a text parameter; a text is encoded when the SQL is built."""

    def __init__(
        self,
        query: str | Sequence[float] | np.ndarray[Any, Any],
        *,
        dimensions: int,
        model: str,
    ) -> None:
        super().__init__(output_field=_vector_field(dimensions))
        self.dimensions = dimensions
        self.model = model
        self.text: str | None = None
        self.literal: str | None = None
        # shared by the copies Django makes when it resolves the expression (a search uses it in two
        # layers): the text is encoded once per queryset evaluation, not once per copy
        self._encoded: list[str] = []
        if isinstance(query, str):
            if not query.strip():
                raise InvalidQuery(f"The search query is empty: got {query!r}. Give a text with at least one word.")
            # a lone surrogate (undecodable bytes) or NUL: one clear error, not a failure in the encoder or SQL
            self.text = check_text(query, "search query", InvalidQuery)
        elif query is None or isinstance(query, bytes | bool | int | float | dict):
            raise InvalidQuery(
                f"The search query must be a text or a vector of {dimensions} numbers; got {type(query).__name__} "
                f"{query!r}."
            )
        else:
            try:
                array = np.asarray(query, dtype=np.float32).ravel()
            except (TypeError, ValueError):
                raise InvalidQuery(
                    f"The search query must be a text or a vector of {dimensions} numbers; got {type(query).__name__}."
                ) from None
            if array.shape[0] != dimensions:
                raise DimensionMismatch(
                    f"The query vector has {array.shape[0]} dimensions; the vectors of model {model!r} have "
                    f"{dimensions}. Encode the query with the same model, or pass the text instead."
                )
            if not np.isfinite(array).all():
                raise InvalidQuery("The query vector holds NaN or infinite values.")
            self.literal = vector_literal(array)
        # Expression identity (used when querysets are compared or cached) must be hashable.
        self._constructor_args = (
            (self.text if self.text is not None else self.literal,),
            {"dimensions": dimensions, "model": model},
        )

    def vector_literal(self) -> str:
        if self.literal is not None:
            return self.literal
        if not self._encoded:
            from django_semsim.encoding import get_model_encoder

            if self.text is None:  # pragma: no cover - the constructor sets one of the two
                raise InvalidQuery("The query holds neither a text nor a vector.")
            # encode_query has an LRU cache as well: count() then iteration encode the text once
            self._encoded.append(vector_literal(get_model_encoder().encode_query(self.text)))
        return self._encoded[0]

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any) -> tuple[str, list[Any]]:
        return f"%s::vector({int(self.dimensions)})", [self.vector_literal()]


@functools.lru_cache(maxsize=8)
def _vector_field(dimensions: int) -> VectorField:
    """One output field per dimension: an unbound field describes a type, and a search builds one
    QueryVector per call (a new Field per query costs more than the rest of its construction)."""
    return VectorField(dimensions=dimensions)


class _Double(Func):
    """A ``double precision`` result (pgvector's distances and the similarity formulas over them):
    psycopg reads it as a float already, so rows need no converter (Django's would call float()
    on every value of every row)."""

    output_field = FloatField()
    convert_value = staticmethod(Func._convert_value_noop)


class MetricDistance(_Double):
    """``lhs <op> rhs`` for a metric of :data:`semsim_pg.sql.METRICS` (the operator joins the two arguments)."""

    function = ""

    def __init__(self, expression: Any, vector: Any, *, metric: str = "cosine") -> None:
        try:
            self.arg_joiner = f" {METRICS[metric].operator} "
        except KeyError:
            raise InvalidQuery(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.") from None
        self.metric = metric
        super().__init__(expression, vector)


def similarity_of(distance: Any, metric: str) -> Func:
    """The similarity of a distance expression, by the metric's formula (higher is closer)."""
    template = METRICS[metric].similarity_sql.format(d="(%(expressions)s)")
    return _Double(distance, template=template, output_field=FloatField())


def max_distance(min_similarity: float, metric: str) -> float | None:
    """The distance bound equivalent to ``similarity >= min_similarity`` (None: no bound)."""
    if metric == "cosine":
        return 1.0 - min_similarity
    if metric == "inner_product":
        return -min_similarity
    if min_similarity <= 0:  # l2, l1: similarity = 1 / (1 + d) is always > 0
        return None
    return 1.0 / min_similarity - 1.0


class TextHash(Func):
    """SQL sha256 hex of a text: equal to :func:`semsim_pg.encoder.text_hash` of the same text."""

    template = "encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')"
    output_field = models.CharField()


def companion_model(model: type[models.Model]) -> type[models.Model]:
    """The companion of a semantic model, through its public relation ``semsim_embeddings``."""
    try:
        return model._meta.get_field("semsim_embeddings").related_model  # type: ignore[no-any-return]
    except Exception:
        raise TypeError(f"{model._meta.label} is not a SemanticModel with a companion.") from None


class Distance(Expression):
    """The distance between a semantic model's vector and a query, by the model's metric.

    ``query``: a text (encoded once, when the SQL is built), a vector, or an expression of one.
    ``through``: a lookup path from the queried model to a semantic model (``"article"``,
    ``"order__product"``) when the vectors are another model's. Usable in ``annotate``, ``alias``,
    ``filter`` and ``order_by``; NULL for a row without a vector. It reads the vector of the
    configured encoder model with a correlated subquery (one primary-key lookup per row), so it
    ranks rows without the HNSW index: for the k nearest of many rows use ``semantic_search()``,
    whose ``distance`` / ``similarity`` are these values.
    """

    output_field = FloatField()

    def __init__(self, query: Any, *, through: str = "", metric: str | None = None) -> None:
        super().__init__(output_field=FloatField())
        if metric is not None and metric not in METRICS:
            raise InvalidQuery(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
        if not isinstance(through, str):
            raise InvalidQuery(f"through must be a lookup path such as 'article', got {through!r}.")
        self.query = query
        self.through = through
        self.metric = metric

    def _target(self, model: type[models.Model]) -> type[models.Model]:
        for name in filter(None, self.through.split("__")):
            try:
                related = model._meta.get_field(name).related_model
            except Exception:
                related = None
            if related is None:
                raise InvalidQuery(f"{model._meta.label} has no relation {name!r} (through={self.through!r}).")
            model = related
        return model

    def _distance(self, model: type[models.Model]) -> tuple[Any, str]:
        from django_semsim.conf import get_config

        config = get_config()
        target = self._target(model)
        companion = companion_model(target)
        metric = str(self.metric or getattr(target, "semantic_metric", "cosine"))
        vector = self.query
        if not hasattr(vector, "resolve_expression"):
            vector = QueryVector(vector, dimensions=config.dimensions, model=config.model_name)
        source = OuterRef(f"{self.through}__pk" if self.through else "pk")
        rows = companion._base_manager.filter(source_id=source, model_id=config.model_name)
        rows = rows.annotate(_distance=MetricDistance(F("embedding"), vector, metric=metric))
        if getattr(target, "semantic_chunking", None) is not None:
            rows = rows.order_by("_distance")  # a model that splits its texts: its best passage
        else:
            rows = rows.filter(passage=0)  # the whole text (passages left from an earlier split wait for the drain)
        return Subquery(rows.values("_distance")[:1], output_field=FloatField()), metric

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        distance, _ = self._distance(query.model)
        return distance.resolve_expression(query, *args, **kwargs)


class Similarity(Distance):
    """The similarity of a semantic model's vector to a query (higher is closer): the model's
    metric's formula over :class:`Distance` (``1 - d`` for cosine). Same arguments and uses."""

    def resolve_expression(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        distance, metric = self._distance(query.model)
        return similarity_of(distance, metric).resolve_expression(query, *args, **kwargs)
