"""Lexical (BM25 over PostgreSQL full text search) and hybrid (reciprocal rank fusion) search.

Lexical side. A query matches a document on ANY of its words (an AND of every word of a
sentence-long query finds almost nothing) and ranks by BM25, computed in SQL from term
statistics: on SciFact train queries BM25 reached nDCG@10 0.694 against 0.617 for the best
``ts_rank`` normalisation and 0.472 for the best ``ts_rank_cd`` (benchmarks/hybrid_scifact.py),
because ``ts_rank`` weighs every word alike while BM25 weighs rare words up (inverse document
frequency). The statistics come from the GIN index at query time, so writes pay nothing:

* document frequency of each query word: a count through the GIN index, stopped at ``cutoff``
  rows. Candidates are the documents holding the rarest words, taken in order of rarity while
  the documents they bring stay under ``cutoff`` (the rarest word always brings its own, and
  the candidates never exceed ``2 * cutoff``); the other, commoner words still score. The rows
  read stay bounded however large the collection grows and however common the words are, and
  the documents holding the rare words, which BM25 ranks first, are all read.
* collection size: a count of the collection's documents; average length: over a sample of
  :data:`AVGDL_SAMPLE` documents (a document's length is its number of distinct lexemes).

Hybrid. The dense top-N (HNSW) and the lexical top-N (GIN) of one statement are fused by
reciprocal rank, ``sum(weight / (rrf_k + rank))`` over the sides that found a document, with the
same metadata filter on both sides. Every hit carries both ranks (None where a side did not
find it in its top N) and both scores (the dense similarity and the BM25 score, computed for
every fused hit, 0 for a document holding none of the words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR

from semsim_pg.queries.indexes import IndexedCollection, index_predicate, indexed_vectors, inline, query_vector
from semsim_pg.queries.search import metadata_conditions, passage_columns
from semsim_pg.queries.tables import SCHEMA, collections, documents, embeddings
from semsim_pg.sql import METRICS

__all__ = [
    "AVGDL_SAMPLE",
    "BM25_B",
    "BM25_K1",
    "PASSAGES_PER_DOCUMENT",
    "RRF_K",
    "hybrid_statement",
    "lexical_statement",
    "query_lexemes",
    "term_frequency",
    "text_search_configs",
]

d, e = documents.c, embeddings.c

#: BM25's term-frequency saturation and length normalisation (the usual values; measured on SciFact)
BM25_K1 = 1.2
BM25_B = 0.75
#: reciprocal rank fusion's constant (Cormack et al. 2009)
RRF_K = 60
#: zeta(2) = pi^2 / 6, the limit of ts_rank's position weights (see term_frequency)
ZETA_2 = 1.6449340668482264
#: a tsvector keeps at most 256 positions of a lexeme
MAX_POSITIONS = 256
#: documents read to estimate the average document length
AVGDL_SAMPLE = 256
#: a split collection's dense side reads this many passages per document it ranks
PASSAGES_PER_DOCUMENT = 4

Filter = Mapping[str, Sequence[Any]]


def query_lexemes(collection_id: int, text: str) -> sa.Select[Any]:
    """The lexemes lexical search looks for in ``text`` (none: only stop words, or no word at all)."""
    lexemes = sa.func.unnest(sa.func.tsvector_to_array(_words(collection_id, text)))
    return sa.select(lexemes.column_valued("lexeme"))


def _words(collection_id: int, text: Any) -> sa.ColumnElement[Any]:
    """The tsvector of ``text`` in the collection's configuration, as the documents' stored words
    are made (migration 0013's trigger): from the text in Unicode NFC, so that "café" typed on a
    keyboard and "cafe" + combining accent (macOS, some PDFs) are one word. ``semsim.nfc`` is
    PostgreSQL's ``normalize(text, NFC)`` where the database can normalise (else the text as it
    is): the query text is sent as typed, and normalised there alone."""
    return sa.func.to_tsvector(_config(collection_id), getattr(sa.func, SCHEMA).nfc(text))


def _config(collection_id: int) -> Any:
    return sa.select(collections.c.text_search_config).where(collections.c.id == collection_id).scalar_subquery()


def text_search_configs() -> sa.Select[Any]:
    """The text search configurations of the database, by name."""
    pg_ts_config = sa.table("pg_ts_config", sa.column("cfgname"), schema="pg_catalog")
    return sa.select(pg_ts_config.c.cfgname).order_by(pg_ts_config.c.cfgname)


def _terms(coll: IndexedCollection, text: str, cutoff: int) -> tuple[sa.CTE, sa.CTE]:
    """(terms, stats): each query word with its tsquery, capped document frequency and idf;
    the collection's size and average document length."""
    unnested = sa.func.unnest(sa.func.strip(_words(coll.id, sa.bindparam("query_text", text))))
    words = unnested.table_valued("lexeme", "positions", "weights").alias("w")
    # A one-lexeme tsvector's text form is the quoted lexeme, valid tsquery input: no user text
    # is ever parsed as query syntax.
    word_query = sa.cast(sa.cast(sa.func.array_to_tsvector(postgresql.array([words.c.lexeme])), sa.Text), TSQUERY)
    raw = sa.select(words.c.lexeme.label("lexeme"), word_query.label("query")).cte("raw_terms")
    holding = (
        sa.select(sa.literal(1))
        .select_from(documents)
        .where(d.collection_id == inline(int(coll.id)), d.tsv.op("@@")(raw.c.query))
        .limit(cutoff)
        .correlate(raw)
        .subquery()
    )
    df = sa.select(sa.func.count()).select_from(holding).scalar_subquery()
    # MATERIALIZED: each count runs once, however often the terms are read.
    counted = sa.select(raw.c.lexeme, raw.c.query, df.label("df")).cte("counted_terms").prefix_with("MATERIALIZED")
    size = sa.select(sa.func.count()).select_from(documents).where(d.collection_id == coll.id).scalar_subquery()
    sample = sa.select(d.tsv).where(d.collection_id == coll.id).limit(AVGDL_SAMPLE).subquery()
    stats = sa.select(
        sa.cast(size, sa.Float).label("n"),
        sa.func.coalesce(sa.func.avg(sa.func.length(sample.c.tsv)), 1.0).label("avgdl"),
    ).cte("stats")
    idf = sa.func.ln(1 + (stats.c.n - counted.c.df + 0.5) / (counted.c.df + 0.5))
    rarer = sa.func.sum(counted.c.df).over(order_by=(counted.c.df, counted.c.lexeme), rows=(None, -1))
    terms = (
        sa.select(
            counted.c.lexeme,
            counted.c.query,
            counted.c.df,
            idf.label("idf"),
            (sa.func.coalesce(rarer, 0) < cutoff).label("brings"),
        )
        .select_from(counted.join(stats, sa.true()))
        .where(counted.c.df > 0)
        .cte("terms")
        .prefix_with("MATERIALIZED")
    )
    return terms, stats


def term_frequency(tsv: Any, word: Any) -> sa.ColumnElement[float]:
    """How often the one-word tsquery ``word`` occurs in ``tsv``, without unnesting the tsvector.

    For a one-word query, ``ts_rank(tsv, word, 0)`` is ``0.1 * S / zeta(2)`` with ``S = sum(1/j^2,
    j = 1..tf)`` (PostgreSQL's calc_rank_or, unweighted lexemes), and ``zeta(2) - S`` is close to
    ``1 / (tf + 0.5)``, so rounding ``1 / (zeta(2) - S) - 0.5`` gives tf back exactly.
    tests/test_hybrid.py checks it against the positions. Reading the positions instead (an unnest
    of every candidate's tsvector) costs several times more; counting a word once per document
    loses 6 points of nDCG@10 on SciFact (0.635 against 0.694).
    """
    partial_sum = sa.func.ts_rank(tsv, word, 0) * (10 * ZETA_2)
    tail = sa.func.greatest(ZETA_2 - partial_sum, 1e-4)
    return sa.func.least(sa.func.greatest(sa.func.round(1 / tail - 0.5), 1), MAX_POSITIONS)


def _bm25(tsv: Any, terms: sa.CTE, stats: sa.CTE) -> sa.ColumnElement[float]:
    """BM25 of the document ``tsv`` for the query terms."""
    tf = term_frequency(tsv, terms.c.query)
    length = BM25_K1 * (1 - BM25_B + BM25_B * sa.func.length(tsv) / stats.c.avgdl)
    per_term = terms.c.idf * tf * (BM25_K1 + 1) / (tf + length)
    matched = (
        sa.select(sa.func.coalesce(sa.func.sum(per_term), 0.0))
        .select_from(terms.join(stats, sa.true()))
        .where(tsv.op("@@")(terms.c.query))
        .scalar_subquery()
    )
    return sa.cast(matched, sa.Float)


def _lexical_top(
    coll: IndexedCollection, text: str, n: int, filter: Filter | None, cutoff: int
) -> tuple[sa.CTE, sa.CTE, sa.CTE]:
    """(ranked, terms, stats): the lexical top ``n`` (id, score, rank) of the collection."""
    terms, stats = _terms(coll, text, cutoff)
    bring = sa.select(sa.cast(sa.func.string_agg(sa.cast(terms.c.query, sa.Text), " | "), TSQUERY)).where(
        terms.c.brings
    )
    # Each candidate's tsvector is decompressed once, here (`|| ''` makes a plain copy, and the
    # MATERIALIZED CTE keeps it): BM25 reads it once per query word and for its length, and each
    # read of the stored value decompressed it again (a long abstract's tsvector is kept
    # compressed). Six ts_rank calls over 1,000 SciFact abstracts: 6.4 ms, 3.9 ms on copies.
    plain = d.tsv.op("||")(sa.cast(sa.literal(""), TSVECTOR))
    candidates = (
        sa.select(d.id, plain.label("tsv"))
        .where(
            d.collection_id == inline(int(coll.id)),
            d.tsv.op("@@")(bring.scalar_subquery()),
            *metadata_conditions(filter),
        )
        .limit(2 * cutoff)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    score = _bm25(candidates.c.tsv, terms, stats).label("score")
    scored = sa.select(candidates.c.id, score).cte("scored")
    ranked = (
        sa.select(
            scored.c.id,
            scored.c.score,
            sa.func.row_number().over(order_by=(scored.c.score.desc(), scored.c.id)).label("rank"),
        )
        .order_by(scored.c.score.desc(), scored.c.id)
        .limit(n)
        .cte("lexical")
    )
    return ranked, terms, stats


def _dense_top(
    coll: IndexedCollection, query: Any, n: int, filter: Filter | None, exact: bool, chunked: bool
) -> sa.CTE:
    """The dense top ``n`` (id, distance, rank): the collection's HNSW index answers (``exact``: a
    scan of every vector, as in :func:`~semsim_pg.queries.search.search_statement`). ``chunked``:
    the nearest :data:`PASSAGES_PER_DOCUMENT` * ``n`` passages, each document ranked by its best."""
    metric = METRICS[coll.metric]
    distance = metric.distance(e.embedding if exact else indexed_vectors(coll.dimension), query)
    hits = (
        sa.select(e.document_id.label("id"), distance.label("distance"))
        .select_from(embeddings.join(documents, d.id == e.document_id))
        .where(index_predicate(coll.id, coll.model_name), *metadata_conditions(filter))
        .order_by(sa.literal_column("distance"))
        .limit(n * PASSAGES_PER_DOCUMENT if chunked else n)
        .cte("dense_hits")
        .prefix_with("MATERIALIZED")
    )
    if chunked:
        best = sa.func.min(hits.c.distance).label("distance")
        hits = (
            sa.select(hits.c.id, best)
            .group_by(hits.c.id)
            .order_by(sa.literal_column("distance"))
            .limit(n)
            .cte("dense_best")
        )
    return sa.select(
        hits.c.id, hits.c.distance, sa.func.row_number().over(order_by=(hits.c.distance, hits.c.id)).label("rank")
    ).cte("dense")


def _passage_choice(
    coll: IndexedCollection,
    query: Any,
    top: sa.CTE,
    terms: sa.CTE,
    stats: sa.CTE,
    by_words: bool,
) -> sa.CTE:
    """Per hit of ``top`` (a split collection), the passage shown and its document's distance.

    The passage a hit shows is the one a reranker reads, so it must hold what found the document:
    ``by_words`` (lexical search) the passage whose own words score best (BM25 of its text for the
    same terms), the nearest by meaning among equals; otherwise (hybrid) for a document the words
    found, the nearest by meaning of its passages holding any query word, and for one only the
    meaning found, its nearest passage (a words-only choice would throw away the meaning a hybrid
    search asks for; a meaning-only one showed a passage without the words that found the hit).
    The distance is the document's, its nearest passage's, in every mode: ``similarity`` and
    ``min_similarity`` mean what they mean in a semantic search. Only the k hits' passages are
    read, and each passage's text is parsed once (a MATERIALIZED CTE)."""
    metric = METRICS[coll.metric]
    end = sa.func.coalesce(e.passage_end, sa.func.char_length(d.text))
    # substr counts characters from 1, the stored offsets (Python's) from 0
    text = sa.func.substr(d.text, e.passage_start + 1, end - e.passage_start)
    passages = (
        sa.select(
            e.document_id.label("id"),
            e.passage,
            e.passage_start,
            e.passage_end,
            metric.distance(sa.cast(e.embedding, Vector(coll.dimension)), query).label("distance"),
            _words(coll.id, text).label("tsv"),
            top.c.lexical_rank,
        )
        .select_from(top.join(documents, d.id == top.c.id).join(embeddings, e.document_id == top.c.id))
        .where(e.model_name == coll.model_name)
        .cte("hit_passages")
        .prefix_with("MATERIALIZED")
    )
    words = _bm25(passages.c.tsv, terms, stats)
    if by_words:
        first: sa.ColumnElement[Any] = words.desc()
    else:
        first = sa.and_(passages.c.lexical_rank.is_not(None), words > 0).desc()
    return (
        sa.select(
            passages.c.id,
            passages.c.passage,
            passages.c.passage_start,
            passages.c.passage_end,
            sa.func.min(passages.c.distance).over(partition_by=passages.c.id).label("distance"),
        )
        .ext(postgresql.distinct_on(passages.c.id))
        .order_by(passages.c.id, first, passages.c.distance, passages.c.passage)
        .cte("shown_passage")
        # once for all hits: joined as a subquery it was sorted again for each hit
        .prefix_with("MATERIALIZED")
    )


def _hits(
    coll: IndexedCollection,
    query: Any,
    fused: sa.CTE,
    terms: sa.CTE,
    stats: sa.CTE,
    k: int,
    min_similarity: float | None,
    chunked: bool,
    by_words: bool,
) -> sa.Select[Any]:
    """The k best fused candidates with both scores (computed for those a side missed) and the
    passage each shows (``chunked``: see :func:`_passage_choice`; ``by_words``: lexical search)."""
    metric = METRICS[coll.metric]
    if chunked:
        top = (
            sa.select(fused.c.id, fused.c.score, fused.c.dense_rank, fused.c.lexical_rank, fused.c.lexical_score)
            .order_by(fused.c.score.desc(), fused.c.id)
            .limit(k)
            .cte("top_hits")
        )
        shown = _passage_choice(coll, query, top, terms, stats, by_words)
        fused = top
        joined = top.join(documents, d.id == top.c.id).outerjoin(shown, shown.c.id == top.c.id)
        distance: sa.ColumnElement[Any] = shown.c.distance
        passage = [shown.c.passage, shown.c.passage_start, shown.c.passage_end]
    else:
        distance = sa.func.coalesce(
            fused.c.distance, metric.distance(sa.cast(e.embedding, Vector(coll.dimension)), query)
        )
        joined = fused.join(documents, d.id == fused.c.id).outerjoin(
            embeddings, sa.and_(e.document_id == fused.c.id, e.model_name == coll.model_name)
        )
        passage = [e.passage, e.passage_start, e.passage_end]
    lexical_score = sa.func.coalesce(fused.c.lexical_score, _bm25(d.tsv, terms, stats))
    best = (
        sa.select(
            d.external_id,
            d.text,
            d.metadata,
            distance.label("distance"),
            fused.c.score,
            fused.c.dense_rank,
            fused.c.lexical_rank,
            lexical_score.label("lexical_score"),
            *passage,
        )
        .select_from(joined)
        .order_by(fused.c.score.desc(), fused.c.id)
        .limit(k)
        .cte("best")
    )
    similarity = metric.similarity(best.c.distance)
    statement = sa.select(
        best.c.external_id,
        best.c.text,
        best.c.metadata,
        similarity.label("similarity"),
        best.c.distance,
        best.c.score,
        best.c.dense_rank,
        best.c.lexical_rank,
        best.c.lexical_score,
        *passage_columns(best),
    ).order_by(best.c.score.desc())
    if min_similarity is not None:
        statement = statement.where(similarity >= min_similarity)
    return statement


def lexical_statement(
    coll: IndexedCollection,
    text: str,
    vector: str,
    k: int,
    *,
    filter: Filter | None = None,
    min_similarity: float | None = None,
    cutoff: int = 2000,
    chunked: bool = False,
) -> sa.Select[Any]:
    """The k best documents by BM25, with their dense similarity to ``vector`` too.

    Columns: external id, text, metadata, similarity, distance, score (BM25), dense rank (None),
    lexical rank, lexical score, passage, passage start, passage end. ``chunked``: the texts are
    split into passages; the hit's passage and similarity are its passage nearest to ``vector``."""
    query = query_vector(vector, coll.dimension)
    lexical, terms, stats = _lexical_top(coll, text, k, filter, cutoff)
    fused = sa.select(
        lexical.c.id,
        sa.cast(lexical.c.score, sa.Float).label("score"),
        sa.cast(sa.null(), sa.BigInteger).label("dense_rank"),
        sa.cast(sa.null(), sa.Float).label("distance"),
        lexical.c.rank.label("lexical_rank"),
        lexical.c.score.label("lexical_score"),
    ).cte("fused")
    return _hits(coll, query, fused, terms, stats, k, min_similarity, chunked, by_words=True)


def hybrid_statement(
    coll: IndexedCollection,
    text: str,
    vector: str,
    k: int,
    *,
    candidates: int,
    filter: Filter | None = None,
    min_similarity: float | None = None,
    rrf_k: int = RRF_K,
    dense_weight: float = 1.0,
    lexical_weight: float = 1.0,
    cutoff: int = 2000,
    exact: bool = False,
    chunked: bool = False,
) -> sa.Select[Any]:
    """The k best documents by reciprocal rank fusion of the dense and the lexical top
    ``candidates``, in one statement. Columns as :func:`lexical_statement`, score = RRF.
    ``chunked``: the dense side ranks documents by their best passage."""
    query = query_vector(vector, coll.dimension)
    dense = _dense_top(coll, query, candidates, filter, exact, chunked)
    lexical, terms, stats = _lexical_top(coll, text, candidates, filter, cutoff)

    def part(weight: float, rank: Any) -> sa.ColumnElement[float]:
        return sa.func.coalesce(sa.literal(float(weight)) / (sa.literal(int(rrf_k)) + rank), 0.0)

    fused = (
        sa.select(
            sa.func.coalesce(dense.c.id, lexical.c.id).label("id"),
            (part(dense_weight, dense.c.rank) + part(lexical_weight, lexical.c.rank)).label("score"),
            dense.c.rank.label("dense_rank"),
            dense.c.distance,
            lexical.c.rank.label("lexical_rank"),
            lexical.c.score.label("lexical_score"),
        )
        .select_from(dense.join(lexical, dense.c.id == lexical.c.id, full=True))
        .cte("fused")
    )
    return _hits(coll, query, fused, terms, stats, k, min_similarity, chunked, by_words=False)
