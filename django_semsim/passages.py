"""Passages of Django models: long texts split into passages, each with its own vector; a search
ranks objects by their best passage and returns each object once (ARCHITECTURE.md decision 10).

A model opts in with ``semantic_chunking = 256`` (tokens of the model, its special tokens
included) and optionally ``semantic_chunk_overlap`` (default: an eighth, at most 32), the core's
``create_collection(chunk=..., chunk_overlap=...)``; the split itself is the core's
:func:`semsim_pg.chunking.split_many`. The companion holds one row per passage
(``passage``, ``passage_start``, ``passage_end``); passage 0 stands for the object in the
stale-row queue (it is the row a drain claims and locks), and all passages of an object are
written together from one text.

What this module holds, so that :mod:`django_semsim.query` and :mod:`django_semsim.sync` need only
a call each:

- the *stored hash*: for a model that splits, the hash of the text *and* of the split setting, so
  a changed ``semantic_chunking`` makes every row stale (re-split by the next drain) exactly as a
  changed text makes its row stale; for a model that does not, the text's hash as before;
- the *write*: one statement that upserts an object's passages (compare-and-set on that hash)
  and deletes its passages beyond the last one written;
- the *search*: :class:`BestDocuments` (the k objects whose best passages are nearest, read from
  the 4k nearest passages and widened in the same statement while fewer than k objects came
  back), and :func:`with_best_passage`, the outer layer's ``distance``/``similarity`` and the
  best passage (``passage``, ``passage_start``, ``passage_end``, ``passage_text``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import F, FloatField, Func, IntegerField, OuterRef, Subquery, TextField, Value
from django.db.models.expressions import Expression
from django.db.models.functions import Coalesce, Length, Substr

from django_semsim.expressions import MetricDistance, TextHash, companion_model, similarity_of
from django_semsim.words import query_words_text
from semsim_pg.chunking import Chunking, Passage, check_chunking, split_many
from semsim_pg.encoder import text_hash
from semsim_pg.errors import ConfigurationError, InvalidInput
from semsim_pg.queries.hybrid import PASSAGES_PER_DOCUMENT
from semsim_pg.sql import vector_literal

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable
    from django.db.models.query import QuerySet

    from semsim_pg.encoder import Encoder

__all__ = [
    "PASSAGE_COLUMNS",
    "BestDocuments",
    "chunking_of",
    "encode_passages",
    "model_max_tokens",
    "passage_text_of",
    "stored_hash",
    "stored_hash_expression",
    "with_best_passage",
    "write_passages_sql",
]

#: the most passages one search reads to find k objects (the core's MAX_PASSAGES)
MAX_PASSAGES = 100_000
#: each wider read takes this many times more passages than the one before
WIDEN = 8
#: the best passage's annotations on a search's rows (besides ``distance`` and ``similarity``)
PASSAGE_COLUMNS = ("passage", "passage_start", "passage_end", "passage_text")
#: what the model reads, for models whose folder cannot be read without downloading them
_KNOWN_MAX_TOKENS = {"all-minilm-l6-v2": 256, "all-minilm-l12-v2": 256, "all-mpnet-base-v2": 384}


# the setting ------------------------------------------------------------------------------------
def chunking_of(model: type[models.Model]) -> Chunking | None:
    """The model's ``semantic_chunking``/``semantic_chunk_overlap``, checked (None: no split)."""
    size = getattr(model, "semantic_chunking", None)
    if size is None:
        return None
    try:
        return check_chunking(size, getattr(model, "semantic_chunk_overlap", None))
    except InvalidInput as exc:
        raise ConfigurationError(f"{model._meta.label}.semantic_chunking: {exc}") from None


def model_max_tokens(model_name: str) -> int | None:
    """How many tokens ``model_name`` reads (its ``max_seq_length``), from its files without loading
    it; None when that cannot be told (then the split checks it when it first runs)."""
    known = _KNOWN_MAX_TOKENS.get(model_name.strip().lower().split("/")[-1])
    if known is not None:
        return known
    from semsim_pg.encoder import resolve_model

    try:
        folder = Path(resolve_model(model_name).location)
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, InvalidInput):
        return None


def _marker(chunking: Chunking) -> str:
    return f" chunk={chunking.size}/{chunking.overlap}"


def stored_hash(model: type[models.Model], text: str) -> str:
    """The hash the companion stores for ``text``: the text's own, or for a model that splits, the
    hash of that and the split setting (a changed setting makes the row stale)."""
    chunking = chunking_of(model)
    digest = text_hash(text)
    return digest if chunking is None else text_hash(digest + _marker(chunking))


def stored_hash_expression(model: type[models.Model], text: Combinable) -> Func:
    """:func:`stored_hash` in SQL, of a text expression."""
    chunking = chunking_of(model)
    if chunking is None:
        return TextHash(text)
    marked = Func(TextHash(text), Value(_marker(chunking)), function="concat", output_field=TextField())
    return TextHash(marked)


# writing -------------------------------------------------------------------------------------------
def encode_passages(
    texts: Sequence[str], encoder: Encoder, chunking: Chunking, batch_size: int
) -> list[list[tuple[Passage, str]]]:
    """Each text's passages with their vectors (pgvector text form), all encoded in one call."""
    check_chunking(chunking.size, chunking.overlap, max_seq_length=encoder.max_seq_length)
    split = split_many(texts, encoder, chunking.size, chunking.overlap)
    flat = [passage.text for passages in split for passage in passages]
    vectors = iter(encoder.encode(flat, batch_size=batch_size, show_progress_bar=False)) if flat else iter(())
    return [[(passage, vector_literal(next(vectors))) for passage in passages] for passages in split]


def write_passages_sql(
    *,
    companion: str,
    source_fk: str,
    model_col: str,
    source: str,
    source_pk: str,
    pk_type: str,
    hash_sql: str | None,
    dimensions: int,
) -> str:
    """One statement that writes objects' passages and removes their passages beyond the last one
    written; parameters: source keys, hashes, vectors, passages, starts, ends, the encoder model's
    name (twice), then the hash's own. With ``hash_sql`` a passage is written only where the
    object still holds the text of its hash (compare-and-set; Python-only text was checked under
    a share lock before). Returns the keys of the objects written (the ORM has no INSERT ... ON
    CONFLICT DO UPDATE ... RETURNING, nor a DELETE in the same statement)."""
    check = f" AND {source_pk} = v.sid AND {hash_sql} = v.h" if hash_sql is not None else ""
    joined = f", {source}" if hash_sql is not None else ""
    return (
        f"WITH v AS (SELECT * FROM unnest(%s::{pk_type}[], %s::text[], %s::text[], %s::int[], %s::int[], "
        "%s::int[]) AS v(sid, h, emb, passage, ps, pe)), "
        f"written AS (INSERT INTO {companion} AS e ({source_fk}, {model_col}, passage, passage_start, passage_end, "
        "text_hash, embedding, created_at, updated_at) "
        f"SELECT v.sid, %s, v.passage, v.ps, v.pe, v.h, v.emb::vector({int(dimensions)}), now(), now() "
        f"FROM v{joined} WHERE TRUE{check} "
        f"ON CONFLICT ({source_fk}, {model_col}, passage) DO UPDATE SET text_hash = EXCLUDED.text_hash, "
        "embedding = EXCLUDED.embedding, passage_start = EXCLUDED.passage_start, "
        "passage_end = EXCLUDED.passage_end, updated_at = now() "
        f"RETURNING e.{source_fk} AS sid, e.passage), "
        "last AS (SELECT sid, max(passage) AS last FROM written GROUP BY sid), "
        # one statement's snapshot: the delete never sees the passages just written
        f"removed AS (DELETE FROM {companion} AS d USING last WHERE d.{source_fk} = last.sid "
        f"AND d.{model_col} = %s AND d.passage > last.last) "
        "SELECT sid FROM last"
    )


# searching -----------------------------------------------------------------------------------------
class BestDocuments(Expression):
    """``(SELECT id ... )``: the keys of the ``k`` objects whose best passages are nearest, best first.

    ``nearest`` yields ``(pk, distance)`` of passages ordered by distance (the HNSW index's
    order). The first read takes :data:`PASSAGES_PER_DOCUMENT` x k passages; when they hold fewer
    than k objects although the index gave all that was asked, a read of :data:`WIDEN` times
    more is used instead, and so on up to :data:`MAX_PASSAGES`. Each read is a ``MATERIALIZED``
    CTE behind a one-time filter, so PostgreSQL runs a wider read only when the narrower one fell
    short: one statement, usually one index scan. The reads use the connection's ``ef_search``
    (as an unsplit model's search does): pgvector's iterative index scans let a read of more
    passages than ``ef_search`` still return all it asks for. ``with_distance``: ``(id, distance)`` rows
    (the dense side of a hybrid search), else the keys alone (``pk__in=``).
    """

    def __init__(self, nearest: QuerySet[Any], k: int | None, *, with_distance: bool = False) -> None:
        super().__init__(output_field=IntegerField())
        # its Query, not the QuerySet: Django pickles a QuerySet by running it (a search is pickled
        # by Django's cache), and this is part of a statement, never rows of its own
        self.nearest = nearest.query
        self._constructor_args = ((self.nearest, k), {"with_distance": with_distance})  # its identity's too
        self.k = k
        self.with_distance = with_distance

    def _levels(self) -> list[int | None]:
        if self.k is None:
            return [None]
        levels: list[int | None] = []
        n = PASSAGES_PER_DOCUMENT * self.k
        while n < MAX_PASSAGES:
            levels.append(n)
            n *= WIDEN
        return [*levels, MAX_PASSAGES]

    def sql(self, connection: Any) -> tuple[str, list[Any]]:
        ctes: list[str] = []
        branches: list[str] = []
        params: list[Any] = []
        levels = self._levels()
        for i, n in enumerate(levels, 1):
            rows = self.nearest.chain()
            rows.set_limits(high=n)
            sql, level_params = rows.get_compiler(connection=connection).as_sql()
            ctes.append(f"_l{i}(id, d) AS MATERIALIZED ({sql})")
            params.extend(level_params)
            if i < len(levels):  # wider: all that was asked came back, yet fewer than k objects
                ctes.append(
                    f"_w{i}(wider) AS (SELECT count(*) >= {int(n or 0)} AND count(DISTINCT id) < {self.k} FROM _l{i})"
                )
            earlier = [f"(SELECT wider FROM _w{j})" for j in range(1, i)]
            here = [] if i == len(levels) else [f"NOT (SELECT wider FROM _w{i})"]
            condition = " AND ".join([*earlier, *here]) or "TRUE"
            branches.append(f"SELECT id, d FROM _l{i} WHERE {condition}")
        columns = "b.id, b.d" if self.with_distance else "b.id"
        limit = "" if self.k is None else f" LIMIT {int(self.k)}"
        sql = (
            f"(WITH {', '.join(ctes)} SELECT {columns} FROM (SELECT DISTINCT ON (p.id) p.id, p.d FROM "
            f"({' UNION ALL '.join(branches)}) AS p ORDER BY p.id, p.d) AS b ORDER BY b.d, b.id{limit})"
        )
        return sql, params

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return self.sql(connection)


class _HoldsWords(Func):
    """True for a passage holding a query word, in an object the words found (its ``lexical_rank``
    is not NULL): the passage's lexemes overlap the query's (``&&`` of the two lexeme arrays)."""

    output_field = models.BooleanField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        (rank, rank_params), (text, text_params), (config, config_params), (query, query_params) = (
            compiler.compile(expression) for expression in self.get_source_expressions()
        )
        words = "tsvector_to_array(to_tsvector({}::regconfig, {}))"
        # the query's words as the row's lexical side looked them up: in both spellings (words.py)
        query_params = [query_words_text(str(value), connection) for value in query_params]
        params = [*rank_params, *config_params, *text_params, *config_params, *query_params]
        return f"({rank} IS NOT NULL AND {words.format(config, text)} && {words.format(config, query)})", params


def with_best_passage(
    outer: QuerySet[Any], vector: Any, metric: str, *, words: tuple[str, str] | None = None
) -> QuerySet[Any]:
    """The outer layer of a search of a model that splits: ``distance`` and ``similarity`` of each
    row's best passage, and the passage it shows: ``passage`` (its number), ``passage_start``,
    ``passage_end`` (character offsets in the text) and ``passage_text`` (None for a text only
    known in Python: see :func:`passage_text_of`). Each is a correlated subquery over the row's
    own passages (a handful of rows by the companion's unique index), None without a vector.

    ``words`` (a hybrid search: its text search configuration and query text): a row the words
    found (``lexical_rank``) shows the nearest of its passages holding a query word, as the
    core's hybrid search does, so that what is shown (and what a reranker reads) holds what found
    it; ``distance`` stays the row's nearest passage's either way."""
    from django_semsim.conf import get_config
    from django_semsim.query import SEARCH_MARK

    model = outer.model
    outer = outer.alias(**{SEARCH_MARK: Value(True)})
    rows = companion_model(model)._base_manager.filter(
        source=OuterRef("pk"), model_id=get_config().model_name, embedding__isnull=False
    )
    nearest = rows.annotate(_d=MetricDistance(F("embedding"), vector, metric=metric)).order_by("_d", "passage")
    text = model.semantic_text_expression()
    shown = nearest
    if words is not None and text is not None:
        outer = outer.alias(_semsim_text=text)
        whole = OuterRef("_semsim_text")
        # substr counts characters from 1, as Python's offsets count them from 0
        stop = Coalesce(F("passage_end"), Length(whole))
        passage = Substr(whole, F("passage_start") + 1, stop - F("passage_start"), output_field=TextField())
        config, query = words
        holds = _HoldsWords(OuterRef("lexical_rank"), passage, Value(config), Value(query))
        shown = nearest.annotate(_w=holds).order_by(F("_w").desc(), "_d", "passage")
    end: Any = Subquery(shown.values("passage_end")[:1], output_field=IntegerField())
    outer = outer.annotate(
        distance=Subquery(nearest.values("_d")[:1], output_field=FloatField()),
        similarity=similarity_of(F("distance"), metric),
        passage=Subquery(shown.values("passage")[:1], output_field=IntegerField()),
        passage_start=Subquery(shown.values("passage_start")[:1], output_field=IntegerField()),
        passage_end=end if text is None else Coalesce(end, Length(text)),
    )
    if text is None:
        return outer.annotate(passage_text=Value(None, output_field=TextField()))
    # substr counts characters from 1, as Python's offsets count them from 0
    length = F("passage_end") - F("passage_start")
    return outer.annotate(passage_text=Substr(text, F("passage_start") + 1, length, output_field=TextField()))


def passage_text_of(item: Any) -> str:
    """The text a search hit's vector was made from: its best passage (what a reranker reads), else
    its whole text."""
    text = getattr(item, "passage_text", None)
    if isinstance(text, str):
        return text
    whole = str(item.semantic_text())
    start = getattr(item, "passage_start", None)
    if start is None:
        return whole
    return whole[start : getattr(item, "passage_end", None)]
