"""``SemanticQuerySet``: semantic search that stays one lazy, chainable SQL statement.

``semantic_search()`` and ``similar_to()`` join the companion table through a
``FilteredRelation`` (this encoder model's rows that have a vector), annotate ``distance`` and
``similarity``, order by the distance and, given ``k``, take the first k rows: PostgreSQL answers
``ORDER BY embedding <=> q LIMIT k`` from the companion's HNSW index, with the queryset's own
filters in the same statement. A selective filter still returns k rows because pgvector's
iterative index scan is on: the configured search parameters are set once per connection, and
a search with other values gets them for its own statement only (:mod:`django_semsim.session`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from django.db import models
from django.db.models import Exists, F, FilteredRelation, Q, Subquery
from django.db.models.expressions import Expression
from django.db.models.query import QuerySet
from pgvector.django import VectorField

from django_semsim.encoding import resolve_reranker
from django_semsim.expressions import MetricDistance, QueryVector, max_distance, similarity_of
from django_semsim.session import search_marker, search_parameters
from semsim_pg.errors import InvalidQuery
from semsim_pg.validation import check_k

__all__ = ["SemanticManager", "SemanticQuerySet"]

_M = TypeVar("_M", bound=models.Model)

#: the FilteredRelation alias of the companion row used by a search
COMPANION_ALIAS = "_semsim_vector"


class _SearchDistance(MetricDistance):
    """The distance a search orders by; its SQL carries the search's pgvector parameters as a comment
    that the connection's execute wrapper reads (:mod:`django_semsim.session`)."""

    def __init__(self, expression: Any, vector: Any, *, metric: str, params: dict[str, str]) -> None:
        super().__init__(expression, vector, metric=metric)
        self.params = params

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = super().as_sql(compiler, connection, **extra)
        return f"{sql} {search_marker(self.params)}", params


def companion_model(model: type[models.Model]) -> type[models.Model]:
    """The companion of a semantic model, through its public relation ``semsim_embeddings``."""
    try:
        return model._meta.get_field("semsim_embeddings").related_model  # type: ignore[no-any-return]
    except Exception:
        raise TypeError(f"{model._meta.label} is not a SemanticModel with a companion.") from None


class SemanticQuerySet(QuerySet[_M], Generic[_M]):
    """A QuerySet with ``semantic_search()`` and ``similar_to()``; both return lazy querysets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the k of the last semantic_search, whose LIMIT later filter() calls may lift and restore
        self._semsim_k: int | None = None
        #: True once semantic_search()/similar_to() was applied (a queryset holds one search)
        self._semsim_searched = False
        #: (query text, k) of a text search, for the query log (django_semsim.insights)
        self._semsim_log: tuple[str, int | None] | None = None

    def _clone(self) -> SemanticQuerySet[_M]:
        clone = super()._clone()
        clone._semsim_k = self._semsim_k
        clone._semsim_searched = self._semsim_searched
        clone._semsim_log = self._semsim_log
        return clone  # type: ignore[no-any-return]

    def _filter_or_exclude(self, negate: bool, args: Any, kwargs: Any) -> SemanticQuerySet[_M]:
        k = self._semsim_k
        query = self.query
        if k is not None and query.is_sliced and query.low_mark == 0 and query.high_mark == k:
            # The LIMIT is semantic_search's own k, not a slice the caller took: a filter added
            # later belongs before the LIMIT, exactly as if it had been written before the search.
            clone = self._chain()
            clone.query.clear_limits()
            clone = QuerySet._filter_or_exclude(clone, negate, args, kwargs)
            clone.query.set_limits(0, k)
            return clone  # type: ignore[no-any-return]
        return super()._filter_or_exclude(negate, args, kwargs)  # type: ignore[no-any-return]

    # public API ------------------------------------------------------------------------------
    def semantic_search(
        self,
        query: str | Sequence[float] | np.ndarray[Any, Any] | Expression,
        *,
        k: int | None = None,
        min_similarity: float | None = None,
        ef_search: int | None = None,
        iterative_scan: str | None = None,
    ) -> SemanticQuerySet[_M]:
        """Rows nearest ``query`` (a text, a vector or an SQL expression of one), best first.

        Each row gets ``similarity`` and ``distance``. ``k`` limits the result (slice instead
        for pages); rows without a vector for the configured model are never returned.
        """
        from django_semsim.conf import get_config

        config = get_config()
        vector = (
            query
            if hasattr(query, "resolve_expression")
            else QueryVector(
                query,
                dimensions=config.dimensions,
                model=config.model_name,
            )
        )
        found = self._semantic(
            vector, k=k, min_similarity=min_similarity, ef_search=ef_search, iterative_scan=iterative_scan
        )
        if isinstance(query, str):
            found._semsim_log = (query, k)
        return found

    def _fetch_all(self) -> None:
        # A text search is logged when it runs (when SEMSIM["QUERY_LOG"] is on): it is lazy till then.
        started = time.perf_counter() if self._semsim_log is not None and self._result_cache is None else None
        super()._fetch_all()
        if started is not None and self._semsim_log is not None:
            from django_semsim.insights.log import log_search

            log_search(self.model, self._semsim_log, self._result_cache or [], started)

    def similar_to(
        self,
        obj_or_pk: models.Model | Any,
        *,
        k: int | None = 10,
        min_similarity: float | None = None,
        ef_search: int | None = None,
        iterative_scan: str | None = None,
    ) -> SemanticQuerySet[_M]:
        """Rows nearest the vector of one object (given or by pk), the object itself excluded.

        The object's vector is read by a scalar subquery of the same statement; an object with
        no vector yet gives an empty result.
        """
        from django_semsim.conf import get_config

        pk = obj_or_pk.pk if isinstance(obj_or_pk, models.Model) else obj_or_pk
        if pk is None:
            raise InvalidQuery("similar_to() needs a saved object or a primary key; got an object without a pk.")
        config = get_config()
        companion = companion_model(self.model)
        own = companion._base_manager.filter(source_id=pk, model_id=config.model_name, embedding__isnull=False)
        vector = Subquery(own.values("embedding")[:1], output_field=VectorField(dimensions=config.dimensions))
        # an uncorrelated EXISTS is a one-time filter: no vector, no index scan, no rows
        candidates: SemanticQuerySet[_M] = self.exclude(pk=pk).filter(Exists(own))
        return candidates._semantic(
            vector, k=k, min_similarity=min_similarity, ef_search=ef_search, iterative_scan=iterative_scan
        )

    # internals ------------------------------------------------------------------------------
    def _semantic(
        self,
        vector: Any,
        *,
        k: int | None,
        min_similarity: float | None,
        ef_search: int | None,
        iterative_scan: str | None,
    ) -> SemanticQuerySet[_M]:
        from django_semsim.conf import get_config

        config = get_config()
        if k is not None:
            check_k(k)
        params = search_parameters(ef_search, iterative_scan)
        if min_similarity is not None and not (
            isinstance(min_similarity, int | float) and math.isfinite(min_similarity)
        ):
            raise InvalidQuery(f"min_similarity must be a number, got {min_similarity!r}.")
        if self.query.is_sliced:
            raise TypeError("Call semantic_search()/similar_to() before slicing the queryset.")
        if self._semsim_searched:
            raise TypeError("A queryset can hold one semantic search: start again from the manager.")
        metric = getattr(self.model, "semantic_metric", "cosine")
        condition = Q(semsim_embeddings__model=config.model_name)
        qs = self.alias(**{COMPANION_ALIAS: FilteredRelation("semsim_embeddings", condition=condition)})
        # a non-null filter on the joined row makes the join INNER: rows without a vector drop out
        qs = qs.filter(**{f"{COMPANION_ALIAS}__embedding__isnull": False})
        distance = _SearchDistance(F(f"{COMPANION_ALIAS}__embedding"), vector, metric=metric, params=params)
        qs = qs.annotate(distance=distance)
        qs = qs.annotate(similarity=similarity_of(F("distance"), metric))
        if min_similarity is not None:
            bound = max_distance(float(min_similarity), metric)
            if bound is not None:
                # applied next to ORDER BY ... LIMIT, never alone, so the index still serves the order
                qs = qs.filter(distance__lte=bound)
        qs = qs.order_by("distance")
        qs._semsim_searched = True
        if k is not None:
            qs = qs[:k]
            qs._semsim_k = k
        result: SemanticQuerySet[_M] = qs
        return result

    def rerank(
        self,
        query: str,
        top_k: int | None = 5,
        candidates: int | None = None,
        reranker: Any = None,
    ) -> list[_M]:
        """The rows (the first ``candidates`` of them, all when None) reordered by a cross-encoder.

        Runs the query, so the result is a list, not a QuerySet: the order now comes from Python,
        not SQL. Each instance keeps ``similarity`` (when the queryset was a semantic search) and
        gets ``rerank_score`` and ``rerank_original_rank``. ``reranker``: a Reranker, a model name
        or directory, or None for SEMSIM["CROSS_ENCODER"] (else the core's SEMSIM_CROSS_ENCODER).
        """

        model = resolve_reranker(True if reranker is None else reranker)
        if model is None:
            raise InvalidQuery("rerank() needs a cross-encoder: pass reranker=, or set SEMSIM['CROSS_ENCODER'].")
        if candidates is not None and (
            isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1
        ):
            raise InvalidQuery(f"candidates must be a whole number of at least 1, got {candidates!r}.")
        rows = list(self if candidates is None or self.query.is_sliced else self[:candidates])
        result = []
        for item in model.rerank(query, rows, top_k=top_k, candidates=candidates):
            instance = item.hit
            instance.rerank_score = item.rerank_score
            instance.rerank_original_rank = item.original_rank
            result.append(instance)
        return result


class SemanticManager(models.Manager.from_queryset(SemanticQuerySet)):  # type: ignore[misc]
    """The default manager of semantic models (``Model.objects``)."""
