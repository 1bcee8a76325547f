"""Search: checks a ready query vector and the search arguments, runs the statement, reads hits.

Nothing here encodes text: the facade turns a text into a vector first, so a search with a
vector (or :meth:`DocumentStore.similar` with a stored one) never needs the model.

One round trip per search in the common case. On a connection in autocommit
(:func:`semsim_pg.db.read_connection`) the statement runs alone: no BEGIN or COMMIT, no
collection lookup (the store remembers collections; the statement checks the one it was built
from, see semsim_pg.store.catalog), and no statement for pgvector's settings: they are set for
the session, once per pooled connection, and again only when a search wants other values (each
connection remembers what it holds in its ``info``). On a connection inside a transaction (and
for ``force_index``) they are set for that transaction only, as before.

The statements themselves are compiled once and run on the driver: :mod:`semsim_pg.store.statements`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from semsim_pg import queries
from semsim_pg.db import vector_connection
from semsim_pg.errors import DimensionMismatch, InvalidQuery, ModelMismatch
from semsim_pg.settings import Settings
from semsim_pg.sql import vector_literal
from semsim_pg.store import statements
from semsim_pg.store.catalog import StaleCollection
from semsim_pg.store.types import Collection, FilterValue, QueryVector, SearchHit
from semsim_pg.validation import check_fusion, check_hybrid, check_json_value, check_k, check_text, check_vectors

__all__ = [
    "DEFAULT_CANDIDATES",
    "MAX_PASSAGES",
    "MODES",
    "SearchArgs",
    "check_current",
    "check_query_vector",
    "check_words",
    "explain",
    "run_search",
    "session_settings",
]


def check_query_vector(coll: Collection, query: Any) -> npt.NDArray[np.float32]:
    """A :class:`QueryVector` or a plain vector, checked against the collection."""
    if isinstance(query, QueryVector):
        if query.model_name != coll.model_name:
            raise ModelMismatch(
                f"The query vector was made by model {query.model_name} but collection {coll.name!r} holds "
                f"vectors of model {coll.model_name}. Encode the query with {coll.model_name}."
            )
        query = query.vector
    try:
        vector = np.asarray(query, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidQuery(f"The query must be a text or a vector of numbers, got {type(query).__name__}.") from None
    if vector.ndim == 0:  # None, a number: nothing like a vector
        raise InvalidQuery(
            f"The query must be a text or a vector (a QueryVector, or a list or array of numbers), got {query!r}."
        )
    if vector.ndim != 1:
        raise InvalidQuery(f"The query vector must be one-dimensional, got shape {vector.shape}.")
    if vector.shape[0] != coll.dimension:
        raise DimensionMismatch(
            f"The query vector has {vector.shape[0]} dimensions but collection {coll.name!r} holds "
            f"{coll.dimension}-dimensional vectors of model {coll.model_name}."
        )
    check_vectors(vector, "query vector", InvalidQuery, metric=coll.metric)
    return vector


#: the ways to search: by meaning, by words, or both fused by reciprocal rank
MODES = ("semantic", "lexical", "hybrid")
#: how many hits each side of a hybrid search brings to the fusion (at least k)
DEFAULT_CANDIDATES = 100
#: documents a word must be found in to count as common (it scores but brings no candidates)
DEFAULT_LEXICAL_CUTOFF = 2000


class SearchArgs:
    """The arguments of one search besides the vector, checked once (also for many vectors)."""

    def __init__(
        self,
        k: int,
        min_similarity: float | None,
        filter: Mapping[str, FilterValue] | None,
        exact: bool = False,
        *,
        force_index: bool = False,
        mode: str = "semantic",
        candidates: int | None = None,
        rrf_k: int = queries.RRF_K,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.k = check_k(k)
        self.min_similarity = None if min_similarity is None else _check_similarity(min_similarity)
        self.filter = _check_filter(filter)
        self.exact = exact
        #: measure the index even where the planner would scan (semsim index check)
        self.force_index = force_index
        if mode not in MODES:
            raise InvalidQuery(f"Unknown search mode {mode!r}: use one of {', '.join(MODES)}.")
        self.mode = mode
        self.candidates = max(self.k, DEFAULT_CANDIDATES) if candidates is None else check_k(candidates, "candidates")
        self.rrf_k, self.weights = check_fusion(rrf_k, weights)
        if mode == "hybrid":
            check_hybrid(self.k, self.candidates, self.weights)
        self.text: str | None = None

    def with_text(self, text: str) -> SearchArgs:
        """These arguments for the query ``text`` (lexical and hybrid search need the words)."""
        args = copy.copy(self)
        args.text = text
        return args

    def key(self) -> tuple[Any, ...]:
        """What the statement is built from (the vector aside): equal keys, equal statements."""
        # A value's type belongs to the key: 1, 1.0 and True are equal in Python, not in JSON. An
        # object or array value (matched by containment, as jsonb's @> does) is keyed by its JSON.
        frozen = tuple(
            (
                key,
                tuple(
                    (type(v).__name__, json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v)
                    for v in values
                ),
            )
            for key, values in self.filter.items()
        )
        return (
            self.k,
            self.min_similarity,
            frozen,
            self.exact,
            self.force_index,
            self.mode,
            self.candidates,
            self.rrf_k,
            self.weights,
            self.text,
        )

    def statement(
        self,
        coll: Collection,
        vector: npt.NDArray[np.float32] | str,
        exclude_id: int | None = None,
        passages: int | None = None,
    ) -> sa.Select[Any]:
        """The statement of this search; ``vector`` is the query or its pgvector text form (bound
        as ``q``); ``passages``: how many passages a semantic search of a split collection reads
        (default: :data:`~semsim_pg.queries.PASSAGES_PER_DOCUMENT` * k)."""
        literal = vector if isinstance(vector, str) else vector_literal(vector)
        chunked = coll.chunk_size is not None
        if self.mode != "semantic":
            if self.text is None:
                raise InvalidQuery(f"{self.mode.capitalize()} search needs the query as text, not a vector.")
            if exclude_id is not None:
                raise InvalidQuery(f"similar() searches by meaning only, not in {self.mode} mode.")
        if self.mode == "lexical":
            return queries.lexical_statement(
                coll,
                self.text or "",
                literal,
                self.k,
                filter=self.filter,
                min_similarity=self.min_similarity,
                cutoff=DEFAULT_LEXICAL_CUTOFF,
                chunked=chunked,
            )
        if self.mode == "hybrid":
            return queries.hybrid_statement(
                coll,
                self.text or "",
                literal,
                self.k,
                candidates=self.candidates,
                filter=self.filter,
                min_similarity=self.min_similarity,
                rrf_k=self.rrf_k,
                dense_weight=self.weights[0],
                lexical_weight=self.weights[1],
                cutoff=DEFAULT_LEXICAL_CUTOFF,
                exact=self.exact,
                chunked=chunked,
            )
        return queries.search_statement(
            coll,
            literal,
            self.k,
            filter=self.filter,
            min_similarity=self.min_similarity,
            exact=self.exact,
            exclude_id=exclude_id,
            passages=(passages or queries.PASSAGES_PER_DOCUMENT * self.k) if chunked else None,
        )


def check_words(conn: Connection, coll: Collection, args: SearchArgs) -> None:
    """Lexical search needs at least one word that is not a stop word of the collection's language
    (asked only when it found nothing: a hit proves a word)."""
    if args.mode != "lexical" or args.text is None:
        return
    if conn.execute(queries.query_lexemes(coll.id, args.text)).first() is None:
        raise InvalidQuery(
            f"The query {args.text!r} holds no searchable word for lexical search in {coll.text_search_config!r} "
            "(empty, or only stop words): add a word, or search by meaning (mode='semantic' or 'hybrid'; "
            "`--mode semantic` or `--hybrid` on the command line)."
        )


def run_search(
    conn: Connection,
    settings: Settings,
    coll: Collection,
    vector: npt.NDArray[np.float32],
    args: SearchArgs,
    ef_search: int | None,
    *,
    exclude_id: int | None = None,
) -> list[SearchHit]:
    """One search: one statement on a connection in autocommit, else in a transaction of its own
    (the settings end with it). :class:`StaleCollection` when ``coll`` is not the collection's
    current row: look it up again and search again."""
    ef = _check_ef(_ef_search(settings, coll, args, ef_search))
    # The vector travels in pgvector's binary form (psycopg's dumper, registered once per
    # connection): formatting 384 floats as text cost more client time than the rest of the search.
    query = np.asarray(vector, dtype=np.float32)
    with nullcontext() if _in_session(conn, args) else conn.begin():
        vector_connection(conn)
        _apply_settings(conn, args, ef, settings.iterative_scan)
        rows = _rows(conn, coll, query, args, exclude_id, None if ef_search is not None else settings, ef)
    if rows and not rows[0][-1]:
        raise StaleCollection(coll)
    # Rows come in binary: a semantic search's floats and ints are Python's already.
    hit = SearchHit.from_values
    if args.mode == "semantic":
        return [hit(r[0], r[1], r[2], r[3], r[4], r[3], i, None, None, r[5], r[6], r[7]) for i, r in enumerate(rows, 1)]
    return [
        hit(
            r[0],
            r[1],
            r[2],
            math.nan if r[3] is None else float(r[3]),
            math.nan if r[4] is None else float(r[4]),
            float(r[5]),
            None if r[6] is None else int(r[6]),
            None if r[7] is None else int(r[7]),
            float(r[8]),
            0 if r[9] is None else int(r[9]),
            0 if r[10] is None else int(r[10]),
            r[11],
        )
        for r in rows
    ]


#: the most passages a semantic search of a split collection reads to find k documents
MAX_PASSAGES = 100_000


def _rows(
    conn: Connection,
    coll: Collection,
    vector: npt.NDArray[np.float32],
    args: SearchArgs,
    exclude_id: int | None,
    grow_ef: Settings | None,
    ef: int,
) -> Sequence[Any]:
    """The search's rows (a split collection's: through :func:`_passage_search`); an empty
    result also checks that ``coll`` is current and, for lexical search, that it had a word."""
    if args.mode == "semantic" and coll.chunk_size is not None:
        rows = _passage_search(conn, coll, vector, args, exclude_id, grow_ef, ef)
    else:
        rows = _execute(conn, coll, vector, args, exclude_id, None)
    if not rows:
        _check_empty(conn, coll, args)
    return rows


def _statement(
    args: SearchArgs, coll: Collection, exclude_id: int | None, passages: int | None, dialect: sa.Dialect
) -> statements.Compiled:
    key = (
        args.key(),
        (coll.id, coll.name, coll.model_name, coll.dimension, coll.metric, coll.text_search_config, coll.chunk_size),
        exclude_id is not None,  # its value is a parameter, set by _execute
        passages,
        dialect.name,
        dialect.driver,
    )
    # Prepared (one plan for every vector) unless the best plan depends on the values: a filter's
    # selectivity, the words of a lexical or hybrid search.
    return statements.compiled(
        key,
        lambda: args.statement(coll, "", exclude_id, passages).add_columns(_current(coll)),
        dialect,
        prepare=args.mode == "semantic" and not args.filter,
    )


def _execute(
    conn: Connection,
    coll: Collection,
    vector: npt.NDArray[np.float32],
    args: SearchArgs,
    exclude_id: int | None,
    passages: int | None,
) -> Sequence[Any]:
    compiled = _statement(args, coll, exclude_id, passages, conn.dialect)
    params = compiled.params.copy()
    params["q"] = vector
    if exclude_id is not None:
        params["exclude_id"] = exclude_id
    return statements.fetch(conn, compiled, params)


def _passage_search(
    conn: Connection,
    coll: Collection,
    vector: npt.NDArray[np.float32],
    args: SearchArgs,
    exclude_id: int | None,
    grow_ef: Settings | None,
    ef: int,
) -> Sequence[Any]:
    """The nearest passages, each document once: 4k passages first, then 4 times more while
    fewer than k documents came back and the index had more passages to give (the passages of
    a few long documents can fill the first read). ``grow_ef``: the settings, when ef_search
    was not given, so that it grows with the passages read."""
    passages = queries.PASSAGES_PER_DOCUMENT * args.k
    while True:
        rows = _execute(conn, coll, vector, args, exclude_id, passages)
        # rows end with (complete, collection_current): see search_statement and _current
        if not rows or rows[0][-2] or not rows[0][-1] or passages >= MAX_PASSAGES:
            return rows
        passages *= 4
        if grow_ef is not None:  # the graph explores at least as many candidates as are read
            wider = max(ef, min(1000, max(grow_ef.ef_search, passages)))
            _apply_settings(conn, args, wider, grow_ef.iterative_scan)


def _ef_search(settings: Settings, coll: Collection, args: SearchArgs, ef_search: int | None) -> int:
    """The hybrid dense side reads ``candidates`` rows: give HNSW at least that many to explore."""
    if ef_search is not None:
        return ef_search
    per_document = 1 if coll.chunk_size is None else queries.PASSAGES_PER_DOCUMENT
    if args.mode == "hybrid":
        return min(1000, max(settings.ef_search, per_document * args.candidates))
    if per_document > 1:  # a split collection reads 4k passages for k documents
        return min(1000, max(settings.ef_search, per_document * args.k))
    return settings.ef_search


def explain(
    conn: Connection,
    settings: Settings,
    coll: Collection,
    vector: npt.NDArray[np.float32],
    args: SearchArgs,
    ef_search: int | None,
    analyze: bool,
) -> str:
    with conn.begin():
        check_words(conn, coll, args)
        ef = _check_ef(_ef_search(settings, coll, args, ef_search))
        conn.execute(queries.search_settings(ef, settings.iterative_scan, force_index=args.force_index))
        lines = conn.execute(queries.Explain(args.statement(coll, vector), analyze=analyze)).scalars().all()
    return "\n".join(lines)


def _check_similarity(value: Any) -> float:
    """``min_similarity`` as a float: a finite number, not a text, a list or a bool (which
    ``float()`` would take or fail on with a message of its own)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidQuery(f"min_similarity must be a number (e.g. 0.5), got {value!r}.")
    if not math.isfinite(float(value)):
        raise InvalidQuery(f"min_similarity must be a finite number (e.g. 0.5), got {value!r}.")
    return float(value)


def _check_ef(ef: Any) -> int:
    """``ef_search`` as a whole number from 1 to 1000 (pgvector's range), as ``k`` is checked:
    2.5 was cut to 2 and "x" raised int()'s ValueError."""
    if isinstance(ef, bool) or not isinstance(ef, int | np.integer) or not 1 <= ef <= 1000:
        raise InvalidQuery(f"ef_search must be a whole number between 1 and 1000, got {ef!r}.")
    return int(ef)


def _current(coll: Collection) -> sa.ColumnElement[bool]:
    return queries.collection_current(
        coll.id, coll.name, coll.model_name, coll.dimension, coll.metric, coll.text_search_config, coll.chunk_size
    )


def check_current(conn: Connection, coll: Collection) -> None:
    """:class:`StaleCollection` unless ``coll`` is the collection's current row (a round trip)."""
    if not conn.execute(sa.select(_current(coll))).scalar():
        raise StaleCollection(coll)


def _check_empty(conn: Connection, coll: Collection, args: SearchArgs) -> None:
    """No hits, so no row said whether ``coll`` is current: ask (a round trip only for an empty
    result), and whether a lexical query had a word to look for."""
    check_current(conn, coll)
    check_words(conn, coll, args)


#: the key of a pooled connection's ``info`` that holds the search settings of its session
_SESSION_SETTINGS = "semsim_search_settings"


def _in_session(conn: Connection, args: SearchArgs) -> bool:
    """Whether this search runs without a transaction (a connection in autocommit), its settings
    held by the session; ``force_index`` is set for a transaction only."""
    return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT" and not args.force_index


def _apply_settings(conn: Connection, args: SearchArgs, ef_search: int, iterative_scan: str) -> None:
    """pgvector's settings for this search: the session's (:func:`session_settings`) or the
    transaction's, as :func:`_in_session` decides."""
    if _in_session(conn, args):
        session_settings(conn, ef_search, iterative_scan)
    else:
        conn.execute(queries.search_settings(ef_search, iterative_scan, force_index=args.force_index))


def session_settings(conn: Connection, ef_search: int, iterative_scan: str) -> None:
    """Set pgvector's settings for the session unless the connection holds them already.

    Only on a connection in autocommit: a session setting made inside a transaction that rolls
    back would revert while ``info`` still claimed it."""
    wanted = (ef_search, iterative_scan)
    if conn.info.get(_SESSION_SETTINGS) != wanted:
        conn.execute(queries.search_settings(ef_search, iterative_scan, local=False))
        conn.info[_SESSION_SETTINGS] = wanted


def _check_filter(filter: Mapping[str, FilterValue] | None) -> dict[str, list[Any]]:
    """Key -> the values any of which a document's metadata must hold, each by containment
    (``metadata @> {key: value}``, which the GIN index on metadata answers).

    A value that is not a list also matches a list holding it: ``{"tags": "x"}`` finds
    ``{"tags": "x"}`` and ``{"tags": ["x", "y"]}`` (containment alone found the first only, and
    the list only through ``{"tags": [["x"]]}``). It comes out as two alternatives, the value and
    ``[value]``: the second needs a list, so a scalar key matches exactly what it matched before.
    ``semsim._filter_condition`` (migration 0014) writes the SQL functions' condition alike."""
    if not filter:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidQuery(f"filter must be a mapping of metadata key to value, got {type(filter).__name__}.")
    checked: dict[str, list[Any]] = {}
    for key, value in filter.items():
        if not isinstance(key, str) or not key:
            raise InvalidQuery(f"Filter keys must be non-empty texts, got {key!r}.")
        check_text(key, "filter key", InvalidQuery)
        alternatives = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not alternatives:
            raise InvalidQuery(f"The filter on {key!r} lists no values.")
        for alternative in alternatives:
            check_json_value(alternative, f"filter on {key!r}", InvalidQuery)
        checked[key] = [
            form
            for alternative in alternatives
            for form in ((alternative,) if isinstance(alternative, list | tuple) else (alternative, [alternative]))
        ]
    return checked
