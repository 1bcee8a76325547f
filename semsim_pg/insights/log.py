"""The query log's writer: searches and FAQ questions queued in memory, written in batches.

Logging must never fail or slow the search it describes, so the request path only builds a
small record and puts it on a bounded queue (``put_nowait``: a full queue drops the record and
counts it). One background thread per database takes batches off the queue, computes what
costs time (the text's hash, the vector of an FAQ question, which the FAQ's batch search does
not hand back) and writes each batch with one multi-row INSERT. A failed write is a warning in
the log, never an exception in a search. The queue is flushed at exit and on :func:`flush`;
a forked child starts with no writer (its parent's thread did not come along) and makes its own.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
import queue
import random
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from semsim_pg import queries, server
from semsim_pg.db import connect, vector_connection
from semsim_pg.errors import ConfigurationError
from semsim_pg.queries import tables
from semsim_pg.settings import Settings

__all__ = [
    "KIND_FAQ",
    "KIND_SEARCH",
    "LoggedQuery",
    "QueryLogWriter",
    "flush",
    "log_answer",
    "log_key",
    "log_query",
    "log_search",
    "not_logged",
    "query_hash",
]

logger = logging.getLogger(__name__)

KIND_SEARCH = "search"
KIND_FAQ = "faq"
#: records waiting to be written; past this a burst drops records rather than growing memory
QUEUE_SIZE = 10_000
#: records per INSERT
BATCH_SIZE = 500
#: seconds a record may wait for a batch to fill
FLUSH_INTERVAL = 1.0
#: FAQ questions encoded per call in the writer: a short hold on the encoder's lock, so a
#: search that needs the encoder meanwhile waits milliseconds, not a whole batch
ENCODE_CHUNK = 8

_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("semsim_query_log_quiet", default=False)


@contextlib.contextmanager
def not_logged() -> Iterator[None]:
    """Searches inside this block are not logged (an FAQ question logs itself once, not the
    searches it runs; the insights' own searches log nothing)."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


def query_hash(text: str | None, vector: npt.NDArray[np.float32] | None = None, *, key: bytes | None = None) -> str:
    """What identifies a query in the log (identical queries group by it): the HMAC-SHA256 of
    its text under ``key`` (:func:`log_key`), so that a reader of the log cannot confirm a guess
    of a query logged without its text by hashing the guess; without a key the plain SHA-256,
    which rows logged before the log was keyed hold. A query given as a vector: the SHA-256 of
    its bytes (the vector itself is in the row)."""
    if text is not None:
        data = text.encode("utf-8")
        return hashlib.sha256(data).hexdigest() if key is None else hmac.new(key, data, hashlib.sha256).hexdigest()
    data = b"" if vector is None else np.asarray(vector, dtype=np.float32).tobytes()
    return "vector:" + hashlib.sha256(data).hexdigest()


#: the file in ``Settings.data_dir`` that holds the generated key when ``query_log_key`` is unset
KEY_FILE = "query_log.key"


def log_key(settings: Settings) -> bytes:
    """The key of :func:`query_hash`: ``settings.query_log_key`` (``SEMSIM_QUERY_LOG_KEY``), else
    a random one generated once into ``data_dir/query_log.key``, readable by its owner only.
    Every process that logs into one database must use the same key for identical queries to
    group: set ``SEMSIM_QUERY_LOG_KEY`` where several machines do."""
    if settings.query_log_key:
        return settings.query_log_key.encode("utf-8")
    return _key_file(settings.data_dir)


@functools.lru_cache(maxsize=8)
def _key_file(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    try:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            # Written whole beside it, then linked in: a process that loses the race reads the
            # winner's key, never a half-written file; the mode is set before the key is in it.
            tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        with path.open(encoding="utf-8") as handle:
            _keep_private(path, handle.fileno())
            key = handle.read().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"The query log's key file {path} cannot be read or created ({exc.strerror}): set SEMSIM_QUERY_LOG_KEY "
            "to a secret of your own, or make SEMSIM_DATA_DIR writable."
        ) from None
    if not key:
        raise ConfigurationError(f"The query log's key file {path} is empty: delete it (a new key is made).")
    return key.encode("utf-8")


def _keep_private(path: Path, fd: int) -> None:
    """A key file others may read or write (copied with its mode, made under a loose umask by
    hand, chmod'ed) is made its owner's alone when this process owns it, with a warning; one
    owned by another user is warned about, naming the fix. Not refused, as ssh refuses a loose
    private key: that would turn off the query log of a whole service over a file mode. Called
    once per file and process (:func:`_key_file` is cached)."""
    if os.name != "posix":  # Windows has no such bits: its ACLs decide, and Python cannot see them here
        return
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if info.st_uid == os.geteuid():
        with contextlib.suppress(OSError):  # a read-only file system, say: then warn as for another's file
            os.fchmod(fd, mode & ~0o077)
            logger.warning(
                "query log: the key file %s was open to other users (mode %o): made it %o, its owner's alone. "
                "If someone may have read it, delete it for a new key (queries logged before then no longer "
                "group with later ones).",
                path,
                mode,
                mode & ~0o077,
            )
            return
    logger.warning(
        "query log: the key file %s is open to other users (mode %o), who can confirm guesses of the queries "
        "logged without their text: run chmod 600 %s as its owner, or set SEMSIM_QUERY_LOG_KEY.",
        path,
        mode,
        path,
    )


@dataclass(frozen=True)
class LoggedQuery:
    """One query as the request path hands it to the writer (nothing here costs time to build)."""

    collection: str
    kind: str
    text: str | None
    vector: npt.NDArray[np.float32] | None
    model_name: str | None
    result_ids: Sequence[str]
    result_scores: Sequence[float]
    top_score: float | None
    answered: bool | None
    latency_ms: float
    mode: str | None = None
    k: int | None = None
    created_at: dt.datetime | None = None


def log_query(settings: Settings, engine: Engine, record: LoggedQuery, table: sa.Table | None = None) -> None:
    """Queue ``record`` for the log (``table``: default semsim's) when the log is on and the
    sample draws it. Never raises."""
    if not settings.query_log or _quiet.get():
        return
    try:
        rate = settings.query_log_sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        if record.created_at is None:
            record = _stamped(record)
        _writer(engine, table).submit(record, keep_text=settings.query_log_text, key=log_key(settings))
    except Exception as exc:  # logging must never break the search it describes
        logger.warning("query log: could not queue a query (%s: %s)", type(exc).__name__, exc)


def log_search(
    settings: Settings,
    engine: Engine,
    collection: Any,
    query: Any,
    vector: npt.NDArray[np.float32],
    hits: Sequence[Any],
    k: int,
    mode: str,
    started: float,
) -> None:
    """Log one :meth:`DocumentStore.search` (its collection, query, vector and hits)."""
    if _quiet.get():
        return
    try:
        log_query(
            settings,
            engine,
            LoggedQuery(
                collection=collection.name,
                kind=KIND_SEARCH,
                text=query if isinstance(query, str) else None,
                vector=vector,
                model_name=collection.model_name,
                result_ids=[hit.external_id for hit in hits],
                result_scores=[hit.similarity for hit in hits],
                top_score=hits[0].similarity if hits else None,
                answered=None,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                mode=mode,
                k=k,
            ),
        )
    except Exception as exc:  # never the search's problem
        logger.warning("query log: could not log a search (%s: %s)", type(exc).__name__, exc)


def log_answer(
    settings: Settings,
    engine: Engine,
    collection: str,
    answer: Any,
    started: float,
    *,
    key_of: Callable[[Any], Any],
    k: int,
    mode: str,
    model_name: str | None = None,
    table: sa.Table | None = None,
) -> None:
    """Log one FAQ question and its answer (``semsim_pg.faq.Answer``). ``key_of`` names an
    entry; the question's vector is computed by the writer (``model_name``, default the
    collection's), off the request path. Scores are bi-encoder similarities when the matches
    carry them, so a reranked question stays comparable with the others."""
    if not settings.query_log or _quiet.get():
        return
    try:
        matches = list(answer.matches)
        scores = [m.similarity if m.similarity is not None else m.score for m in matches]
        log_query(
            settings,
            engine,
            LoggedQuery(
                collection=collection,
                kind=KIND_FAQ,
                text=answer.question,
                vector=None,
                model_name=model_name,
                result_ids=[str(key_of(m.entry)) for m in matches],
                result_scores=scores,
                top_score=scores[0] if scores else None,
                answered=bool(answer.answered),
                latency_ms=(time.perf_counter() - started) * 1000.0,
                mode=mode,
                k=k,
            ),
            table,
        )
    except Exception as exc:  # never the question's problem
        logger.warning("query log: could not log an FAQ question (%s: %s)", type(exc).__name__, exc)


def _stamped(record: LoggedQuery) -> LoggedQuery:
    return dataclasses.replace(record, created_at=dt.datetime.now(dt.UTC))


class QueryLogWriter:
    """A bounded queue and the thread that writes it to one database."""

    def __init__(
        self,
        engine: Engine,
        table: sa.Table | None = None,
        *,
        queue_size: int = QUEUE_SIZE,
        batch_size: int = BATCH_SIZE,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.engine = engine
        self.table = table if table is not None else tables.query_log
        self.batch_size = batch_size
        self.interval = interval
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[LoggedQuery, bool, bytes | None]] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="semsim-query-log", daemon=True)
        self._thread.start()

    def submit(self, record: LoggedQuery, *, keep_text: bool = True, key: bytes | None = None) -> None:
        """Queue ``record``; ``keep_text``: its text goes in the row, not only its hash;
        ``key``: that hash's key (:func:`log_key`; None: the unkeyed SHA-256)."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait((record, keep_text, key))
            if self._queue.qsize() >= self.batch_size:
                self._wake.set()
        except queue.Full:
            self._done(1)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "query log: %d queries dropped because the writer is behind (queue of %d full); "
                    "lower SEMSIM_QUERY_LOG_SAMPLE_RATE or check the database",
                    self.dropped,
                    self._queue.maxsize,
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=1.0)

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            self._idle.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            # Sleep once for the batch to fill instead of waking at every record: the request
            # path's put then never hands the GIL to this thread. A full batch or a flush wakes it.
            if self._queue.qsize() < self.batch_size - 1:
                self._wake.wait(self.interval)
            self._wake.clear()
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
                self.written += len(batch)
            except Exception as exc:  # a failed write loses its batch, never the search
                self.failed += len(batch)
                logger.warning(
                    "query log: %d queries not written (%s: %s)",
                    len(batch),
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                )
            finally:
                self._done(len(batch))

    def _write(self, batch: list[tuple[LoggedQuery, bool, bytes | None]]) -> None:
        vectors = self._vectors([record for record, _, _ in batch])
        rows = [_row(record, keep, key, vector) for (record, keep, key), vector in zip(batch, vectors, strict=True)]
        # connect(): no pooled connection free is PoolExhausted's line in the warning, not a raw TimeoutError
        with connect(self.engine) as conn, conn.begin():
            raw = vector_connection(conn)
            with raw.cursor() as cur, cur.copy(queries.copy_log(self.table)) as copy:
                copy.set_types([kind for _, kind in queries.LOG_COLUMNS])
                for row in rows:
                    copy.write_row(row)

    def _vectors(self, records: list[LoggedQuery]) -> list[tuple[str | None, npt.NDArray[np.float32] | None]]:
        """(model, vector) of each record: its own, else its question encoded here by the
        collection's model (FAQ questions)."""
        result: list[tuple[str | None, npt.NDArray[np.float32] | None]] = [(r.model_name, r.vector) for r in records]
        missing: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            if record.vector is None and record.text is not None and record.text.strip():
                missing.setdefault(record.collection, []).append(i)
        if not missing:
            return result
        from semsim_pg.encoder import get_encoder

        models = self._models([name for name in missing if records[missing[name][0]].model_name is None])
        for name, positions in missing.items():
            model = records[positions[0]].model_name or models.get(name)
            if model is None:
                continue
            encoder = get_encoder(model)
            for start in range(0, len(positions), ENCODE_CHUNK):
                chunk = positions[start : start + ENCODE_CHUNK]
                texts = [records[i].text or "" for i in chunk]
                for i, vector in zip(chunk, encoder.encode(texts, show_progress_bar=False), strict=True):
                    result[i] = (encoder.name, vector)
        return result

    def _models(self, collections: list[str]) -> dict[str, str]:
        if not collections:
            return {}
        with connect(self.engine) as conn:
            found = {name: conn.execute(queries.find_collection(name)).first() for name in collections}
        return {name: str(row.model_name) for name, row in found.items() if row is not None}


def _row(
    record: LoggedQuery,
    keep_text: bool,
    key: bytes | None,
    model_vector: tuple[str | None, npt.NDArray[np.float32] | None],
) -> tuple[Any, ...]:
    """The record as a row of :data:`semsim_pg.queries.LOG_COLUMNS`."""
    model, vector = model_vector
    return (
        record.created_at,
        record.collection,
        record.kind,
        record.mode,
        record.k,
        record.text if keep_text else None,
        query_hash(record.text, record.vector, key=key),
        model,
        None if vector is None else np.asarray(vector, dtype=np.float32),
        [str(i) for i in record.result_ids],
        [float(s) for s in record.result_scores],
        record.top_score,
        record.answered,
        record.latency_ms,
    )


_writers: dict[tuple[str, str], QueryLogWriter] = {}
_writers_lock = threading.Lock()


def _writer(engine: Engine, table: sa.Table | None = None) -> QueryLogWriter:
    key = (str(engine.url), "" if table is None else table.fullname)
    writer = _writers.get(key)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(key)
            if writer is None:
                writer = _writers[key] = QueryLogWriter(engine, table)
    return writer


def flush(timeout: float = 10.0) -> bool:
    """Write every queued query now (tests, a command before it exits); False on timeout."""
    with _writers_lock:
        writers = list(_writers.values())
    return all(writer.flush(timeout) for writer in writers)


def _at_exit() -> None:
    if not flush(timeout=5.0):
        logger.warning("query log: some queries were still queued at exit and are lost")


def _after_fork() -> None:
    # The parent's threads do not exist in the child: forget their writers (and their lock).
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


atexit.register(_at_exit)  # a database of the user's own
server.before_leave(_at_exit)  # the embedded server: written before the last process out stops it
os.register_at_fork(after_in_child=_after_fork)
