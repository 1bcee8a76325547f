"""The pipelined ingest: encoding batch n+1 overlaps writing batch n, with the guarantees of a plain loop.

semsim_pg.pipeline.Prefetch on its own (order, errors in order, a clean stop), then the core
ingest built on it against the real PostgreSQL and model.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from semsim_pg.pipeline import Lanes, Prefetch

WAIT = 30.0  # seconds: only a guard against a hang, never a timing assertion


def live_threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_prefetch_returns_results_in_order_and_prepares_the_next_item_while_the_caller_works() -> None:
    started = {i: threading.Event() for i in range(4)}
    where: dict[int, str] = {}

    def prepare(i: int) -> int:
        where[i] = threading.current_thread().name
        started[i].set()
        return i * 10

    consumed = []
    with Prefetch(prepare, name="test-prefetch") as ahead:
        for result in ahead.map(range(4)):
            i = result // 10
            if i < 3:  # the next item is being prepared while this one is handled
                assert started[i + 1].wait(WAIT), f"item {i + 1} was not prepared while item {i} was handled"
            consumed.append(result)
    assert consumed == [0, 10, 20, 30]
    assert all(name.startswith("test-prefetch") for name in where.values())
    assert live_threads("test-prefetch") == []


def test_the_input_is_read_in_the_callers_thread() -> None:
    readers = []

    def items() -> Iterator[int]:
        for i in range(3):
            readers.append(threading.current_thread())
            yield i

    with Prefetch(lambda i: i, name="test-prefetch") as ahead:
        assert list(ahead.map(items())) == [0, 1, 2]
    assert set(readers) == {threading.current_thread()}


def test_an_error_in_preparing_comes_after_the_items_before_it() -> None:
    def prepare(i: int) -> int:
        if i == 2:
            raise ValueError("item 2 is bad")
        return i

    consumed = []
    with pytest.raises(ValueError, match="item 2 is bad"), Prefetch(prepare, name="test-prefetch") as ahead:
        for result in ahead.map(range(5)):
            consumed.append(result)
    assert consumed == [0, 1]
    assert live_threads("test-prefetch") == []


def test_a_caller_that_stops_stops_the_thread_and_nothing_more_is_prepared() -> None:
    prepared = []

    def prepare(i: int) -> int:
        prepared.append(i)
        return i

    with pytest.raises(KeyboardInterrupt), Prefetch(prepare, name="test-prefetch") as ahead:
        for result in ahead.map(range(100)):
            if result == 1:
                raise KeyboardInterrupt
    assert live_threads("test-prefetch") == []
    assert max(prepared) <= 2  # one item ahead at most


def test_prefetch_keeps_the_lead_it_is_given() -> None:
    """``ahead=2``: while the caller holds item 0, items 1 and 2 are both prepared; no more."""
    started = {i: threading.Event() for i in range(6)}
    prepared = []

    def prepare(i: int) -> int:
        prepared.append(i)
        started[i].set()
        return i

    with Prefetch(prepare, name="test-prefetch", ahead=2) as ahead:
        for result in ahead.map(range(6)):
            if result == 0:
                assert started[2].wait(WAIT), "item 2 was not prepared while item 0 was handled"
                assert not started[3].is_set()
                break
    assert live_threads("test-prefetch") == []
    assert prepared == [0, 1, 2]
    with pytest.raises(Exception, match="ahead >= 1"):
        Prefetch(prepare, ahead=0)


def test_map_outside_the_block_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside `with Prefetch"):
        next(Prefetch(lambda i: i).map([1]))


def test_lanes_run_the_loop_in_two_threads_encoding_in_turns() -> None:
    lanes = Lanes(2, name="test-lanes")
    lock = threading.Lock()
    todo = list(range(40))
    done: list[tuple[str, int]] = []
    inside = []  # how many steps were in their turn at once, seen from inside it
    both_started = threading.Barrier(2, timeout=WAIT)
    in_turn = 0

    def step() -> bool:
        nonlocal in_turn
        with lock:
            if not todo:
                return False
            item = todo.pop(0)
        if item in (1, 2):  # the first two items after the caller's first: one per lane, at once
            both_started.wait()
        with lanes.turn:
            with lock:
                in_turn += 1
                inside.append(in_turn)
            with lock:
                in_turn -= 1
        with lock:
            done.append((threading.current_thread().name, item))
        return True

    lanes.run(step)
    assert sorted(item for _, item in done) == list(range(40))
    assert {name for name, _ in done} == {threading.current_thread().name, "test-lanes-1"}
    assert max(inside) == 1
    assert live_threads("test-lanes") == []


def test_lanes_start_no_thread_for_a_job_of_one_step() -> None:
    names = []

    def step() -> bool:
        names.append(threading.current_thread().name)
        return False

    Lanes(2, name="test-lanes").run(step)
    assert names == [threading.current_thread().name]


@pytest.mark.parametrize("failing", ["caller", "lane"])
def test_an_error_in_any_lane_stops_every_lane_and_is_raised(failing: str) -> None:
    lanes = Lanes(2, name="test-lanes")
    calls: list[str] = []
    lane_running = threading.Event()

    def step() -> bool:
        me = "caller" if threading.current_thread() is threading.main_thread() else "lane"
        calls.append(me)
        if calls == ["caller"]:
            return True  # the caller's first step: the other lane starts
        if me == "lane":
            lane_running.set()
        else:
            assert lane_running.wait(WAIT)
        if me == failing:
            raise KeyboardInterrupt if failing == "caller" else RuntimeError("lane failed")
        return not lanes.stop.wait(WAIT)  # the other lane runs until told to stop

    with pytest.raises(KeyboardInterrupt if failing == "caller" else RuntimeError):
        lanes.run(step)
    assert lanes.stop.is_set()
    assert live_threads("test-lanes") == []


def docs(n: int) -> list[tuple[str, str]]:
    return [(f"d{i}", f"Sentence number {i} about a quiet lake") for i in range(n)]


def test_ingest_encodes_the_next_batch_while_it_writes_this_one(store, collection_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.store import ingest

    prepared_second = threading.Event()
    overlapped = []
    prepare, write = ingest.prepare_batch, ingest.write_batch

    def spy_prepare(store, coll, encoder, batch, start, given, **options):  # type: ignore[no-untyped-def]
        result = prepare(store, coll, encoder, batch, start, given, **options)
        if start == 2:
            prepared_second.set()
        return result

    def spy_write(store, batch):  # type: ignore[no-untyped-def]
        if batch.start == 0:  # hold the first write until the second batch is encoded
            overlapped.append(prepared_second.wait(WAIT))
        return write(store, batch)

    monkeypatch.setattr(ingest, "prepare_batch", spy_prepare)
    monkeypatch.setattr(ingest, "write_batch", spy_write)
    store.create_collection(collection_name)
    result = store.upsert(collection_name, docs(6), batch_size=2)
    assert overlapped == [True]
    assert (result.inserted, result.encoded) == (6, 6)
    assert store.stale_count(collection_name) == 0
    assert live_threads("semsim-ingest") == []


def test_an_interrupted_ingest_keeps_the_batches_written_and_leaves_no_thread(
    store, collection_name, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.store import ingest

    write = ingest.write_batch

    def interrupted(store, batch):  # type: ignore[no-untyped-def]
        if batch.start == 4:
            raise KeyboardInterrupt  # Ctrl-C while the third batch would be written
        return write(store, batch)

    monkeypatch.setattr(ingest, "write_batch", interrupted)
    store.create_collection(collection_name)
    with pytest.raises(KeyboardInterrupt):
        store.upsert(collection_name, docs(10), batch_size=2, defer_index=True)
    assert live_threads("semsim-ingest") == []
    assert store.count(collection_name) == 4  # two whole batches, nothing of the third
    assert store.stale_count(collection_name) == 0
    assert store.index_state(collection_name) == "valid"  # the deferred index was built all the same
    # the same load again finishes the job and encodes only what was missing
    monkeypatch.setattr(ingest, "write_batch", write)
    result = store.upsert(collection_name, docs(10), batch_size=2)
    assert (result.unchanged, result.inserted, result.encoded) == (4, 6, 6)


def test_a_deferred_index_is_built_once_after_the_last_batch_from_every_row(
    store, collection_name, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.store import ingest

    builds: list[tuple[str, int]] = []
    written: list[int] = []
    write, build = ingest.write_batch, store.build_index

    def counting_write(store, batch):  # type: ignore[no-untyped-def]
        result = write(store, batch)
        written.append(batch.start)
        return result

    def recorded_build(name, **kwargs):  # type: ignore[no-untyped-def]
        builds.append((threading.current_thread().name, len(written)))
        return build(name, **kwargs)

    monkeypatch.setattr(ingest, "write_batch", counting_write)
    monkeypatch.setattr(store, "build_index", recorded_build)
    coll = store.create_collection(collection_name)
    store.upsert(collection_name, docs(10), batch_size=2, defer_index=True)
    # one build, after all five batches were written (the index was dropped for the load)
    assert [written_before for _, written_before in builds] == [5], builds
    assert store.index_state(collection_name) == "valid"
    assert store.count(collection_name) == 10 and store.stale_count(collection_name) == 0
    # every row is in the graph: an index scan asked for 100 neighbours returns all 10
    from semsim_pg.queries import index_name

    plan = store.explain(collection_name, "a quiet lake", k=100, force_index=True, analyze=True)
    scan = re.search(rf"Index Scan using {index_name(coll.id, coll.model_name)}.*?actual.*?rows=([\d.]+) loops", plan)
    assert scan is not None, plan
    assert float(scan.group(1)) == 10, plan
