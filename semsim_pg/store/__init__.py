"""DocumentStore: collections of texts with their vectors, searched in SQL.

The facade over the store's parts: :mod:`~semsim_pg.store.types` (what goes in and out),
:mod:`~semsim_pg.store.ingest` (batches, staging COPY, hash skip), :mod:`~semsim_pg.store.search`
(one statement, a ready vector; compiled once and run on the driver by
:mod:`~semsim_pg.store.statements`), :mod:`~semsim_pg.store.catalog` (collections looked up, and
remembered for searches), :mod:`~semsim_pg.store.indexes` (HNSW build and drop) and
:mod:`~semsim_pg.store.encoding` (the encode pass reconcile and reembed share). The SQL itself
lives in :mod:`semsim_pg.queries`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.chunking import check_chunking
from semsim_pg.db import connect, ensure_schema, get_engine, normalise_url, read, safe_url
from semsim_pg.encoder import Encoder, get_encoder, resolve_model
from semsim_pg.errors import DatabaseError, DocumentNotFound, InvalidInput, InvalidQuery, ModelLoadError
from semsim_pg.insights.log import flush as flush_query_log
from semsim_pg.insights.log import log_search
from semsim_pg.loading import missing_model_error
from semsim_pg.progress import progress_bar
from semsim_pg.settings import Settings, get_settings
from semsim_pg.sql import METRICS, to_array
from semsim_pg.store import catalog, ingest, search
from semsim_pg.store.check import IndexCheck, check_index
from semsim_pg.store.encoding import encode_stale
from semsim_pg.store.indexes import (
    IndexWarmup,
    build_index,
    build_lock_transaction,
    drop_collection_indexes,
    drop_index,
    index_state,
    rebuild_index,
    warm_index,
)
from semsim_pg.store.types import (
    Collection,
    Document,
    DocumentLike,
    FilterValue,
    Query,
    QueryVector,
    SearchHit,
    UpsertResult,
)
from semsim_pg.validation import MAX_K, check_id, check_k, check_many, check_name, check_text

__all__ = [
    "MAX_K",
    "Collection",
    "Document",
    "DocumentStore",
    "FilterValue",
    "QueryVector",
    "SearchHit",
    "UpsertResult",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: searches of a collection that changed under each (another process busy re-creating it) before giving up
STALE_RETRIES = 3


class DocumentStore:
    """Collections of documents and their embeddings in PostgreSQL.

    ``url`` (or ``SEMSIM_DATABASE_URL``) names the database; without one the embedded server is
    used. ``migrate`` installs or upgrades semsim's tables on first use; it defaults to True for
    the embedded server and False for a database of your own (run ``semsim db upgrade`` there).
    :meth:`close` (or ``with DocumentStore() as store:``) closes its pooled connections.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        encoder: Encoder | None = None,
        migrate: bool | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        if url is not None:
            self.settings = self.settings.replace(database_url=normalise_url(url))
        self._encoder = encoder
        self._migrate = self.settings.embedded if migrate is None else migrate
        self._engine: Engine | None = None
        self._catalog = catalog.Catalog()

    # plumbing -------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = get_engine(self.settings)
            ensure_schema(engine, migrate=self._migrate)
            self._engine = engine
        return self._engine

    def _connect(self) -> Connection:
        return connect(self.engine)

    def close(self) -> None:
        """Close the idle database connections the store's engine pools (and write the queued
        query log, when it is on). For the end of a service: ``with DocumentStore() as store:``,
        or a FastAPI lifespan that calls it on the way out.

        The engine is the process's for this database and pool settings, shared with every
        store that uses the same (:func:`semsim_pg.db.get_engine`): closing one store never
        breaks another. Connections in use at the time (another thread's search, another store's)
        finish their work and are closed when they are returned; the next call of any store,
        this one included, opens new connections. Nothing else is stopped: the embedded server
        serves other processes too (the last process out stops it at exit), and the model stays
        loaded for the process's other stores.
        """
        if self._engine is None:  # never connected: nothing to close (and no server to start)
            return
        if self.settings.query_log:
            flush_query_log()
        self._engine.dispose()
        logger.debug("closed the pooled connections to %s", safe_url(str(self._engine.url)))

    def __enter__(self) -> DocumentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def encoder_for(self, collection: Collection) -> Encoder:
        """The encoder that made (and must query) this collection's vectors."""
        if self._encoder is not None and self._encoder.name == collection.model_name:
            return self._encoder
        try:
            return get_encoder(collection.model_name, device=self.settings.device)
        except ModelLoadError:
            missing = missing_model_error(collection.name, collection.model_name)  # name the collection
            if missing is None:
                raise
            raise missing from None

    def load_encoder(self, collection: str | Collection) -> Encoder:
        """The collection's encoder, loaded now (a fresh process's first use loads the model);
        nothing is read from the database when the collection was read before."""
        return self.encoder_for(self._remembered(collection)).load()

    # collections ----------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        metric: str | None = None,
        m: int | None = None,
        ef_construction: int | None = None,
        text_search_config: str | None = None,
        chunk: int | None = None,
        chunk_overlap: int | None = None,
        exist_ok: bool = True,
    ) -> Collection:
        """Create a collection (and its HNSW index); return the existing one when it matches.

        ``text_search_config`` is the PostgreSQL text search configuration of its lexical search
        (``english`` by default, ``simple`` for no stemming and no stop words, ``italian``, ...).

        ``chunk`` splits each text into passages of at most that many tokens of the model (its
        special tokens included; from 16 to the model's ``max_seq_length``), at sentence starts
        where possible, consecutive passages sharing up to ``chunk_overlap`` tokens (default: an
        eighth, at most 32). Each passage gets its own vector and a search ranks documents by their
        best passage. The setting belongs to the collection: later upserts, ``reconcile`` and
        ``reembed`` split alike. It can be given (or changed) only while the collection holds no
        documents: a collection's vectors all come from one way of splitting.
        """
        name = check_name(name, existing=True)
        existing = self._find_collection(name)
        if existing is None:
            check_name(name)  # a new name holds no control characters; one made before that rule stays usable
        if metric is not None and metric not in METRICS:
            raise InvalidInput(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)}.")
        if chunk_overlap is not None and chunk is None:
            raise InvalidInput("chunk_overlap needs chunk, the passage size in tokens (e.g. chunk=200).")
        # the graph asked for, checked as the settings are, before anything is written or recommended
        graph = self.settings.replace(
            hnsw_m=self.settings.hnsw_m if m is None else m,
            hnsw_ef_construction=self.settings.hnsw_ef_construction if ef_construction is None else ef_construction,
        )

        def reuse(existing: Collection) -> Collection:
            # checked first (against what was asked, not the defaults): a call refused changes nothing
            existing = catalog.check_existing(
                existing, model, metric, text_search_config, exist_ok=exist_ok, m=m, ef_construction=ef_construction
            )
            if chunk is not None:
                wanted = check_chunking(chunk, chunk_overlap, max_seq_length=self.encoder_for(existing).max_seq_length)
                existing = catalog.set_chunking(self.engine, existing, wanted)
            return existing

        if existing is not None:
            return reuse(existing)
        if self._encoder is not None and (model is None or resolve_model(model).name == self._encoder.name):
            encoder = self._encoder
        else:
            encoder = get_encoder(model or self.settings.model, device=self.settings.device)
        new_metric = metric or self.settings.metric
        new_m, new_ef = graph.hnsw_m, graph.hnsw_ef_construction
        config = self._check_text_search_config(text_search_config or self.settings.text_search_config)
        chunking = (
            None if chunk is None else check_chunking(chunk, chunk_overlap, max_seq_length=encoder.max_seq_length)
        )
        statement = queries.insert_collection(
            name,
            encoder.name,
            encoder.dimension,
            new_metric,
            new_m,
            new_ef,
            config,
            None if chunking is None else (chunking.size, chunking.overlap),
        )
        with self._connect() as conn, conn.begin():
            created = conn.execute(statement).scalar()
            if created is not None:  # the row and its index commit together
                new = Collection(created, name, encoder.name, encoder.dimension, new_metric, new_m, new_ef)
                conn.exec_driver_sql(queries.create_index(new, new_m, new_ef))
                conn.exec_driver_sql(queries.create_text_index(created))
                logger.info("created collection %s (model %s, %d dims)", name, encoder.name, encoder.dimension)
        if created is None:
            # Another process created it between the lookup and the insert: what was asked is
            # checked against its row, as if this call had come second (two ingests at once).
            return reuse(self.get_collection(name))
        return self.get_collection(name)

    def _find_collection(self, name: str) -> Collection | None:
        found = read(self.engine, lambda conn: catalog.find_collection(conn, name))
        if found is None:
            self._catalog.forget(name)
            return None
        return self._catalog.remember(found)

    def get_collection(self, name: str | Collection) -> Collection:
        """The collection's current row (read afresh: searches use the one remembered)."""
        if isinstance(name, Collection):
            return name
        if not isinstance(name, str):
            raise InvalidInput(f"collection must be a collection's name (a text) or a Collection, got {name!r}.")
        found = self._find_collection(check_text(name, "collection name"))
        if found is None:
            raise catalog.not_found(name, [c.name for c in self.list_collections()])
        return found

    def _remembered(self, collection: str | Collection) -> Collection:
        """For a search: the collection as last read, which the search statement checks."""
        if isinstance(collection, Collection):
            return collection
        remembered = self._catalog.get(collection) if isinstance(collection, str) else None
        return remembered or self.get_collection(collection)

    def _on_current(self, collection: str | Collection, work: Callable[[Collection], T]) -> T:
        """``work(collection)``, again with the current row while it says the one it had changed."""
        coll = self._remembered(collection)
        for _attempt in range(STALE_RETRIES):
            try:
                return work(coll)
            except catalog.StaleCollection:
                logger.info("collection %s changed since it was read; searching it again", coll.name)
                coll = self.get_collection(coll.name)
        raise DatabaseError(
            f"Collection {coll.name!r} changed under {STALE_RETRIES} searches in a row (dropped and created "
            "again, or re-embedded). Search again when it is stable."
        )

    # Reads of one statement run in autocommit (semsim_pg.db.read): no BEGIN, and no ROLLBACK when
    # the connection goes back to the pool, which would also make psycopg drop the connection's
    # prepared search statements (each search after would prepare its statement again).
    def list_collections(self) -> list[Collection]:
        """Every collection, with its counts, the state of its index and its vectors per backend."""
        return read(
            self.engine,
            lambda conn: [dataclasses.replace(c, index=index_state(conn, c)) for c in catalog.list_collections(conn)],
        )

    def index_state(self, collection: str | Collection) -> str:
        """``valid``, ``loading`` (a bulk load builds it at its end), ``missing`` or ``invalid``."""
        coll = self.get_collection(collection)
        return read(self.engine, lambda conn: index_state(conn, coll))

    def set_text_search_config(self, collection: str | Collection, config: str) -> Collection:
        """Change the language of the collection's lexical search; its documents' tsvectors are
        recomputed in the same transaction (no vector is touched)."""
        coll = self.get_collection(collection)
        config = self._check_text_search_config(config)
        with self._connect() as conn, conn.begin():
            conn.execute(queries.set_text_search_config(coll.id, config))
        logger.info("collection %s: text search configuration %s", coll.name, config)
        return self.get_collection(coll.name)

    def _check_text_search_config(self, config: str) -> str:
        known = read(self.engine, lambda conn: list(conn.execute(queries.text_search_configs()).scalars()))
        if config not in known:
            raise InvalidInput(f"Unknown text search configuration {config!r}: this PostgreSQL has {', '.join(known)}.")
        return config

    def drop_collection(self, name: str) -> None:
        collection = self._find_collection(check_text(name, "collection name"))
        if collection is None:
            raise catalog.not_found(name, [c.name for c in self.list_collections()], creating=False)
        # under the index-build lock: a DROP INDEX waiting behind a build CONCURRENTLY deadlocked with it
        with build_lock_transaction(self.engine) as conn:
            drop_collection_indexes(conn, collection.id)
            conn.execute(queries.delete_collection(collection.id))
        self._catalog.forget(collection.name)
        logger.info("dropped collection %s", collection.name)

    # writing --------------------------------------------------------------------------------
    def upsert(
        self,
        collection: str | Collection,
        documents: Iterable[DocumentLike],
        *,
        batch_size: int = 512,
        progress: bool | None = None,
        total: int | None = None,
        vectors: npt.ArrayLike | None = None,
        defer_index: bool | None = None,
    ) -> UpsertResult:
        """Insert or update documents; encode only texts that are new or changed.

        Each batch is one transaction: a batch that fails (bad input, database error) writes
        nothing. Documents may be :class:`Document`, mappings with ``id``/``text``/``metadata``,
        or ``(id, text[, metadata])`` tuples, from any iterable (streamed in batches). An id is a
        text, or a whole number stored as its text (``42`` is ``'42'``).

        Ids must be unique in one call, whatever ``batch_size``: a list (any sized collection) is
        checked whole before its first batch is written, so a repeated id, like any bad document,
        writes nothing; a stream (a generator) is checked as it goes, each id against every
        earlier one (one set of ids in memory), and an id repeated in a later batch stops the load
        with an :class:`InvalidInput` saying which batches were committed before it. A row
        PostgreSQL refuses (a CHECK constraint or trigger of yours) stops the load with a
        :class:`DatabaseError` giving PostgreSQL's message, the batch's first and last ids and
        what was committed before it (the driver's error is its ``__cause__``).

        ``vectors`` (one row per document, in order) are embeddings you computed yourself with
        the collection's model: they are stored instead of encoding the texts.

        ``defer_index`` drops the collection's HNSW index for the load and builds it afresh at the
        end, which is several times faster than inserting into the graph row by row (measured:
        478 against 2,726 rows/s at 20,000 rows). Searches during the load still work, by exact
        scan. The default defers for a load of at least 5,000 documents (from ``total`` or
        ``len(documents)``) that is larger than what the collection holds already.
        """
        return ingest.upsert(
            self,
            self.get_collection(collection),
            documents,
            batch_size=batch_size,
            progress=progress,
            total=total,
            vectors=vectors,
            defer_index=defer_index,
        )

    def build_index(
        self,
        collection: str | Collection,
        *,
        rebuild: bool = False,
        m: int | None = None,
        ef_construction: int | None = None,
    ) -> None:
        """Build the collection's HNSW index if it is missing; ``rebuild`` builds it afresh.

        An ingest restores an index a killed load left missing by itself; this is the way to do
        it at once (``semsim index rebuild``). ``m`` and ``ef_construction`` change the graph's
        parameters for this build and the ones after it (and imply ``rebuild``). A rebuild keeps
        the old index, searched, until the new one is valid, and saves the parameters with it:
        interrupted, nothing changed (:func:`~semsim_pg.store.indexes.rebuild_index`)."""
        coll = self.get_collection(collection)
        if m is not None or ef_construction is not None or rebuild:
            checked = self.settings.replace(
                hnsw_m=coll.hnsw_m if m is None else m,
                hnsw_ef_construction=coll.hnsw_ef_construction if ef_construction is None else ef_construction,
            )
            rebuild_index(self.engine, coll, m=checked.hnsw_m, ef_construction=checked.hnsw_ef_construction)
            return
        if self.index_state(coll) == "invalid":
            drop_index(self.engine, coll)
        build_index(self.engine, coll)

    def warm_index(self, collection: str | Collection) -> IndexWarmup:
        """Read the collection's HNSW index into PostgreSQL's shared buffers (``semsim warmup
        --collections``): after a server restart the first searches otherwise read it from
        disk page by page. Once per server start is enough: the buffers are the server's."""
        return warm_index(self.engine, self.get_collection(collection))

    def check_index(
        self, collection: str | Collection, *, sample: int = 200, k: int = 10, ef_search: int | None = None
    ) -> IndexCheck:
        """The index's state and its live recall@k against exact search on ``sample`` stored
        vectors, with a suggestion when it is below 0.95 (``semsim index check``)."""
        return check_index(self, self.get_collection(collection), sample=sample, k=check_k(k), ef_search=ef_search)

    def stale_count(self, collection: str | Collection) -> int:
        """How many documents lack a vector of their current text."""
        coll = self.get_collection(collection)
        return int(
            read(self.engine, lambda conn: conn.execute(queries.stale_count(coll.id, coll.model_name)).scalar_one())
        )

    def reconcile(self, collection: str | Collection, *, batch_size: int = 256, progress: bool | None = None) -> int:
        """Re-encode every stale document (see :meth:`stale_count`); returns how many were written.

        A vector is written only if the document still holds the text that was encoded
        (compare-and-set on the hash), so a concurrent change is never overwritten by older text.
        """
        coll = self.get_collection(collection)
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
        encoder = self.encoder_for(coll)
        with progress_bar(progress, total=self.stale_count(coll), desc=f"reconcile {coll.name}", unit="doc") as bar:
            result = encode_stale(self.engine, coll.id, encoder, batch_size=batch_size, bar=bar, chunking=coll.chunking)
        logger.info("reconciled %s: %d vectors written", coll.name, result.written)
        return result.written

    def delete(self, collection: str | Collection, external_ids: Iterable[str | int]) -> int:
        """Delete documents (and their vectors); returns how many existed. Ids as :meth:`get` takes them."""
        check_many(external_ids, "delete(): the document ids")
        coll = self.get_collection(collection)
        # checked before the transaction: a bad id at the end deletes nothing
        ids = [check_id(x, f"document id #{i} of delete()") for i, x in enumerate(external_ids)]
        with self._connect() as conn, conn.begin():
            deleted = conn.execute(queries.delete_documents(coll.id, ids)).rowcount
        return int(deleted)

    def get(self, collection: str | Collection, external_id: str | int) -> Document:
        """The stored document; ``external_id`` a text, or a whole number as :meth:`upsert` stores
        it (``42`` is the id ``'42'``)."""
        key = check_id(external_id)
        coll = self.get_collection(collection)
        row = read(self.engine, lambda conn: conn.execute(queries.get_document(coll.id, key)).first())
        if row is None:
            raise DocumentNotFound(f"Collection {coll.name!r} has no document with id {key!r}.")
        return Document(row[0], row[1], row[2])

    def count(self, collection: str | Collection) -> int:
        coll = self.get_collection(collection)
        return int(read(self.engine, lambda conn: conn.execute(queries.count_documents(coll.id)).scalar_one()))

    # searching ------------------------------------------------------------------------------
    def query_vector(self, collection: str | Collection, query: Query) -> npt.NDArray[np.float32]:
        """Turn a text, a :class:`QueryVector` or a plain vector into the collection's query vector."""
        coll = self.get_collection(collection)
        if isinstance(query, str):
            return self.encoder_for(coll).encode_query(check_text(query, "query", InvalidQuery))
        return search.check_query_vector(coll, query)

    def search(
        self,
        collection: str | Collection,
        query: Query,
        k: int = 10,
        *,
        mode: str = "semantic",
        min_similarity: float | None = None,
        filter: Mapping[str, FilterValue] | None = None,
        ef_search: int | None = None,
        exact: bool = False,
        candidates: int | None = None,
        rrf_k: int = queries.RRF_K,
        weights: tuple[float, float] = (1.0, 1.0),
        text: str | None = None,
    ) -> list[SearchHit]:
        """The k best documents for ``query``, best first, in one SQL statement.

        ``mode``: ``semantic`` ranks by the similarity of the vectors (the HNSW index answers),
        ``lexical`` by BM25 of the query's words (PostgreSQL full text search in the collection's
        language, any of the words), ``hybrid`` fuses the dense and the lexical top
        ``candidates`` (default max(k, 100)) by reciprocal rank: ``weights[0] / (rrf_k + dense
        rank) + weights[1] / (rrf_k + lexical rank)``. Lexical and hybrid need the query as text.

        ``filter`` keeps documents whose metadata has each key equal to the value, or a list
        holding it (``{"tags": "x"}`` finds ``{"tags": ["x", "y"]}``); a list of values means any
        of them; on both sides of a hybrid search. ``min_similarity`` drops
        hits whose dense similarity is below it from the k found, in every mode.
        ``exact`` scans every vector instead of using the index (to measure the index's recall).
        ``text`` gives the words when ``query`` is a vector encoded already (lexical and hybrid).
        """
        if self.settings.query_log and isinstance(query, str):
            self.load_encoder(collection)  # the logged latency is the search's, not the model's load
        started = time.perf_counter()
        args = search.SearchArgs(
            k, min_similarity, filter, exact, mode=mode, candidates=candidates, rrf_k=rrf_k, weights=weights
        )
        if text is not None or isinstance(query, str):
            args = args.with_text(text if text is not None else str(query))

        def run(coll: Collection) -> tuple[Collection, npt.NDArray[np.float32], list[SearchHit]]:
            vector = self.query_vector(coll, query)
            hits = read(self.engine, lambda conn: search.run_search(conn, self.settings, coll, vector, args, ef_search))
            return coll, vector, hits

        coll, vector, hits = self._on_current(collection, run)
        if self.settings.query_log:  # off by default: then this costs one attribute read
            log_search(self.settings, self.engine, coll, query, vector, hits, k, mode, started)
        return hits

    def search_many(
        self,
        collection: str | Collection,
        queries: Sequence[str],
        k: int = 10,
        *,
        mode: str = "semantic",
        min_similarity: float | None = None,
        filter: Mapping[str, FilterValue] | None = None,
        ef_search: int | None = None,
        exact: bool = False,
        candidates: int | None = None,
    ) -> list[list[SearchHit]]:
        """Search many queries, on one connection (the arguments as in :meth:`search`); each
        query gets the vector :meth:`search` gives it (:meth:`Encoder.encode_queries`)."""
        check_many(queries, "search_many(): the queries", InvalidQuery)
        args = search.SearchArgs(k, min_similarity, filter, exact, mode=mode, candidates=candidates)
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise InvalidQuery(f"Query #{i + 1} is empty. Give a text with at least one word.")
            check_text(q, f"query #{i + 1}", InvalidQuery)

        def run(coll: Collection) -> list[list[SearchHit]]:
            vectors = self.encoder_for(coll).encode_queries(queries)
            return read(
                self.engine,
                lambda conn: [
                    search.run_search(conn, self.settings, coll, v, args.with_text(q), ef_search)
                    for q, v in zip(queries, vectors, strict=True)
                ],
            )

        return self._on_current(collection, run)

    def similar(
        self,
        collection: str | Collection,
        external_id: str | int,
        k: int = 10,
        *,
        min_similarity: float | None = None,
        filter: Mapping[str, FilterValue] | None = None,
        ef_search: int | None = None,
    ) -> list[SearchHit]:
        """More like this: the k documents nearest to a stored one (no model needed); its id as
        :meth:`get` takes it."""
        args = search.SearchArgs(k, min_similarity, filter)
        key = check_id(external_id)

        def work(conn: Connection, coll: Collection) -> list[SearchHit]:
            row = conn.execute(queries.document_vector(coll.id, coll.model_name, key)).first()
            if row is None or row[1] is None:
                search.check_current(conn, coll)  # the collection remembered may be another by now
            if row is None:
                raise DocumentNotFound(f"Collection {coll.name!r} has no document with id {key!r}.")
            if row[1] is None:
                raise DocumentNotFound(
                    f"Document {key!r} in {coll.name!r} has no vector for model {coll.model_name} yet: "
                    "ingest it again to encode it."
                )
            vector = to_array(row[1])
            return search.run_search(conn, self.settings, coll, vector, args, ef_search, exclude_id=int(row[0]))

        return self._on_current(collection, lambda coll: read(self.engine, lambda conn: work(conn, coll)))

    def explain(
        self,
        collection: str | Collection,
        query: Query,
        k: int = 10,
        *,
        mode: str = "semantic",
        min_similarity: float | None = None,
        filter: Mapping[str, FilterValue] | None = None,
        ef_search: int | None = None,
        exact: bool = False,
        candidates: int | None = None,
        analyze: bool = True,
        force_index: bool = False,
    ) -> str:
        """The plan PostgreSQL runs for :meth:`search` with these arguments; ``force_index`` keeps
        the planner from scanning and sorting (which it may prefer for a small collection), to
        show that the statement is one the HNSW index can answer."""
        coll = self.get_collection(collection)
        args = search.SearchArgs(
            k, min_similarity, filter, exact, mode=mode, candidates=candidates, force_index=force_index
        )
        if isinstance(query, str):
            args = args.with_text(query)
        vector = self.query_vector(coll, query)
        with self._connect() as conn:
            return search.explain(conn, self.settings, coll, vector, args, ef_search, analyze)
