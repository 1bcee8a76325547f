"""Immediate mode: what a transaction changed is encoded after commit, off the request thread.

``save()`` only remembers the primary key (:func:`enqueue`); after commit the keys go to one
bounded in-process queue per process, drained by one daemon thread with
:func:`django_semsim.sync.drain`. A save that writes back the text its instance loaded is only
remembered to be *verified* (:func:`enqueue_verify`): the thread asks the database, in one
statement per batch of keys, which of them another save made stale meanwhile, and drains those.
A row that cannot be queued (queue full, process stopping or dying) keeps its durable staleness
mark in the database, where ``semsim_worker`` and ``semsim_reindex --stale`` find it: nothing is
lost. The first commit with new text outside a request in a process that has not loaded the model
yet loads it in the committing thread (:func:`_ready_encoder`): what is still queued when the
process exits is encoded at exit, when loading a model no longer works.

The public names (:func:`enqueue`, :func:`wait_idle`, :func:`stop_background`) are imported from
:mod:`django_semsim.sync`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction

from django_semsim.conf import get_config
from django_semsim.models import SemanticModel

if TYPE_CHECKING:
    from django_semsim.sync import DrainResult

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "VERIFY_BATCH",
    "VERIFY_GATHER",
    "enqueue",
    "enqueue_verify",
    "stop_background",
    "wait_idle",
]

logger = logging.getLogger(__name__)

_local = threading.local()

#: seconds the interpreter waits at exit for the background thread to finish what is queued
SHUTDOWN_TIMEOUT = 60.0

#: seconds the thread gathers keys to verify before it asks the database (when nothing is to be
#: encoded): a counter saved in a loop sends a key per commit, gathered they cost one statement
VERIFY_GATHER = 0.1

#: keys verified by one statement
VERIFY_BATCH = 1000

#: {database alias: {model: keys}}, what a thread's transaction saved, waiting for its commit
_Keys = dict[str, dict[type[SemanticModel], set[Any]]]


def enqueue(model: type[SemanticModel], pk: Any, using: str) -> None:
    """Remember ``pk`` and hand it over after the current transaction commits (at once in autocommit).

    Every save registers a commit hook, and the first hook to run takes everything the transaction
    queued, in one batch; the others find nothing left. Keys queued by a transaction that rolled
    back go with the next commit, where the staleness test skips them.
    """
    _pending("pending").setdefault(using, {}).setdefault(model, set()).add(pk)
    transaction.on_commit(partial(_committed, using), using=using)


def enqueue_verify(model: type[SemanticModel], pk: Any, using: str) -> None:
    """Remember ``pk`` to be verified after commit: a save that wrote back the text its instance loaded.

    That text is current unless another save changed the row after this instance was loaded, so
    the key is only a safety net: kept apart from the rows to encode (it never fills their queue),
    one entry however often the row is saved, no query here, and dropped (debug log) past
    ``QUEUE_SIZE`` keys: ``semsim_worker`` / ``semsim_reindex --stale`` find such a row anyway.
    """
    keys = _pending("verify").setdefault(using, {})
    known = keys.get(model)
    if known is not None and pk in known:
        # a hook is registered already, unless a rollback dropped it: the next commit takes the key
        return
    if sum(len(pks) for pks in keys.values()) >= get_config().queue_size:
        logger.debug("Not verifying %s row %r after commit: too many rows to verify", model._meta.label, pk)
        return
    keys.setdefault(model, set()).add(pk)
    transaction.on_commit(partial(_committed, using), using=using)


def _pending(kind: str) -> _Keys:
    keys: _Keys = _local.__dict__.setdefault(kind, {})
    return keys


def _committed(using: str) -> None:
    batches = _pending("pending").pop(using, {})
    verify = _pending("verify").pop(using, {})
    if not batches and not verify:
        return
    # A hook run inside a transaction (TestCase's captureOnCommitCallbacks(execute=True) runs them
    # there): the rows are visible to this connection only, the background thread would find none.
    if get_config().sync == "inline" or connections[using].in_atomic_block:
        # Keys to verify are dropped: verifying here would cost the saving thread queries for a
        # text it did not change (inline mode records none).
        for model, pks in batches.items():
            _drain_logged(model, pks, using)
    else:
        _background().submit(using, batches, verify)


def _drain_logged(model: type[SemanticModel], pks: set[Any], using: str) -> DrainResult | None:
    """Drain ``pks``; an encoder or database failure is logged and the rows stay stale."""
    from django_semsim import sync  # at call time: sync imports this module

    try:
        return sync.drain(model, using=using, pks=sorted(pks, key=str))
    except Exception:
        # The user's transaction has committed; failing here would only hide the cause.
        logger.exception(
            "Could not encode %d changed %s row(s); they stay stale until the next drain "
            "(manage.py semsim_reindex --stale, or semsim_worker).",
            len(pks),
            model._meta.label,
        )
        return None


def _verify_logged(model: type[SemanticModel], pks: set[Any], using: str) -> None:
    """Drain those of ``pks`` that are stale (one statement asks); a failure is logged."""
    from django_semsim import sync  # at call time: sync imports this module

    keys = sorted(pks, key=str)
    try:
        stale = [
            pk
            for start in range(0, len(keys), VERIFY_BATCH)
            for pk in sync.stale_keys(model, keys[start : start + VERIFY_BATCH], using=using)
        ]
    except Exception:
        logger.exception(
            "Could not verify %d saved %s row(s); one made stale by another save stays stale until the "
            "next drain (manage.py semsim_reindex --stale, or semsim_worker).",
            len(pks),
            model._meta.label,
        )
        return
    if stale:
        _drain_logged(model, set(stale), using)


#: set in a thread while it serves a request (Django's request_started / request_finished)
_request = threading.local()


def _request_started(**_: Any) -> None:
    _request.active = True


def _request_finished(**_: Any) -> None:
    _request.active = False


def connect_request_signals() -> None:
    """Know which threads serve requests (:func:`_ready_encoder` never loads the model in one)."""
    from django.core.signals import request_finished, request_started

    request_started.connect(_request_started, dispatch_uid="django_semsim.background.request_started")
    request_finished.connect(_request_finished, dispatch_uid="django_semsim.background.request_finished")


def _ready_encoder() -> bool:
    """Load the model in the committing thread before the first rows are queued, outside a
    request; True once it is loaded.

    A short-lived process (a management command, a script) may exit before the background thread
    has loaded the model; the queue is then drained at interpreter exit, where loading it fails:
    Python's shutdown has begun, and importing sentence-transformers (through joblib and
    concurrent.futures) registers an exit hook, which raises ``can't register atexit after
    shutdown``; every queued row stayed stale. Loaded here, the exit drain only encodes. A thread
    serving a request never waits for it (``save()`` stays fast; the background thread loads it,
    and ``SEMSIM['PRELOAD']`` loads it when the process starts): a web process outlives its queue.
    """
    from django_semsim.apps import preload
    from django_semsim.encoding import get_model_encoder

    if getattr(_request, "active", False):
        return False
    try:
        if not get_model_encoder().loaded:
            preload()
    except Exception:
        # the drain meets the same failure and logs it; the committed rows stay stale, nothing is lost
        logger.debug("Could not load the model before queueing", exc_info=True)
    return True


class _Background:
    """One daemon thread per process encoding committed changes; a bounded queue counted in rows.

    ``save()`` only appends to the queue. When the queue is full the rows are not queued (a warning
    says so): their companion rows are stale in the database, which is what ``semsim_worker`` and
    ``semsim_reindex --stale`` look for, so nothing is lost, not even when the process dies.
    Keys to verify wait in a set of their own, bounded apart, so that however many rows a job
    saves without changing their text, a real edit is never refused for their sake.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._items: deque[tuple[str, dict[type[SemanticModel], set[Any]]]] = deque()
        self._rows = 0  # rows queued or being encoded
        self._verify: dict[tuple[str, type[SemanticModel]], set[Any]] = {}
        self._verifying = 0  # keys waiting to be verified or being verified
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._encoder_ready = False

    def submit(
        self,
        using: str,
        batches: dict[type[SemanticModel], set[Any]],
        verify: dict[type[SemanticModel], set[Any]] | None = None,
    ) -> None:
        rows = sum(len(pks) for pks in batches.values())
        if rows and not self._encoder_ready:
            # outside the lock: loading takes seconds. Not for keys to verify only: a script that
            # saves counters does not load the model for a safety net (most likely nothing to encode)
            self._encoder_ready = _ready_encoder()
        limit = get_config().queue_size
        with self._cond:
            if rows:
                # A batch larger than the whole queue is taken when nothing waits: refused, a job
                # saving more rows than QUEUE_SIZE in one transaction would leave every one stale,
                # however idle the thread. The bound is there to keep a backlog from growing.
                if self._stopping or (self._rows and self._rows + rows > limit):
                    self._refused(rows, batches, limit)
                else:
                    self._items.append((using, batches))
                    self._rows += rows
            if verify and not self._stopping:
                self._add_verify(using, verify, limit)
            if self._items or self._verify:
                self._start()
                self._cond.notify_all()

    def _refused(self, rows: int, batches: dict[type[SemanticModel], set[Any]], limit: int) -> None:
        logger.warning(
            "Background encoder queue %s (%d row(s) waiting, SEMSIM['QUEUE_SIZE'] is %d): %d saved %s "
            "row(s) with new text stay stale until semsim_worker or semsim_reindex --stale encodes them.",
            "stopped" if self._stopping else "full",
            self._rows,
            limit,
            rows,
            ", ".join(sorted(m._meta.label for m in batches)),
        )

    def _add_verify(self, using: str, verify: dict[type[SemanticModel], set[Any]], limit: int) -> None:
        dropped = 0
        for model, pks in verify.items():
            waiting = self._verify.setdefault((using, model), set())
            before = len(waiting)
            room = max(limit - self._verifying, 0)
            new = pks - waiting
            if len(new) > room:
                dropped += len(new) - room
                new = set(list(new)[:room])
            waiting |= new
            self._verifying += len(waiting) - before
            if not waiting:
                del self._verify[(using, model)]
        if dropped:
            # only a safety net: semsim_worker and semsim_reindex --stale find such a row anyway
            logger.debug("Background encoder: %d saved row(s) not verified (%d waiting)", dropped, self._verifying)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="semsim-encoder", daemon=True)
            self._thread.start()
            atexit.register(self.stop, SHUTDOWN_TIMEOUT)

    def _take(
        self,
    ) -> (
        tuple[list[tuple[str, dict[type[SemanticModel], set[Any]]]], dict[tuple[str, type[SemanticModel]], set[Any]]]
        | None
    ):
        with self._cond:
            while not self._items and not self._verify and not self._stopping:
                self._cond.wait()
            if not self._items and self._verify and not self._stopping:
                # only keys to verify: wait a moment for more (or for rows to encode) to ask once
                self._cond.wait_for(lambda: bool(self._items) or self._stopping, VERIFY_GATHER)
            if not self._items and not self._verify:
                return None
            items = list(self._items)
            self._items.clear()
            verify, self._verify = self._verify, {}
            return items, verify

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                break
            items, verify = taken
            # everything waiting, merged per database and model: one drain each, in full batches
            merged: dict[tuple[str, type[SemanticModel]], set[Any]] = {}
            for using, batches in items:
                for model, pks in batches.items():
                    merged.setdefault((using, model), set()).update(pks)
            try:
                for (using, model), pks in merged.items():
                    _drain_logged(model, pks, using)
                for (using, model), pks in verify.items():
                    unseen = pks - merged.get((using, model), set())  # those just drained are current
                    if unseen:
                        _verify_logged(model, unseen, using)
            finally:
                # counted off whatever happened (rows not encoded stay stale in the database), so
                # that wait_idle() never waits for rows this thread will not encode
                with self._cond:
                    self._rows -= sum(len(pks) for _, batches in items for pks in batches.values())
                    self._verifying -= sum(len(pks) for pks in verify.values())
                    idle = not self._items and not self._verify
                    self._cond.notify_all()
            if idle:
                connections.close_all()  # this thread's own connections: none stays open while idle
        connections.close_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._rows == 0 and self._verifying == 0, timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Encode what is queued, then end the thread; False if it was still busy after ``timeout``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "Background encoder still busy after %.0f s at shutdown; %d row(s) stay stale for "
                    "semsim_worker or semsim_reindex --stale.",
                    timeout or 0,
                    self._rows,
                )
                return False
        return True


_state_lock = threading.Lock()
_state: _Background | None = None


def _background() -> _Background:
    """This process's queue; a forked child (gunicorn, multiprocessing) starts its own."""
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            _state = _Background()
        return _state


def wait_idle(timeout: float | None = None) -> bool:
    """Wait until the background thread has encoded everything queued so far; False on timeout.

    For tests and management commands that need the vectors now; requests never call it.
    """
    with _state_lock:
        state = _state
    if state is None or state.pid != os.getpid():
        return True
    return state.wait_idle(timeout)


def stop_background(timeout: float | None = SHUTDOWN_TIMEOUT) -> bool:
    """Encode what is queued and end the background thread (done at interpreter exit too).

    Later saves start a new thread. Returns False if it was still busy after ``timeout``.
    """
    global _state
    with _state_lock:
        state, _state = _state, None
    if state is None or state.pid != os.getpid():
        return True
    return state.stop(timeout)
