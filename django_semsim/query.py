"""``SemanticQuerySet``: semantic search as one lazy SQL statement that chains like any QuerySet.

``semantic_search(q, k)`` builds two layers of one statement:

- inside, the *k nearest*: the queryset's own rows (its filters), joined to their companion row of
  the configured encoder model, ordered by the distance alone and limited to k, so PostgreSQL
  answers ``ORDER BY embedding <op> q LIMIT k`` from the companion's HNSW index (iterative index
  scans keep a selective filter from starving it);
- outside, the same queryset restricted to those primary keys, with ``distance`` and
  ``similarity`` annotated and ordered best first (any ordering given before the search breaks
  ties). Everything chained afterwards (``order_by``, ``reverse``, ``distinct``, ``values``,
  ``annotate``, ``aggregate``, ``count``, ``in_bulk``, more filters, slices) applies to this outer
  layer, i.e. to the k nearest, as a Django user expects of a result.

A queryset whose filters join a multi-valued relation (a reverse foreign key, a many-to-many), which
returns a row once per related row, is searched as its rows once each: those filters become
``pk IN (...)`` (:func:`_once_each`), so the search still finds the k nearest distinct rows, and
still hold for a lookup across the same relation chained afterwards, as in Django.
Under ``select_for_update()`` a search locks the rows it returns (``of=("self",)`` unless given).

The search parameters (``hnsw.ef_search``, ``hnsw.iterative_scan``) are the connection's, set once
when it opens; a search with other values gets them for its own statement (:mod:`django_semsim.session`).

A text or vector search over a plain queryset (filters on its own columns, an ordering) stays a
*recipe* until something needs its ``Query``: evaluated as it is, copied (``all()``) or sliced
(the limits join its key), its statement comes compiled from :mod:`django_semsim.prepared`
(Django compiles each shape once); chained, inspected (``.query``) or counted (on a copy), it is
built as above first, so everything Django does with a queryset applies unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import numpy as np
from django.core.exceptions import EmptyResultSet, FieldError
from django.db import DatabaseError, models
from django.db.models import Exists, F, FilteredRelation, Q, Subquery, Value
from django.db.models.constants import LOOKUP_SEP
from django.db.models.expressions import Col, Expression
from django.db.models.fields.reverse_related import ForeignObjectRel
from django.db.models.query import ModelIterable, QuerySet
from django.db.models.sql import Query
from django.db.models.sql.where import AND, ExtraWhere, WhereNode
from pgvector.django import VectorField

from django_semsim import prepared
from django_semsim.encoding import resolve_reranker
from django_semsim.expressions import MetricDistance, QueryVector, companion_model, max_distance, similarity_of
from django_semsim.hybrid import HIT_COLUMNS, HitValue, HybridSource
from django_semsim.passages import BestDocuments, chunking_of, passage_text_of, with_best_passage
from django_semsim.session import search_marker, search_parameters
from semsim_pg.errors import ConfigurationError, InvalidQuery
from semsim_pg.queries.hybrid import RRF_K
from semsim_pg.sql import METRICS
from semsim_pg.store.search import DEFAULT_CANDIDATES, DEFAULT_LEXICAL_CUTOFF
from semsim_pg.validation import check_candidates, check_fusion, check_k

__all__ = ["USE_DEFAULT_K", "SemanticManager", "SemanticQuerySet"]

_M = TypeVar("_M", bound=models.Model)

#: FilteredRelation alias of the companion row (the configured encoder model's) used by a search
COMPANION_ALIAS = "_semsim_vector"
#: alias that marks a queryset holding a search (alias() names live in the query's annotations)
SEARCH_MARK = "_semsim_search"
#: documents a word must be found in to count as common when the words are computed per row (the
#: core's cut-off, DEFAULT_LEXICAL_CUTOFF, applies to a stored tsvector: see hybrid_search)
COMPUTED_WORDS_CUTOFF = 500
#: the default of ``k``: SEMSIM["DEFAULT_K"] rows (None spelled out ranks every row)
USE_DEFAULT_K: Any = object()


class _SearchDistance(MetricDistance):
    """The distance a search orders by; its SQL carries the search's pgvector parameters as a comment
    that the connection's execute wrapper reads (:mod:`django_semsim.session`)."""

    def __init__(self, expression: Any, vector: Any, *, metric: str, params: dict[str, str]) -> None:
        super().__init__(expression, vector, metric=metric)
        self.params = params

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = super().as_sql(compiler, connection, **extra)
        return f"{sql} {search_marker(self.params)}", params


@dataclass(frozen=True)
class _Recipe:
    """A text or vector search not built yet: its arguments (checked) and the key of its SQL."""

    vector: QueryVector
    #: semantic_search()'s k, min_similarity, ef_search, iterative_scan and exact, checked
    arguments: dict[str, Any]
    key: Hashable
    #: slices taken of the search, in order (each as QuerySet.__getitem__ gives set_limits)
    limits: tuple[tuple[int | None, int | None], ...] = ()


def _check_k(k: Any) -> int | None:
    from django_semsim.conf import get_config

    if k is USE_DEFAULT_K:
        return get_config().default_k
    return None if k is None else check_k(k)  # None spelled out: rank every row


class SemanticQuerySet(QuerySet[_M], Generic[_M]):
    """A QuerySet with ``semantic_search()`` and ``similar_to()``; both return lazy querysets."""

    #: a search kept as a recipe until its Query is needed (see the module's docstring)
    _semsim_recipe: _Recipe | None = None
    _result_cache: list[Any] | None
    _query: Query

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (query text, k, mode) of a text search, for the query log (django_semsim.insights)
        self._semsim_log: tuple[str, int | None, str] | None = None

    @property
    def query(self) -> Query:
        if self._semsim_recipe is not None:
            self._build_recipe()
        return QuerySet.query.fget(self)

    @query.setter
    def query(self, value: Query) -> None:
        self._semsim_recipe = None
        QuerySet.query.fset(self, value)

    def _clone(self) -> SemanticQuerySet[_M]:
        clone = super()._clone()  # reads self.query: a recipe is built first, the clone gets the Query
        clone._semsim_log = self._semsim_log
        return clone  # type: ignore[no-any-return]

    def all(self) -> SemanticQuerySet[_M]:
        """A copy, which stays a recipe when this is one: generic views and templates call
        ``all()`` on the queryset they are given, and a search rebuilt and compiled by Django for
        it took about twice as long as the search itself."""
        recipe = self._semsim_recipe
        if recipe is None:
            return super().all()  # type: ignore[no-any-return]
        self._semsim_recipe = None  # copied without building the search: its base query is copied
        try:
            clone = self._chain()
        finally:
            self._semsim_recipe = recipe
        clone._semsim_recipe = recipe
        return clone  # type: ignore[no-any-return]

    def __getitem__(self, k: Any) -> Any:
        """A slice of a search stays a recipe, its limits part of its key (a paginator's page, a
        template's ``|slice``); an index runs the sliced search. Anything else as Django does."""
        recipe = self._semsim_recipe
        plain = isinstance(k, int) or (isinstance(k, slice) and k.step is None)
        if recipe is None or self._result_cache is not None or not plain or isinstance(k, bool):
            return super().__getitem__(k)
        start, stop = (k, k + 1) if isinstance(k, int) else (k.start, k.stop)
        if any(v is not None and (not isinstance(v, int) or v < 0) for v in (start, stop)):
            return super().__getitem__(k)  # Django's errors (negative indexing, bad types)
        clone = self.all()
        limits = (*recipe.limits, (start, stop))
        clone._semsim_recipe = replace(recipe, key=(recipe.key, limits), limits=limits)
        if isinstance(k, slice):
            return clone
        clone._fetch_all()
        return clone._result_cache[0]  # type: ignore[index]

    def _fetch_all(self) -> None:
        # A text search is logged when it runs (when SEMSIM["QUERY_LOG"] is on): it is lazy till then.
        started = time.perf_counter() if self._semsim_log is not None and self._result_cache is None else None
        with _config_errors(self.model):
            if self._result_cache is None and self._semsim_recipe is not None and self._iterable_class is ModelIterable:
                self._result_cache = self._run_recipe()  # None: compiled by Django below
            super()._fetch_all()
        if started is not None and self._semsim_log is not None:
            from django_semsim.insights.log import log_search

            log_search(self.model, self._semsim_log, self._result_cache or [], started)

    @property
    def ordered(self) -> bool:
        """A search is ordered (by its distance): known without building it (Paginator asks)."""
        return self._semsim_recipe is not None or bool(QuerySet.ordered.fget(self))

    def count(self) -> int:
        """Counted on a copy when this is a recipe, so that it stays one for what comes next (a
        paginator counts, then slices)."""
        with _config_errors(self.model):
            if self._semsim_recipe is None or self._result_cache is not None:
                return super().count()  # type: ignore[no-any-return]
            copy = self.all()
            copy._build_recipe()
            return copy.count()

    def exists(self) -> bool:
        with _config_errors(self.model):
            return super().exists()  # type: ignore[no-any-return]

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with _config_errors(self.model):
            return super().aggregate(*args, **kwargs)  # type: ignore[no-any-return]

    def select_for_update(
        self, nowait: bool = False, skip_locked: bool = False, of: Sequence[str] = (), no_key: bool = False
    ) -> SemanticQuerySet[_M]:
        """Django's, except that a search without ``of`` locks its own rows (:func:`_lock_own_rows`)."""
        locked = super().select_for_update(nowait=nowait, skip_locked=skip_locked, of=of, no_key=no_key)
        return _lock_own_rows(locked)  # type: ignore[no-any-return]

    def semantic_search(
        self,
        query: str | Sequence[float] | np.ndarray[Any, Any] | Expression,
        *,
        k: int | None = USE_DEFAULT_K,
        min_similarity: float | None = None,
        ef_search: int | None = None,
        iterative_scan: str | None = None,
        exact: bool = False,
    ) -> SemanticQuerySet[_M]:
        """The ``k`` rows nearest ``query`` (a text, a vector or an SQL expression of one), best first.

        Each row gets ``similarity`` and ``distance``. ``k`` defaults to SEMSIM["DEFAULT_K"];
        ``k=None`` ranks every row. ``exact=True`` compares with every vector instead of asking
        the index (to measure the index's recall). Rows without a vector for the configured
        model are never returned.
        """
        from django_semsim.conf import get_config

        config = get_config()
        if hasattr(query, "resolve_expression"):
            vector: Any = query
        else:
            vector = QueryVector(query, dimensions=config.dimensions, model=config.model_name)
        k = _check_k(k)
        arguments: dict[str, Any] = {
            "k": k,
            "min_similarity": min_similarity,
            "ef_search": ef_search,
            "iterative_scan": iterative_scan,
            "exact": exact,
        }
        found = self._recipe(vector, arguments) if isinstance(vector, QueryVector) else None
        if found is None:
            found = self._rows_once()._semantic(vector, **arguments)
        if isinstance(query, str):
            found._semsim_log = (query, k, "semantic")
        return found

    def hybrid_search(
        self,
        query: str,
        *,
        k: int | None = USE_DEFAULT_K,
        candidates: int | None = None,
        rrf_k: int = RRF_K,
        weights: tuple[float, float] = (1.0, 1.0),
        min_similarity: float | None = None,
        ef_search: int | None = None,
        iterative_scan: str | None = None,
        exact: bool = False,
    ) -> SemanticQuerySet[_M]:
        """The ``k`` best rows for ``query`` by words and meaning, best first, in one statement.

        ``k`` defaults to SEMSIM["DEFAULT_K"]; ``k=None`` keeps every fused candidate (at most
        2 x ``candidates``). The dense top ``candidates`` (HNSW; default max(k, 100); one below
        ``k`` is refused with InvalidQuery, as in the core, since it could bring fewer than k hits), searched with
        the connection's ``ef_search`` and iterative scans unless ``ef_search=`` is given, and the lexical top ``candidates``
        (BM25 over PostgreSQL full text search in the model's ``search_config``, rows holding any
        of the query's words) are fused by reciprocal rank: ``weights[0] / (rrf_k + dense_rank) +
        weights[1] / (rrf_k + lexical_rank)``. The queryset's filters apply to both sides. Each
        row gets ``score`` (the fused score, what rows are ordered by), ``dense_rank`` and
        ``lexical_rank`` (None where that side did not bring the row), ``similarity`` /
        ``distance`` (dense; None for a row without a vector yet) and ``lexical_score`` (BM25, 0
        without any of the words). ``min_similarity`` drops hits whose dense similarity is below
        it from the k found. A query of stop words only is answered by meaning alone, as in the
        core. Later ``order_by``, ``filter``, ``values``, slices, ... apply to the k hits.
        """
        from django_semsim.conf import get_config

        rows = self._rows_once()
        if rows is not self:  # a filter's join repeats rows: each searched once
            return rows.hybrid_search(
                query,
                k=k,
                candidates=candidates,
                rrf_k=rrf_k,
                weights=weights,
                min_similarity=min_similarity,
                ef_search=ef_search,
                iterative_scan=iterative_scan,
                exact=exact,
            )

        config = get_config()
        if not isinstance(query, str):
            raise InvalidQuery(
                f"hybrid_search() needs the query as text (its words are searched too); got {type(query).__name__}."
            )
        vector = QueryVector(query, dimensions=config.dimensions, model=config.model_name)
        search_vector = getattr(self.model, "semantic_search_vector", lambda: None)()
        if search_vector is None:
            raise ConfigurationError(
                f"hybrid_search() needs the text of {self.model._meta.label} in SQL, but it is only known in Python "
                "(semantic_text() is overridden): use semantic_fields, or also override semantic_text_expression()."
            )
        k = _check_k(k)
        n = max(k or 0, DEFAULT_CANDIDATES) if candidates is None else check_k(candidates, "candidates")
        check_candidates(k, n)  # as the core: candidates below k could answer short
        rrf_k, fusion_weights = check_fusion(rrf_k, weights)
        self._check_searchable(min_similarity, exact)
        split = chunking_of(self.model) is not None  # objects ranked by their best passage (passages.py)
        dense = self._nearest(vector, exact=exact, params=search_parameters(ef_search, iterative_scan))
        words = _finding(self).annotate(_semsim_tsv=search_vector).values_list("pk", "_semsim_tsv")
        every = self.model._base_manager.using(self.db).annotate(_semsim_tsv=search_vector)
        source = HybridSource(
            dense=BestDocuments(dense.values_list("pk", F("_semsim_distance")), n, with_distance=True)
            if split
            else dense.values_list("pk", F("_semsim_distance"))[:n].query,
            words=words.query,
            every=every.values_list("pk", "_semsim_tsv").query,
            text=query,
            config=self.model.semantic_search_config(),
            candidates=n,
            k=2 * n if k is None else k,  # None: every fused candidate
            rrf_k=rrf_k,
            weights=fusion_weights,
            # computed words cost a to_tsvector per candidate: fewer candidates than from a stored column
            cutoff=DEFAULT_LEXICAL_CUTOFF
            if getattr(self.model, "search_vector_field", None)
            else COMPUTED_WORDS_CUTOFF,
        )
        tie_breakers = _tie_breakers(self.query)
        metric = getattr(self.model, "semantic_metric", "cosine")
        hits = self.annotate(**{name: HitValue(source, name) for name in HIT_COLUMNS})
        if split:  # the passage shown holds the words when they found the row (passages.py)
            outer = with_best_passage(hits, vector, metric, words=(source.config, query))
        else:
            outer = _with_similarity(hits, vector, metric)
        if min_similarity is not None:
            bound = max_distance(float(min_similarity), metric)
            if bound is not None:
                outer = outer.filter(distance__lte=bound)
        result: SemanticQuerySet[_M] = _lock_own_rows(outer.order_by("-score", *tie_breakers, "pk"))
        result._semsim_log = (query, k, "hybrid")
        return result

    def similar_to(
        self,
        obj_or_pk: models.Model | Any,
        *,
        k: int | None = USE_DEFAULT_K,
        min_similarity: float | None = None,
        ef_search: int | None = None,
        iterative_scan: str | None = None,
        exact: bool = False,
    ) -> SemanticQuerySet[_M]:
        """Rows nearest the vector of one object (given or by pk), the object itself excluded.

        The object's vector is read by a scalar subquery of the same statement; an object with
        no vector yet gives an empty result.
        """
        from django_semsim.conf import get_config

        if isinstance(obj_or_pk, models.Model) and not _same_rows(obj_or_pk, self.model):
            # its pk would silently pick the row of this model that happens to share it
            raise InvalidQuery(
                f"similar_to() searches {self.model._meta.object_name} objects: give one of them or its primary "
                f"key, not a {type(obj_or_pk)._meta.object_name} (search through that model's own manager)."
            )
        pk = obj_or_pk.pk if isinstance(obj_or_pk, models.Model) else obj_or_pk
        if pk is None:
            raise InvalidQuery("similar_to() needs a saved object or a primary key; got an object without a pk.")
        config = get_config()
        companion = companion_model(self.model)
        own = companion._base_manager.filter(source_id=pk, model_id=config.model_name, embedding__isnull=False)
        if chunking_of(self.model) is not None:
            own = own.filter(passage=0)  # the object's first passage stands for it
        vector = Subquery(own.values("embedding")[:1], output_field=VectorField(dimensions=config.dimensions))
        rows = self._rows_once()
        # an uncorrelated EXISTS is a one-time filter: no vector, no index scan, no rows
        candidates = rows.exclude(pk=pk).filter(Exists(own))
        return rows._semantic(
            vector,
            k=_check_k(k),
            min_similarity=min_similarity,
            ef_search=ef_search,
            iterative_scan=iterative_scan,
            exact=exact,
            candidates=candidates,
        )

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
        # a model that splits: the cross-encoder reads the best passage, the text its vector came from
        text_of = passage_text_of if chunking_of(self.model) is not None else None
        for item in model.rerank(query, rows, top_k=top_k, candidates=candidates, text_of=text_of):
            instance = item.hit
            instance.rerank_score = item.rerank_score
            instance.rerank_original_rank = item.original_rank
            result.append(instance)
        return result

    # internals ------------------------------------------------------------------------------
    def _rows_once(self) -> SemanticQuerySet[_M]:
        """This queryset, or when a join of its filters repeats rows, the same rows once each (:func:`_once_each`)."""
        once = _once_each(self)
        return self if once is None else once

    def _check_searchable(self, min_similarity: float | None, exact: bool) -> None:
        if min_similarity is not None and (
            isinstance(min_similarity, bool)
            or not isinstance(min_similarity, int | float)
            or not math.isfinite(min_similarity)
        ):
            raise InvalidQuery(f"min_similarity must be a number, got {min_similarity!r}.")
        if not isinstance(exact, bool):
            raise InvalidQuery(f"exact must be True or False, got {exact!r}.")
        # Query.is_sliced: Django has no QuerySet-level name for it
        if self.query.is_sliced:
            raise TypeError("Call the search before slicing the queryset, then slice the result.")
        if SEARCH_MARK in self.query.annotations:
            raise TypeError("A queryset can hold one search: start again from the manager.")

    def _recipe(self, vector: QueryVector, arguments: dict[str, Any]) -> SemanticQuerySet[_M] | None:
        """This search as a recipe (a clone of this queryset that builds it when its Query is
        needed); None when the SQL of this queryset's search has no key (:func:`prepared.base_shape`)."""
        k, min_similarity, exact = arguments["k"], arguments["min_similarity"], arguments["exact"]
        params = search_parameters(arguments["ef_search"], arguments["iterative_scan"])
        self._check_searchable(min_similarity, exact)  # the errors of a search come when it is called
        metric = getattr(self.model, "semantic_metric", "cosine")
        if metric not in METRICS or self._sticky_filter or not _has_companion(self.model):
            return None  # built now, to fail now (or join as Django does for a sticky filter)
        shape = prepared.base_shape(self.query)
        if shape is None:
            return None
        bound = None if min_similarity is None else max_distance(float(min_similarity), metric)
        # a model split into passages is searched by its best passage: another statement
        split = chunking_of(self.model)
        key = (shape, k, metric, tuple(params.items()), exact, bound, vector.model, vector.dimensions, split)
        clone = self._chain()
        clone._semsim_recipe = _Recipe(vector, arguments, key)
        return clone  # type: ignore[no-any-return]

    def _build_recipe(self) -> None:
        """Replace the recipe by the search's Query (the base queryset's, as semantic_search() got it)."""
        recipe, self._semsim_recipe = self._semsim_recipe, None
        if recipe is None:
            return
        self._query = self._semantic(recipe.vector, **recipe.arguments)._query
        for start, stop in recipe.limits:
            self._query.set_limits(start, stop)

    def _run_recipe(self) -> list[_M] | None:
        """The rows of the recipe's search, by its compiled statement (compiled by Django the first
        time its key is seen); None when Django must compile it."""
        recipe = self._semsim_recipe
        if recipe is None:
            return None
        using = self.db
        key = (recipe.key, using)
        compiled = prepared.lookup(key)
        if compiled is None:
            self._build_recipe()
            compiled = prepared.CompiledSearch.compile(self._query, using, recipe.vector.vector_literal())
            if compiled is None:
                return None
            prepared.remember(key, compiled)
        compiler = compiled.compiler(using, recipe.vector.vector_literal())
        return list(ModelIterable(prepared.WithCompiler(self, compiler)))

    def _nearest(self, vector: Any, *, exact: bool, params: dict[str, str]) -> QuerySet[_M]:
        """This queryset's rows that have a vector, ordered by ``_semsim_distance`` alone (what the
        HNSW index answers; ``exact``: an order the index cannot serve, so every vector is compared)."""
        metric = getattr(self.model, "semantic_metric", "cosine")
        inner = _finding(self).alias(**_companion(self.model))
        # a non-null filter on the joined row makes the join INNER: rows without a vector drop out
        inner = inner.filter(**{f"{COMPANION_ALIAS}__embedding__isnull": False})
        distance: Any = _SearchDistance(F(f"{COMPANION_ALIAS}__embedding"), vector, metric=metric, params=params)
        if exact:
            distance = distance + Value(0.0)
        return inner.alias(_semsim_distance=distance).order_by("_semsim_distance")

    def _semantic(
        self,
        vector: Any,
        *,
        k: int | None,
        min_similarity: float | None,
        ef_search: int | None,
        iterative_scan: str | None,
        exact: bool,
        candidates: QuerySet[_M] | None = None,
    ) -> SemanticQuerySet[_M]:
        split = chunking_of(self.model) is not None  # objects ranked by their best passage (passages.py)
        params = search_parameters(ef_search, iterative_scan)
        self._check_searchable(min_similarity, exact)
        tie_breakers = _tie_breakers(self.query)
        metric = getattr(self.model, "semantic_metric", "cosine")

        # inside: the k nearest primary keys, ordered by the distance alone (what the index answers)
        inner = (candidates if candidates is not None else self)._nearest(vector, exact=exact, params=params)
        if min_similarity is not None:
            bound = max_distance(float(min_similarity), metric)
            if bound is not None:
                # applied next to ORDER BY ... LIMIT, never alone, so the index still serves the order
                inner = inner.filter(_semsim_distance__lte=bound)
        nearest: Any = inner.values("pk")
        if split:
            nearest = BestDocuments(inner.values_list("pk", F("_semsim_distance")), k)
        elif k is not None:
            nearest = nearest[:k]

        # outside: the caller's queryset (select_related, only(), annotations kept) on those keys
        outer = (with_best_passage if split else _with_similarity)(self.filter(pk__in=nearest), vector, metric)
        result: SemanticQuerySet[_M] = _lock_own_rows(outer.order_by("distance", *tie_breakers, "pk"))
        return result


def _once_each(queryset: SemanticQuerySet[_M]) -> SemanticQuerySet[_M] | None:
    """``queryset`` with each of its rows once, when a join of its filters can repeat a row (a filter
    across a reverse foreign key or a many-to-many relation joins one row per related row); None
    when none can. The search chooses its rows by ``pk IN (SELECT pk ... its filters)``, where a
    repeated key counts once; the filters and their joins stay too (:class:`_OnceQuery`), read
    only when a lookup chained later reuses those joins (as Django's own chain would), so the
    condition of a filter (a permission) always holds for the related rows shown."""
    query = queryset.query
    if isinstance(query, _OnceQuery):
        return None  # once each already
    repeating = {alias for alias in query.alias_map if _repeats_rows(query, alias)}
    if query.extra_tables or _has_extra_where(query.where) or (query.extra and repeating):
        # inside the search the model's table has another alias: raw SQL naming it reads the outer row
        raise InvalidQuery(
            "A search cannot follow .extra(where=/tables=) (or .extra() with a filter across a multi-valued "
            "relation): its raw SQL names tables the search reads under other aliases. Filter with RawSQL on "
            "unqualified columns instead (.filter(RawSQL('price < %s', [20], output_field=BooleanField()))), or call "
            ".extra() after the search."
        )
    if not repeating or query.is_sliced or query.distinct or query.group_by is not None or query.combinator:
        return None  # grouped or distinct rows come once each already; a slice is refused by the search
    kept = {query.get_initial_alias()}
    for expression in [*query.annotations.values(), *query.select]:
        kept.update(node.alias for node in expression.flatten() if isinstance(node, Col))
    if any(repeating & _with_parents(query, alias) for alias in kept):
        return None  # an annotation reads the related rows: one row per related row, as Django gives
    once = queryset._chain()
    where = once.query.where
    once.query.where = WhereNode([_UserFilter(where.children, where.connector, where.negated)])
    once.query.__class__ = _OnceQuery
    # the joins only the filters read: those a repeating join leads to, and it
    once.query._semsim_once = {
        alias: count
        for alias, count in query.alias_refcount.items()
        if count and repeating & _with_parents(query, alias)
    }
    return once.filter(pk__in=_finding(queryset).values("pk"))  # type: ignore[no-any-return]


class _UserFilter(WhereNode):
    """The filters of a queryset searched once each (:func:`_once_each`): left out with their joins
    when nothing else reads those joins (the rows are chosen by ``pk IN`` already)."""


class _OnceQuery(Query):
    """The Query of a queryset searched once each (:func:`_once_each`). ``_semsim_once``: the joins of
    its filters that repeat rows, with the references its filters hold on them. Compiled without
    those filters and joins when nothing else references the joins, so each row comes once; with
    them when a lookup chained afterwards reuses them (``values("rel__x")``, ``Count("rel")``,
    ``order_by("rel__x")``), so it reads the related rows the filters allow, as Django would."""

    _semsim_once: dict[str, int]

    def get_compiler(self, using: Any = None, connection: Any = None, elide_empty: bool = True) -> Any:
        return Query.get_compiler(self._once(using, connection), using, connection, elide_empty)

    def change_aliases(self, change_map: Any) -> None:
        super().change_aliases(change_map)
        self._semsim_once = {change_map.get(alias, alias): count for alias, count in self._semsim_once.items()}

    def _once(self, using: Any, connection: Any) -> Query:
        own = self._semsim_once
        if not own or any(self.alias_refcount.get(alias) != count for alias, count in own.items()):
            return self  # read by a lookup chained afterwards (or relabelled away): Django's rows
        marked = [child for child in self.where.children if isinstance(child, _UserFilter)]
        if self.where.connector != AND or self.where.negated or len(marked) != 1:
            return self  # combined with another queryset (|, &): its filters hold in place
        stripped = self.clone()
        stripped.__class__ = Query
        stripped.where = self.where.clone()
        stripped.where.children = [child for child in stripped.where.children if not isinstance(child, _UserFilter)]
        for alias in own:
            stripped.alias_refcount[alias] = 0
        # the joins an ordering or an expression reads are set up as it compiles (and their references
        # dropped after): compiled once without the filters' joins, to see whether it joins them again
        trial = stripped.clone()
        removed = [trial.alias_map.pop(alias) for alias in own]
        joined = set(trial.alias_map)  # a later filter() joins the relation anew: its own join, kept
        try:
            Query.get_compiler(trial, using, connection).as_sql()
        except EmptyResultSet:
            return self
        if any(join == gone for alias, join in trial.alias_map.items() if alias not in joined for gone in removed):
            return self
        return stripped


def _with_parents(query: Query, alias: str) -> set[str]:
    """``alias`` and the joins it hangs from."""
    chain = {alias}
    parent = getattr(query.alias_map.get(alias), "parent_alias", None)
    while parent is not None:
        chain.add(parent)
        parent = getattr(query.alias_map.get(parent), "parent_alias", None)
    return chain


def _has_extra_where(node: Any) -> bool:
    return isinstance(node, ExtraWhere) or any(_has_extra_where(child) for child in getattr(node, "children", ()))


def _tie_breakers(query: Query) -> list[Any]:
    """The ordering given before a search, as its tie-breakers, less the names that cross a
    multi-valued relation (ordering by them would join, and repeat, a row per related row)."""
    kept = []
    for item in query.order_by:
        names = [item.lstrip("-")] if isinstance(item, str) else [f.name for f in _f_nodes(item)]
        if not any(_crosses_many(query, name) for name in names):
            kept.append(item)
    return kept


def _f_nodes(expression: Any) -> list[F]:
    if isinstance(expression, F):
        return [expression]
    found = []
    for source in getattr(expression, "get_source_expressions", list)():
        found.extend(_f_nodes(source))
    return found


def _crosses_many(query: Query, name: str) -> bool:
    if name in query.annotations or name == "?":
        return False
    try:
        path, *_ = query.names_to_path(name.split(LOOKUP_SEP), query.get_meta(), fail_on_missing=False)
    except FieldError:
        return False  # Django's own error comes when the query compiles
    return any(step.m2m for step in path)


def _repeats_rows(query: Query, alias: str) -> bool:
    """Whether the join ``alias`` (used by a clause) can give a row of the query more than once: any
    join but to the one row of a foreign key or a one-to-one relation (and the search's own
    companion row)."""
    join = query.alias_map[alias]
    field = getattr(join, "join_field", None)
    if field is None or not query.alias_refcount.get(alias):
        return False  # the base table, a join no clause uses any more, or a hybrid search's hits
    relation = getattr(join, "filtered_relation", None)
    if relation is not None and relation.alias == COMPANION_ALIAS:
        return False
    return not (field.one_to_one or (field.many_to_one and not isinstance(field, ForeignObjectRel)))


def _has_companion(model: type[models.Model]) -> bool:
    try:
        companion_model(model)
    except TypeError:
        return False
    return True


@contextmanager
def _config_errors(model: type[models.Model]) -> Iterator[None]:
    """An unknown text search configuration, as a ConfigurationError that names the option to fix."""
    try:
        yield
    except DatabaseError as exc:
        if "text search configuration" not in str(exc) or "does not exist" not in str(exc):
            raise
        name = getattr(model, "semantic_search_config", lambda: "?")()
        raise ConfigurationError(
            f"{model._meta.label}'s text search configuration {name!r} does not exist in the database: set "
            "search_config on the model (or SEMSIM['TEXT_SEARCH_CONFIG']) to one of SELECT cfgname FROM pg_ts_config "
            "(e.g. 'english', 'simple'); `manage.py check --database default` lists them (semsim.E010)."
        ) from exc


def _finding(queryset: QuerySet[_M]) -> QuerySet[_M]:
    """``queryset`` as a part of a search that finds rows: unordered, and locking nothing (under
    select_for_update() the search's statement locks the rows it returns, not every row read)."""
    finding = queryset.order_by()
    finding.query.select_for_update = False
    return finding


def _lock_own_rows(queryset: QuerySet[_M]) -> QuerySet[_M]:
    """A search under select_for_update() without ``of`` locks the rows of its own model only
    (``FOR UPDATE OF self``): PostgreSQL refuses to lock every table of the statement, since the
    companion row is on the nullable side of an outer join (a hybrid search's hits are a derived
    table), and the drain must not wait on a search's lock of a vector either."""
    query = queryset.query
    if query.select_for_update and not query.select_for_update_of and SEARCH_MARK in query.annotations:
        query.select_for_update_of = ("self",)
    return queryset


def _with_similarity(outer: QuerySet[_M], vector: Any, metric: str) -> QuerySet[_M]:
    """The outer layer of a search: marked as one, with each row's ``distance`` and ``similarity``
    (None for a row without a vector yet) from its companion row."""
    outer = outer.alias(**_companion(outer.model), **{SEARCH_MARK: Value(True)})
    outer = outer.annotate(distance=MetricDistance(F(f"{COMPANION_ALIAS}__embedding"), vector, metric=metric))
    return outer.annotate(similarity=similarity_of(F("distance"), metric))


def _companion(model: type[models.Model]) -> dict[str, FilteredRelation]:
    """The companion row of the configured encoder model, as a FilteredRelation (one per query layer:
    a FilteredRelation is bound to the query that resolves it)."""
    from django_semsim.conf import get_config

    condition = _companion_condition(model, get_config().model_name)
    return {COMPANION_ALIAS: FilteredRelation("semsim_embeddings", condition=condition)}


def _companion_condition(model: type[models.Model], model_name: str) -> Q:
    """The companion rows a search of ``model`` reads: every passage of a model that splits its texts;
    passage 0 alone otherwise. A model whose ``semantic_chunking`` was just removed keeps its other
    passages until the drain re-encodes it: without this they would return an object once a passage."""
    if chunking_of(model) is not None:
        return Q(semsim_embeddings__model=model_name)
    return Q(semsim_embeddings__model=model_name, semsim_embeddings__passage=0)


class SemanticManager(models.Manager.from_queryset(SemanticQuerySet)):  # type: ignore[misc]
    """The default manager of semantic models (``Model.objects``)."""


def searchable(queryset: QuerySet[_M]) -> SemanticQuerySet[_M]:
    """``queryset`` with the search methods: itself when it has them, else the same rows (its filters
    kept) as a SemanticQuerySet. Searches shown to users start from the rows they may see this way,
    never from a fresh queryset of the whole table."""
    if isinstance(queryset, SemanticQuerySet):
        return queryset
    return SemanticQuerySet(model=queryset.model, query=queryset.query.chain(), using=queryset.db)


def _same_rows(obj: models.Model, model: type[models.Model]) -> bool:
    """Whether ``obj`` is a row of ``model``'s table: an instance of it, of a proxy of it, or of a
    child in multi-table inheritance (whose pk is its parent row's)."""
    return isinstance(obj, model) or obj._meta.concrete_model is model._meta.concrete_model
