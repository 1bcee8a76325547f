"""The SQL of ``hybrid_search()``: BM25 over PostgreSQL full text search, fused with the dense
top N by reciprocal rank, joined to the searched rows as one derived table.

The lexical side follows the core's :mod:`semsim_pg.queries.hybrid` (BM25 with real term
frequencies and the rare-words cut-off, the same constants and the same term-frequency formula),
written over a Django queryset instead of the core's documents table: the tsvector is the
model's :meth:`~django_semsim.models.SemanticModel.semantic_search_vector`, computed from the
source columns (so a GIN index on that expression answers the matching, and a changed text is
seen at once), and the queryset's own filters restrict the candidates of both sides.

Why a join: every hit carries five values (fused score, both ranks, both scores) that come from
one evaluation of the fusion. An annotation that is a subquery is evaluated once per place it
appears in the SQL, so five annotations and the ``pk IN`` filter would run both searches six
times. The fused hits are instead one derived table, ``INNER JOIN (...) ON hits.id = pk``,
added through ``Query.join`` like any join Django makes; its columns are ordinary ``Col``
expressions, so ``order_by``, ``filter``, ``values`` and relabelling (the queryset as a
subquery) work on them as on model fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from django.db.models import FloatField, IntegerField
from django.db.models.expressions import Col, Expression
from django.db.models.sql import Query
from django.db.models.sql.constants import INNER
from sqlalchemy.dialects import postgresql

from django_semsim.passages import BestDocuments
from django_semsim.words import query_words_text
from semsim_pg.queries.hybrid import AVGDL_SAMPLE, BM25_B, BM25_K1, term_frequency

__all__ = ["HIT_COLUMNS", "HitValue", "HybridSource"]

#: the derived table's columns besides ``id``, with their Django types (names as the core's SearchHit)
HIT_COLUMNS: dict[str, type[FloatField] | type[IntegerField]] = {
    "score": FloatField,
    "dense_rank": IntegerField,
    "lexical_rank": IntegerField,
    "lexical_score": FloatField,
}
_TABLE = "_semsim_hits"


def _term_frequency_sql(tsv: str, word: str) -> str:
    """The core's term-frequency formula (no unnest of the tsvector), as SQL over two column names."""
    expression = term_frequency(sa.literal_column(tsv), sa.literal_column(word))
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return str(expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


_TF = _term_frequency_sql("{v}", "t.query")


def _bm25(v: str) -> str:
    """BM25 of the tsvector ``v`` for the query terms (0 when it holds none of them)."""
    tf = _TF.replace("{v}", v)
    per_term = f"t.idf * {tf} * {BM25_K1 + 1!r} / ({tf} + {BM25_K1!r} * (1 - {BM25_B!r} + {BM25_B!r} * length({v}) / st.avgdl))"
    return f"(SELECT coalesce(sum({per_term}), 0.0) FROM terms t CROSS JOIN stats st WHERE {v} @@ t.query)"


@dataclass(frozen=True, eq=False)
class HybridSource:
    """What one hybrid search joins: the queries of both sides and the fusion's numbers.

    ``dense``: the Query of ``values_list(pk, distance)`` of the k-nearest side, ordered and limited
    (of a model that splits its texts, :class:`~django_semsim.passages.BestDocuments` of its
    passages); ``words``: of ``values_list(pk, tsvector)`` of the candidate rows (the caller's
    filters); ``every``: the same over the whole table (term statistics, as the core's per
    collection). Queries, not QuerySets: Django pickles a QuerySet by running it.
    """

    dense: Query | BestDocuments
    words: Query
    every: Query
    text: str
    config: str
    candidates: int
    k: int
    rrf_k: int
    weights: tuple[float, float]
    cutoff: int

    def as_sql(self, connection: Any) -> tuple[str, list[Any]]:
        def compiled(query: Query | BestDocuments) -> tuple[str, tuple[Any, ...]]:
            if isinstance(query, BestDocuments):  # a model that splits: objects by their best passage
                sql, params = query.sql(connection)
                return sql[1:-1], tuple(params)
            sql, params = query.get_compiler(connection=connection).as_sql()
            return sql, tuple(params)

        dense_sql, dense_params = compiled(self.dense)
        words_sql, words_params = compiled(self.words)
        every_sql, every_params = compiled(self.every)
        every = f"({every_sql}) AS a(id, v)"
        cutoff = int(self.cutoff)
        dense_weight, lexical_weight = (float(w) for w in self.weights)
        # candidates: `v || ''` is a plain copy of a stored tsvector, made once per candidate (BM25
        # reads it once per query word, and a long text's is kept compressed), as in the core.
        sql = f"""WITH raw_terms AS (
  SELECT w.lexeme, array_to_tsvector(ARRAY[w.lexeme])::text::tsquery AS query
  FROM unnest(strip(to_tsvector(%s::regconfig, %s))) AS w
), counted AS MATERIALIZED (
  SELECT r.lexeme, r.query,
    (SELECT count(*) FROM (SELECT 1 FROM {every} WHERE a.v @@ r.query LIMIT {cutoff}) AS h) AS df
  FROM raw_terms r
), stats AS (
  SELECT (SELECT count(*) FROM {every})::float8 AS n,
    coalesce((SELECT avg(length(s.v)) FROM (SELECT a.v FROM {every} LIMIT {AVGDL_SAMPLE}) AS s), 1.0) AS avgdl
), terms AS MATERIALIZED (
  SELECT c.query, ln(1 + (st.n - c.df + 0.5) / (c.df + 0.5)) AS idf,
    coalesce(sum(c.df) OVER (ORDER BY c.df, c.lexeme ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
      < {cutoff} AS brings
  FROM counted c CROSS JOIN stats st WHERE c.df > 0
), candidates AS MATERIALIZED (
  SELECT f.id, f.v || ''::tsvector AS v FROM ({words_sql}) AS f(id, v)
  WHERE f.v @@ (SELECT string_agg(t.query::text, ' | ')::tsquery FROM terms t WHERE t.brings)
  LIMIT {2 * cutoff}
), lexical AS (
  SELECT s.id, s.score::float8 AS score, row_number() OVER (ORDER BY s.score DESC, s.id) AS rank
  FROM (SELECT c.id, {_bm25("c.v")} AS score FROM candidates c) AS s
  ORDER BY s.score DESC, s.id LIMIT {int(self.candidates)}
), dense_hits(id, distance) AS MATERIALIZED ({dense_sql}
), dense AS (
  SELECT h.id, h.distance, row_number() OVER (ORDER BY h.distance, h.id) AS rank FROM dense_hits h
), fused AS (
  SELECT coalesce(d.id, l.id) AS id,
    coalesce({dense_weight!r}::float8 / ({int(self.rrf_k)} + d.rank), 0.0)
      + coalesce({lexical_weight!r}::float8 / ({int(self.rrf_k)} + l.rank), 0.0) AS score,
    d.rank AS dense_rank, l.rank AS lexical_rank, l.score AS lexical_score
  FROM dense d FULL JOIN lexical l ON d.id = l.id
  ORDER BY score DESC, id LIMIT {int(self.k)}
)
SELECT fused.id, fused.score, fused.dense_rank, fused.lexical_rank,
  coalesce(fused.lexical_score, {_bm25("x.v")})::float8 AS lexical_score
FROM fused LEFT JOIN LATERAL (SELECT a.v FROM {every} WHERE a.id = fused.id OFFSET 0) AS x ON fused.lexical_score IS NULL"""
        params = [
            self.config,
            query_words_text(self.text, connection),
            *every_params,
            *every_params,
            *every_params,
            *words_params,
            *dense_params,
        ]
        return sql, [*params, *every_params]


class _HitsJoin:
    """``INNER JOIN (fused hits) alias ON alias.id = parent.pk``: a Join-compatible ``alias_map``
    entry (table_name, table_alias, join_type, parent_alias, as_sql, relabeled_clone)."""

    filtered_relation = None
    nullable = False

    def __init__(self, source: HybridSource, parent_alias: str, pk_column: str, table_alias: str | None = None) -> None:
        self.source = source
        self.table_name = _TABLE
        self.parent_alias = parent_alias
        self.pk_column = pk_column
        self.table_alias = table_alias
        self.join_type = INNER

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        sql, params = self.source.as_sql(connection)
        qn = compiler.quote_name_unless_alias
        parent = f"{qn(self.parent_alias)}.{connection.ops.quote_name(self.pk_column)}"
        return f"INNER JOIN ({sql}) {qn(self.table_alias)} ON ({parent} = {qn(self.table_alias)}.id)", params

    def relabeled_clone(self, change_map: dict[str, str]) -> _HitsJoin:
        return _HitsJoin(
            self.source,
            change_map.get(self.parent_alias, self.parent_alias),
            self.pk_column,
            change_map.get(self.table_alias, self.table_alias) if self.table_alias else None,
        )

    @property
    def identity(self) -> tuple[Any, ...]:
        return (type(self), id(self.source), self.parent_alias)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HitsJoin) and self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def demote(self) -> _HitsJoin:
        return self

    def promote(self) -> _HitsJoin:
        # never a LEFT JOIN (an OR filter on a hit column would otherwise let every row in):
        # the join is what restricts the queryset to the hits
        return self


class _HitField:
    """A column of the fused hits as a field of the searched model (a Col's identity is (model,
    name): ``score`` and ``lexical_score`` stay apart). Pickled as how it was made: Django pickles a
    field of a model as a look-up of that model's field by name, which has no such field."""

    name: str
    model: type[Any]

    def __reduce__(self) -> tuple[Any, ...]:
        return _hit_field, (self.name, self.model)


class _HitFloat(_HitField, FloatField):
    pass


class _HitInteger(_HitField, IntegerField):
    pass


def _hit_field(column: str, model: type[Any]) -> FloatField | IntegerField:
    field: FloatField | IntegerField = _HitFloat() if HIT_COLUMNS[column] is FloatField else _HitInteger()
    field.set_attributes_from_name(column)
    field.model = model
    return field


class HitValue(Expression):
    """One column of the fused hits (``score``, ``dense_rank``, ...); resolving it joins them."""

    def __init__(self, source: HybridSource, column: str) -> None:
        output = HIT_COLUMNS[column]()
        super().__init__(output_field=output)
        self.source = source
        self.column = column

    def resolve_expression(
        self,
        query: Any = None,
        allow_joins: bool = True,
        reuse: Any = None,
        summarize: bool = False,
        for_save: bool = False,
    ) -> Col:
        parent = query.get_initial_alias()
        alias = query.join(_HitsJoin(self.source, parent, query.model._meta.pk.column))
        return Col(alias, _hit_field(self.column, query.model))

    def as_sql(self, compiler: Any, connection: Any) -> Any:  # pragma: no cover - resolved into a Col first
        raise TypeError("HitValue must be resolved against the query of a hybrid search.")
