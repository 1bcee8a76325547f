"""Ingest: documents in batches, texts hashed, only new or changed texts encoded.

Each batch goes through two steps: :func:`prepare_batch` (check the documents, read their stored
hashes, encode what changed; no transaction, no lock) and :func:`write_batch` (one transaction:
binary COPY into a staging table, then one ``INSERT ... ON CONFLICT`` per table). A batch that
fails (bad input, database error) writes nothing. :func:`upsert` prepares batch n+1 in a
background thread while it writes batch n.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sized
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from semsim_pg import queries
from semsim_pg.db import connect, driver_error, vector_connection
from semsim_pg.encoder import Encoder, text_hash
from semsim_pg.errors import (
    CollectionNotFound,
    ConnectionLost,
    DatabaseError,
    DatabaseUnavailable,
    DimensionMismatch,
    InvalidInput,
    ModelMismatch,
    PoolExhausted,
    QueryCanceled,
)
from semsim_pg.pipeline import Prefetch
from semsim_pg.progress import progress_bar
from semsim_pg.store.encoding import PassageVector, encode_passages, passage_arrays
from semsim_pg.store.indexes import bulk_load, ensure_index
from semsim_pg.store.types import Collection, Document, DocumentLike, UpsertResult
from semsim_pg.validation import check_id, check_json_value, check_text, check_vectors

if TYPE_CHECKING:
    from semsim_pg.store import DocumentStore

__all__ = [
    "DEFER_INDEX_MIN_ROWS",
    "CollectionChanged",
    "PreparedBatch",
    "check_unique",
    "coerce_document",
    "prepare_batch",
    "refused_data",
    "upsert",
    "write_batch",
]

logger = logging.getLogger(__name__)

#: loads of at least this many documents into a smaller collection build the index afterwards
DEFER_INDEX_MIN_ROWS = 5000
#: batches encoded ahead of the one being written (semsim_pg.pipeline.Prefetch): with one, the
#: encoder idles whenever a single write outlasts a single encode (the first batches into a fresh
#: graph, a load spike on a shared machine)
PREFETCH_BATCHES = 2


class CollectionChanged(Exception):
    """The collection's model or split changed between reading it and writing a batch."""


def upsert(
    store: DocumentStore,
    coll: Collection,
    documents: Iterable[DocumentLike],
    *,
    batch_size: int,
    progress: bool | None,
    total: int | None,
    vectors: npt.ArrayLike | None,
    defer_index: bool | None,
) -> UpsertResult:
    """:meth:`DocumentStore.upsert` (documented there).

    Pipelined: batch n+1 is prepared (checked, compared with the stored hashes, encoded) in a
    background thread while batch n is written (:mod:`semsim_pg.pipeline`). Each batch is still
    written in its own transaction, in input order, so a failure leaves the batches before it
    committed and nothing of its own.
    """
    encoder = None if vectors is not None else store.encoder_for(coll)
    matrix = None
    if vectors is not None:
        if coll.chunking is not None:
            raise InvalidInput(
                f"Collection {coll.name!r} splits its texts into passages of {coll.chunk_size} tokens, each with its "
                "own vector: vectors= gives one per document. Leave vectors out and let semsim encode the passages."
            )
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != coll.dimension:
            raise DimensionMismatch(
                f"vectors must have shape (n, {coll.dimension}) for collection {coll.name!r}, got {matrix.shape}."
            )
        check_vectors(matrix, metric=coll.metric)
        documents = list(documents)
        if len(documents) != len(matrix):
            raise InvalidInput(f"{len(documents)} documents but {len(matrix)} vectors: give one vector per document.")
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    checked = isinstance(documents, Sized)
    # Ids met so far, with their positions: a repeated id is refused wherever it repeats, whatever
    # the batch size (checked per batch only, an id at #0 and #599 of 600 documents was written
    # twice in two batches, the second silently winning). Memory: one entry per document.
    seen: dict[str, int] = {}
    if checked:
        # A list is checked whole before its first batch is written: a bad document at its end
        # (or an id it repeats) leaves the collection as it was. A stream (a generator) is
        # checked batch by batch, its ids against every batch before.
        whole = [coerce_document(doc, i) for i, doc in enumerate(documents)]
        check_unique(whole, 0, seen)
        documents = whole
    expected = total if total is not None else (len(documents) if isinstance(documents, Sized) else None)
    if defer_index is None:
        defer_index = _defer_index(store, coll, expected)
    if not defer_index:
        ensure_index(store.engine, coll)  # a load killed after dropping it left none: restore it first
    result = UpsertResult()
    in_hand: PreparedBatch | None = None  # the batch being written, for the message of its failure
    committed = 0  # documents whose batches are committed: what a lost database leaves stored
    # What the next batch is prepared for: a model switch met by a write moves it on.
    target = _Target(coll, encoder)

    def prepare(item: tuple[int, list[Any]]) -> PreparedBatch:
        start, batch = item
        given = None if matrix is None else matrix[start : start + len(batch)]
        return prepare_batch(store, target.coll, target.encoder, batch, start, given, checked=checked, seen=seen)

    loaded = False  # every batch written (an index build that fails after it lost no document)
    with (
        bulk_load(store.engine, coll) if defer_index else nullcontext(),
        progress_bar(progress, total=expected, desc=f"ingest {coll.name}", unit="doc") as bar,
    ):
        try:
            with Prefetch(prepare, name="semsim-ingest", ahead=PREFETCH_BATCHES) as ahead:
                for prepared in ahead.map(_batches(documents, batch_size)):
                    in_hand = prepared
                    try:
                        result += write_batch(store, prepared)
                    except CollectionChanged:
                        # `semsim reembed` switched the collection's model meanwhile, or another
                        # ingest gave it a split while it was empty: encode this batch (and the
                        # rest) as the collection now says.
                        target.coll = store.get_collection(coll.name)
                        if matrix is not None:
                            raise ModelMismatch(
                                f"Collection {coll.name!r} moved to model {target.coll.model_name} during the "
                                "load; the given vectors belong to the old model. Encode them with the new one."
                            ) from None
                        target.encoder = store.encoder_for(target.coll)
                        in_hand = prepared = prepare((prepared.start, prepared.docs))
                        result += write_batch(store, prepared)
                    in_hand = None
                    committed += len(prepared.docs)
                    bar.update(len(prepared.docs))
            loaded = True
        except _STOPPED_BY_THE_DATABASE as exc:
            raise _database_lost(coll, committed, exc) from None
        except sa.exc.DBAPIError as exc:
            if not refused_data(exc):
                raise  # a statement of semsim's PostgreSQL could not run: a bug, with its traceback
            # PostgreSQL refused a row of the batch (a CHECK constraint, a trigger of the user's
            # raising, a value out of a column's range): one transaction per batch, so nothing
            # of it is stored. Said in one line with what was committed; the error is the cause.
            raise _refused(coll, in_hand, committed, batch_size, exc) from exc
        except InvalidInput as exc:
            if not committed or type(exc) is not InvalidInput:
                raise  # a ModelMismatch and the like: running the same ingest again would not help
            # a stream's bad document, met after earlier batches committed: say what is stored
            raise InvalidInput(
                f"{exc} Nothing of its batch was written; the {committed} documents before it were "
                f"({_committed_batches(committed, batch_size)}). Fix it and run the same ingest again: documents "
                "already stored with the same text are not encoded again."
            ) from None
        finally:
            if defer_index:
                # After the last batch, from every row at once, and even after a failed load (a
                # collection is never left without its index). Built earlier, while the last
                # batches encoded, it took those into the graph row by row (~7x the build's cost
                # per row) and slowed the load on an idle machine (AMD EPYC, 2 cores, 20,000
                # Tatoeba sentences, onnx-int8: 1,179 against 1,382 docs/s with two encoder
                # threads, 884 against 963 with one; within 2% under two busy processes).
                try:
                    store.build_index(coll.name)  # by name: the model may have changed meanwhile
                except _STOPPED_BY_THE_DATABASE as exc:
                    # The database is gone or full: the next ingest (or `semsim index rebuild`) builds it.
                    raise (_index_lost if loaded else _database_lost)(coll, committed, exc) from None
    logger.info(
        "upsert into %s: %d inserted, %d updated, %d unchanged, %d encoded",
        coll.name,
        result.inserted,
        result.updated,
        result.unchanged,
        result.encoded,
    )
    return result


@dataclass
class _Target:
    """The collection (and its encoder) the next batches are prepared for."""

    coll: Collection
    encoder: Encoder | None


def _defer_index(store: DocumentStore, coll: Collection, expected: int | None) -> bool:
    """Whether to drop the index for this load and build it at the end."""
    return expected is not None and expected >= DEFER_INDEX_MIN_ROWS and expected > _vector_count(store, coll)


def _first_line(exc: Exception) -> str:
    """The database's own message (the driver's, under SQLAlchemy's wrapper or semsim's
    ConnectionLost), first line."""
    if isinstance(exc, ConnectionLost) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


#: what stops a load in the database, for the one line saying what is stored (a disconnect and a
#: refusal are semsim's errors already; a raw OperationalError is a full disk or the like)
_STOPPED_BY_THE_DATABASE = (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseUnavailable, QueryCanceled)


def _database_lost(coll: Collection, committed: int, exc: Exception) -> DatabaseError:
    """One line for a database that went away (or refused to go on) mid-load: what is stored, and
    how to go on."""
    if isinstance(exc, (PoolExhausted, QueryCanceled)):
        # the database is there: the pool is full, or a lock or statement timeout ran out; the
        # error's own line says what to do about it
        return type(exc)(
            f"{exc} The ingest into {coll.name!r} stopped there: the first {committed} documents were committed, "
            "the rest were not; run the same ingest again to go on (stored documents are skipped)."
        )
    reason = _first_line(exc)
    if isinstance(exc, sa.exc.OperationalError) and not exc.connection_invalidated:
        # the server answered, with an error of its own (a full disk, out of memory)
        return DatabaseError(
            f"PostgreSQL stopped the ingest into {coll.name!r} ({reason}): the first {committed} documents were "
            "committed, the rest were not. Fix that (the server's log says more), then run the same ingest "
            "again: documents already stored with the same text are skipped, not encoded again."
        )
    return DatabaseUnavailable(
        f"The database connection was lost during the ingest into {coll.name!r} ({reason}): the first "
        f"{committed} documents were committed, the rest were not. When the server is back, run the same "
        "ingest again: documents already stored with the same text are skipped, not encoded again."
    )


def refused_data(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's error or psycopg's own) is PostgreSQL refusing the data it
    was given: a constraint (SQLSTATE class 23), a value it cannot take (22), or an error raised by
    a function or trigger (P0001 and any code a user's PL/pgSQL raised: it has a context)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if not isinstance(orig, psycopg.Error):
        return False
    state = orig.sqlstate or ""
    return state[:2] in ("22", "23") or state == "P0001" or bool(orig.diag.context)


def _committed_batches(committed: int, batch_size: int) -> str:
    """Which batches a load that stopped after ``committed`` documents had committed, in words."""
    batches = -(-committed // batch_size)
    return "batch 1" if batches == 1 else f"batches 1 to {batches}"


def _refused(
    coll: Collection, batch: PreparedBatch | None, committed: int, batch_size: int, exc: sa.exc.DBAPIError
) -> DatabaseError:
    """One line for a batch PostgreSQL refused: its message (the constraint's or the trigger's),
    the batch's first and last ids, and what the batches before it committed."""
    where = ""
    if batch is not None and batch.docs:
        first, last = batch.docs[0].external_id, batch.docs[-1].external_id
        ids = f"id {first!r}" if len(batch.docs) == 1 else f"ids {first!r} to {last!r}"
        where = (
            f" in batch {batch.start // batch_size + 1} (documents #{batch.start} to "
            f"#{batch.start + len(batch.docs) - 1}, {ids})"
        )
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    stored = (
        f"Nothing of that batch was written; the {committed} documents before it were "
        f"({_committed_batches(committed, batch_size)})"
        if committed
        else "Nothing was written"
    )
    return DatabaseError(
        f"PostgreSQL refused a document of the ingest into {coll.name!r}{where}: {_first_line(exc)}"
        f"{f' (SQLSTATE {state})' if state else ''}. {stored}. Fix the document (or the constraint or trigger "
        "that refused it), then run the same ingest again: documents already stored are skipped."
    )


def _index_lost(coll: Collection, committed: int, exc: Exception) -> DatabaseError:
    """One line for an index build that failed after the batches (a full disk, a lost server, a
    statement timeout)."""
    if isinstance(exc, QueryCanceled):
        return QueryCanceled(
            f"Building the HNSW index of {coll.name!r} after the load stopped: {exc} The {committed} documents "
            f"loaded are stored, and searches read every row until it is built: run `semsim index rebuild -c "
            f"{coll.name}` (or the same ingest again) with the timeout raised."
        )
    reason = _first_line(exc)
    return DatabaseUnavailable(
        f"Building the HNSW index of {coll.name!r} after the load failed ({reason}); the {committed} documents "
        f"loaded are stored, and searches read every row until it is built: run `semsim index rebuild -c "
        f"{coll.name}` (or the same ingest again) once the server is back or has disk space."
    )


@dataclass
class PreparedBatch:
    """One batch ready to write: checked documents, their hashes, the vectors of what changed.

    Made by :func:`prepare_batch` (no lock held, may run in a background thread), written by
    :func:`write_batch` (one transaction)."""

    #: the collection (and model) the vectors were made for: the write refuses another
    coll: Collection
    encoder: Encoder | None
    #: position of the first document in the whole load (for messages)
    start: int
    docs: list[Document]
    #: ``text_hash`` of each document's text
    hashes: list[str]
    #: the passages (one, the whole text, unless the collection splits texts) with their vectors
    #: of each document whose stored hash differed, by position in ``docs``
    vectors: dict[int, list[PassageVector]]
    #: the caller's vectors for this batch (``upsert(vectors=...)``), else None
    given: npt.NDArray[np.float32] | None


def prepare_batch(
    store: DocumentStore,
    coll: Collection,
    encoder: Encoder | None,
    batch: list[Any],
    start: int,
    given: npt.NDArray[np.float32] | None,
    *,
    checked: bool = False,
    seen: dict[str, int] | None = None,
) -> PreparedBatch:
    """Check a batch (unless ``checked``: its items are :func:`coerce_document`'s already), read
    its stored hashes and encode what changed; writes nothing.

    ``seen``: the ids of the load's earlier documents with their positions (see
    :func:`check_unique`), completed with this batch's; without it, ids are unique per batch.
    Encoding happens here, before the write transaction, so no lock is held while the model runs.
    """
    docs = batch if checked else [coerce_document(doc, start + i) for i, doc in enumerate(batch)]
    check_unique(docs, start, {} if seen is None else seen)
    hashes = [text_hash(doc.text) for doc in docs]
    with connect(store.engine) as conn:
        rows = conn.execute(queries.stored_hashes(coll.id, coll.model_name, [doc.external_id for doc in docs])).all()
    stored = {row[0]: row[1] for row in rows}
    to_encode = [i for i, doc in enumerate(docs) if stored.get(doc.external_id) != hashes[i]]
    vectors: dict[int, list[PassageVector]] = {}
    if to_encode and given is not None:
        vectors = {i: [(0, 0, None, given[i])] for i in to_encode}
    elif to_encode and encoder is not None:
        if encoder.dimension != coll.dimension:
            raise ModelMismatch(
                f"Model {encoder.name} makes {encoder.dimension}-dimensional vectors but collection "
                f"{coll.name!r} holds {coll.dimension}."
            )
        encoded = encode_passages(encoder, [docs[i].text for i in to_encode], coll.chunking)
        vectors = dict(zip(to_encode, encoded, strict=True))
    return PreparedBatch(coll, encoder, start, docs, hashes, vectors, given)


def check_unique(docs: list[Document], start: int, seen: dict[str, int]) -> None:
    """Refuse an id met before in the load: ``seen`` maps each id met to its position, ``start``
    is the position of ``docs[0]``. A document already in ``seen`` at its own position (a list
    checked whole, then batch by batch; a batch prepared again) is not a repeat."""
    for i, doc in enumerate(docs, start):
        first = seen.setdefault(doc.external_id, i)
        if first != i:
            raise InvalidInput(
                f"Document id {doc.external_id!r} appears twice (items #{first} and #{i}). Ids must be unique "
                "within a collection: merge or rename one."
            )


def write_batch(store: DocumentStore, batch: PreparedBatch) -> UpsertResult:
    """Write a prepared batch in one transaction: staging COPY, upsert, vectors, catch-up.

    Raises :class:`CollectionChanged` (nothing written) when the collection moved to another
    model, or was given another split, since the batch was prepared."""
    coll, docs, hashes, vectors = batch.coll, batch.docs, batch.hashes, batch.vectors
    result = UpsertResult(encoded=len(vectors))
    with connect(store.engine) as conn, conn.begin():
        # Serialise with a model switch (reembed locks the row FOR UPDATE) and a split setting
        # another process gave the still empty collection: never write vectors of a model, or
        # passages of a split, the collection has just left.
        current = conn.execute(queries.lock_collection_for_write(coll.id)).one_or_none()
        if current is None:
            raise CollectionNotFound(f"Collection {coll.name!r} was dropped during the load.")
        model_name, chunk_size, chunk_overlap = current
        if model_name != coll.model_name or (chunk_size, chunk_overlap) != (coll.chunk_size, coll.chunk_overlap):
            raise CollectionChanged
        conn.execute(queries.create_staging())
        raw = vector_connection(conn)
        try:
            with raw.cursor() as cur, cur.copy(queries.copy_staging()) as copy:
                copy.set_types(["text", "text", "text", "text", "vector", "int4", "int4", "int4"])
                for i, doc in enumerate(docs):
                    for row in _staged_rows(doc, hashes[i], vectors.get(i)):
                        copy.write_row(row)
        except psycopg.Error as exc:  # psycopg's own (the COPY runs past the engine): as the engine's
            raise driver_error(conn, raw, queries.copy_staging(), exc) from exc
        flags = conn.execute(queries.upsert_staged_documents(coll.id)).scalars().all()
        result.inserted = sum(1 for inserted in flags if inserted)
        result.updated = len(flags) - result.inserted
        result.unchanged = len(docs) - len(flags)
        if vectors:
            conn.execute(queries.write_staged_vectors(coll.id, coll.model_name, _made_by(batch.encoder, batch.given)))
        result.encoded += _catch_up(conn, coll, batch.encoder, docs, hashes, batch.given)
    return result


def _staged_rows(doc: Document, hash: str, passages: list[PassageVector] | None) -> Iterator[tuple[Any, ...]]:
    """The staging rows of one document: passage 0 carries the document, the others their vector."""
    if not passages:  # unchanged: the document only, its vectors stay
        yield (doc.external_id, doc.text, json.dumps(doc.metadata), hash, None, 0, 0, None)
        return
    for number, start, end, vector in passages:
        if number == 0:
            yield (doc.external_id, doc.text, json.dumps(doc.metadata), hash, vector, number, start, end)
        else:
            yield (doc.external_id, None, None, hash, vector, number, start, end)


def _catch_up(
    conn: Connection,
    coll: Collection,
    encoder: Encoder | None,
    docs: list[Document],
    hashes: list[str],
    given: npt.NDArray[np.float32] | None,
) -> int:
    """Encode, inside the write transaction, the documents of the batch still stale after it.

    They exist only when another writer committed between this batch's read of the stored
    hashes and its write: a text this batch found unchanged was replaced, and this batch has
    just written it back without a vector. Every document of the batch is row-locked by the
    upsert until commit, so what is written here stays true (compare-and-set on the hash)."""
    position = {doc.external_id: i for i, doc in enumerate(docs)}
    stale = [
        (position[row[0]], int(row[1]))
        for row in conn.execute(queries.stale_among(coll.id, coll.model_name, list(position))).all()
        if row[2] == hashes[position[row[0]]]
    ]
    if not stale:
        return 0
    logger.info("%d documents of %s changed under a concurrent write; encoding them again", len(stale), coll.name)
    encoded: list[list[PassageVector]]
    if given is not None:
        encoded = [[(0, 0, None, given[i])] for i, _ in stale]
    elif encoder is not None:
        encoded = encode_passages(encoder, [docs[i].text for i, _ in stale], coll.chunking)
    else:  # pragma: no cover - one of the two is always set
        return 0
    ids, stale_hashes, vectors, passages = passage_arrays(
        [doc_id for _, doc_id in stale], [hashes[i] for i, _ in stale], encoded
    )
    conn.execute(
        queries.write_vectors_cas(coll.model_name, ids, stale_hashes, vectors, _made_by(encoder, given), passages)
    )
    return len(stale)


def _made_by(encoder: Encoder | None, given: npt.NDArray[np.float32] | None) -> str | None:
    """The backend recorded with the batch's vectors: None (unknown) for vectors the caller gave."""
    return encoder.backend_name if given is None and encoder is not None else None


def _vector_count(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        return int(conn.execute(queries.vector_count(coll.id, coll.model_name)).scalar_one())


def coerce_document(doc: DocumentLike, index: int) -> Document:
    """A :class:`Document` from any accepted form, checked: ``index`` numbers it in messages."""
    if isinstance(doc, Document):
        external_id, text, metadata = doc.external_id, doc.text, doc.metadata
    elif isinstance(doc, Mapping):
        if "id" not in doc or "text" not in doc:
            raise InvalidInput(f"Document #{index} needs the keys 'id' and 'text', got {sorted(doc)}.")
        external_id, text, metadata = doc["id"], doc["text"], doc.get("metadata") or {}
    elif isinstance(doc, tuple) and len(doc) in (2, 3):
        external_id, text = doc[0], doc[1]
        metadata = doc[2] if len(doc) == 3 else {}
    else:
        raise InvalidInput(
            f"Document #{index} is a {type(doc).__name__}; give a Document, a mapping with 'id' and 'text', "
            "or an (id, text[, metadata]) tuple."
        )
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)  # as check_id takes it: one rule for every id
    if not isinstance(external_id, str) or not external_id.strip():
        raise InvalidInput(f"Document #{index} has an empty or non-text id: {external_id!r}.")
    check_id(external_id, f"id of document #{index}")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"Document {external_id!r} (#{index}) has no text: {text!r}. Give it some, or leave it out.")
    check_text(text, f"text of document {external_id!r} (#{index})")
    if not isinstance(metadata, Mapping):
        raise InvalidInput(
            f"The metadata of document {external_id!r} (#{index}) must be a mapping, got {type(metadata).__name__}."
        )
    # Checked here, before any batch is written: PostgreSQL's jsonb refused NaN, infinity, NUL and
    # lone surrogates only at the COPY, after the batches before had committed. One check of the
    # whole mapping; field by field (to name the field) only when it fails.
    what = f"document {external_id!r} (#{index})"
    try:
        if not all(isinstance(key, str) for key in metadata):
            raise InvalidInput("a key that is not a text")  # json.dumps would turn it into one
        check_json_value(metadata, f"metadata of {what}")
    except InvalidInput:
        for key, value in metadata.items():
            if not isinstance(key, str):
                raise InvalidInput(f"The metadata of {what} has the key {key!r}: keys must be texts.") from None
            check_text(key, f"metadata key {key[:40]!r} of {what}")
            check_json_value(value, f"metadata field {key!r} of {what}")
        raise
    return Document(external_id, text, dict(metadata))


def _batches(items: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    batch: list[Any] = []
    start = 0
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield start, batch
            start += len(batch)
            batch = []
    if batch:
        yield start, batch
