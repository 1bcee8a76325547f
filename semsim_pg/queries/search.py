"""The search statement: the k nearest vectors of one collection, in one SQL statement.

``ORDER BY distance LIMIT k`` over the indexed expression and predicate lets the collection's
HNSW index answer; filters apply in the same statement, and pgvector's iterative index scans
(set per transaction by :func:`search_settings`) keep a selective filter from returning fewer
than k rows. ``min_similarity`` is applied to the ordered, limited hits, never as the only
condition (that would make PostgreSQL skip the index). Migration 0001's ``semsim._search``
builds the same statement in PL/pgSQL for SQL users; tests/test_queries.py checks both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from semsim_pg.queries.indexes import IndexedCollection, index_predicate, indexed_vectors, inline, query_vector
from semsim_pg.queries.tables import documents, embeddings
from semsim_pg.sql import METRICS

__all__ = ["Explain", "metadata_conditions", "passage_columns", "search_settings", "search_statement"]

d, e = documents.c, embeddings.c

#: metadata key -> the values any of which a document's metadata must hold under it
Filter = Mapping[str, Sequence[Any]]


def search_statement(
    coll: IndexedCollection,
    vector: str,
    k: int,
    *,
    filter: Filter | None = None,
    min_similarity: float | None = None,
    exact: bool = False,
    exclude_id: int | None = None,
    passages: int | None = None,
) -> sa.Select[Any]:
    """(external id, text, metadata, similarity, distance, passage, passage start, passage end) of
    the k nearest documents, best first.

    ``vector`` is pgvector's text form of the query (sent as text and cast: the fast path).
    ``exact`` compares the bare column, which does not match the index expression, so
    PostgreSQL scans and sorts every vector (to measure the index's recall).

    ``passages`` (a collection whose texts are split): read the nearest ``passages`` passages,
    keep each document's best, return the k best documents, and a last column ``complete``:
    False when fewer than k documents came back although the index had more passages to give
    (the caller asks again with more passages). None: one row per document, the k nearest rows
    are the k documents (the statement of an unsplit collection, unchanged).
    """
    metric = METRICS[coll.metric]
    column = e.embedding if exact else indexed_vectors(coll.dimension)
    query = query_vector(vector, coll.dimension)
    conditions: list[sa.ColumnElement[bool]] = [index_predicate(coll.id, coll.model_name)]
    conditions += metadata_conditions(filter)
    if exclude_id is not None:  # a named parameter: one statement (and one prepared plan) for every id
        conditions.append(d.id != sa.bindparam("exclude_id", exclude_id, type_=sa.BigInteger))
    distance = metric.distance(column, query).label("distance")
    passage = (e.passage, e.passage_start, e.passage_end)
    complete = None

    def nearest_rows(name: str, limit: int, *columns: sa.ColumnElement[Any]) -> sa.CTE:
        return (
            sa.select(*columns, distance, *passage)
            .select_from(embeddings.join(documents, d.id == e.document_id))
            .where(*conditions)
            .order_by(sa.literal_column("distance"))
            .limit(inline(int(limit)))
            .cte(name)
            .prefix_with("MATERIALIZED")
        )

    if passages is None:
        hits = nearest_rows("hits", k, d.external_id, d.text, d.metadata)
    else:
        nearest = nearest_rows("passage_hits", passages, e.document_id)
        best = (
            sa.select(nearest)
            .ext(distinct_on(nearest.c.document_id))
            .order_by(nearest.c.document_id, nearest.c.distance, nearest.c.passage)
            .cte("best_passages")
        )
        hits = (
            sa.select(
                d.external_id,
                d.text,
                d.metadata,
                best.c.distance,
                best.c.passage,
                best.c.passage_start,
                best.c.passage_end,
            )
            .join_from(best, documents, d.id == best.c.document_id)
            .order_by(best.c.distance)
            .limit(inline(int(k)))
            .cte("hits")
        )
        read = sa.select(sa.func.count()).select_from(nearest).scalar_subquery()
        found = sa.select(sa.func.count()).select_from(best).scalar_subquery()
        complete = sa.or_(read < passages, found >= k).label("complete")
    similarity = metric.similarity(hits.c.distance)
    statement = sa.select(
        hits.c.external_id,
        hits.c.text,
        hits.c.metadata,
        similarity.label("similarity"),
        hits.c.distance,
        *passage_columns(hits),
    ).order_by(hits.c.distance)
    if complete is not None:
        statement = statement.add_columns(complete)
    if min_similarity is not None:
        statement = statement.where(similarity >= min_similarity)
    return statement


def passage_columns(hits: sa.CTE) -> list[sa.ColumnElement[Any]]:
    """The hit's passage, start and end (a NULL end, the whole text's, read as its length)."""
    end = sa.func.coalesce(hits.c.passage_end, sa.func.char_length(hits.c.text))
    return [hits.c.passage, hits.c.passage_start, end.label("passage_end")]


def metadata_conditions(filter: Filter | None) -> list[sa.ColumnElement[bool]]:
    """Per key, ``metadata @> {key: value}`` for any of its values: the GIN index on metadata serves it."""
    return [
        sa.or_(*(d.metadata.contains({key: value}) for value in alternatives))
        for key, alternatives in (filter or {}).items()
    ]


def search_settings(
    ef_search: int, iterative_scan: str, *, force_index: bool = False, local: bool = True
) -> sa.Select[Any]:
    """pgvector's search settings for the current transaction only (``local``; else for the
    session: a pooled connection keeps them, see semsim_pg.store.search), in one round trip.

    ``force_index`` keeps the planner from scanning and sorting, which it may prefer for a small
    collection: to measure the HNSW index itself (``semsim index check``)."""
    settings = [
        sa.func.set_config("hnsw.ef_search", str(int(ef_search)), local),
        sa.func.set_config("hnsw.iterative_scan", iterative_scan, local),
    ]
    if force_index:
        settings += [
            sa.func.set_config(name, "off", local) for name in ("enable_seqscan", "enable_bitmapscan", "enable_sort")
        ]
    return sa.select(*settings)


class Explain(Executable, ClauseElement):
    """``EXPLAIN (options) <statement>``, with the statement's parameters bound as usual."""

    inherit_cache = False

    def __init__(self, statement: sa.Select[Any], *, analyze: bool) -> None:
        self.statement = statement
        self.analyze = analyze


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    options = "ANALYZE, BUFFERS, " if element.analyze else ""
    return f"EXPLAIN ({options}FORMAT TEXT) " + compiler.process(element.statement, **kw)
