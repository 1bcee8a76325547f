"""Overlap the slow half of a batch job (encoding) with the other half (writing).

A load alternates two kinds of work: encoding a batch (the model, which releases the GIL inside
torch and onnxruntime) and writing it (a round trip to PostgreSQL, whose server process does the
COPY, the upsert and the HNSW inserts on its own core). Done one after the other, each waits for
the other; :class:`Prefetch` runs the preparation of batch n+1 in one background thread while
the caller writes batch n, so the total is close to the slower half instead of the sum.

What it keeps from a plain loop:

* **order**: results come back in input order, and an error in preparing batch n+1 is raised
  only after batch n was handed back (the batches before a bad one are written, as before);
* **a bounded lead**: at most ``ahead`` batches (one by default) are prepared or queued while
  the caller works (bounded memory, and at most that many batches of encoding are wasted when
  the caller stops). The core's ingest keeps two: then the encoder waits for the writer only
  when a write takes longer than two encodes (the first batches into a fresh index, a load
  spike), instead of whenever one write takes longer than one encode;
* **a clean stop**: leaving the ``with`` block (normally, on an error, on KeyboardInterrupt)
  cancels what has not started and waits for the preparation running (it is never cut in half),
  so no thread outlives the job.

The input is iterated in the caller's thread (a generator the user gave, a database cursor of
theirs); only ``prepare`` runs in the background thread. The core's ingest uses it.

A queue whose batches are claimed with ``FOR UPDATE SKIP LOCKED`` (the Django drain) needs its
claim and its write in one transaction, so it cannot hand a batch from one thread to another:
:class:`Lanes` runs its whole claim-encode-write loop in two threads instead, encoding in turns.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

from semsim_pg.errors import InvalidInput

__all__ = ["Lanes", "Prefetch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Prefetch(Generic[T, R]):
    """``prepare`` applied to each item ``ahead`` items ahead (default one), in a background thread.

    Use it as a context manager; :meth:`map` yields ``prepare(item)`` in order::

        with Prefetch(encode_batch, name="semsim-encode") as ahead:
            for prepared in ahead.map(batches):
                write(prepared)  # the next batch encodes meanwhile
    """

    def __init__(self, prepare: Callable[[T], R], *, name: str = "semsim-prefetch", ahead: int = 1) -> None:
        if ahead < 1:
            raise InvalidInput(f"Prefetch needs ahead >= 1, got {ahead}.")
        self._prepare = prepare
        self._name = name
        self._ahead = ahead
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> Prefetch[T, R]:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if error is not None:
            logger.debug("%s: stopping after %s; waiting for the batch being prepared", self._name, kind)
        # cancel_futures: a batch submitted but not started never starts; the running one finishes
        # (a model call cannot be interrupted), and its result is dropped.
        executor.shutdown(wait=True, cancel_futures=True)

    def map(self, items: Iterable[T]) -> Iterator[R]:
        """``prepare(item)`` for each item, in order; items n+1 to n+ahead are prepared (one at
        a time, in order) while the caller has n."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("Prefetch.map() runs inside `with Prefetch(...)`, which stops its thread")
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(executor.submit(self._prepare, item))
            if len(pending) > self._ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Lanes:
    """The same batch loop in ``count`` threads at once (the caller's is one), encoding in turns.

    Each call of ``step`` claims, encodes and writes one whole batch in its own transaction, as
    one worker would: lanes claiming with ``SKIP LOCKED`` never take the same rows, and what one
    worker guarantees (compare-and-set writes, nothing lost on failure) holds for every lane.
    ``step`` holds :attr:`turn` while it encodes, so one batch encodes at a time (the model's
    threads are not oversubscribed) while another lane claims or writes.

    ``run(step)`` calls ``step`` until it returns False in every lane; the other lanes start only
    once the caller's first step returned True (a small job never starts a thread). An error in
    any lane (KeyboardInterrupt in the caller's included) sets :attr:`stop`: each lane finishes
    the batch in hand (a transaction commits or rolls back whole) and takes no other; the first
    error is raised once every lane has ended. ``on_exit`` runs at the end of each extra lane's
    thread (to close its database connection).
    """

    def __init__(self, count: int = 2, *, name: str = "semsim-lane", on_exit: Callable[[], None] | None = None) -> None:
        if count < 1:
            raise InvalidInput(f"Lanes needs at least one lane, got {count}.")
        self.count = count
        self.name = name
        self.on_exit = on_exit
        #: held around the stage done in turns (encoding)
        self.turn = threading.Lock()
        #: set when a lane failed or a step asked every lane to stop
        self.stop = threading.Event()

    def run(self, step: Callable[[], bool]) -> None:
        if not step():
            return
        errors: list[BaseException] = []

        def lane() -> None:
            try:
                while not self.stop.is_set() and step():
                    pass
            except BaseException as exc:  # handed to the caller's thread, which raises it
                errors.append(exc)
                self.stop.set()
            finally:
                if self.on_exit is not None:
                    self.on_exit()

        threads = [threading.Thread(target=lane, name=f"{self.name}-{i}", daemon=True) for i in range(1, self.count)]
        for thread in threads:
            thread.start()
        try:
            while not self.stop.is_set() and step():
                pass
        except BaseException:
            self.stop.set()
            raise
        finally:
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]
