"""Index builds that meet: two rebuilds at once, a rebuild's swap behind a long reader, and the
second index an interrupted rebuild leaves behind. The real CLI, waits observed in PostgreSQL."""

from __future__ import annotations

import select
import subprocess
import time

import pytest
import sqlalchemy as sa

from semsim_pg import queries
from semsim_pg.queries.tables import embeddings, qualified
from tests import test_interrupts
from tests.test_interrupts import POLLING, REACH_S, holding, index_options, start_cli, wait_until_waiting

indexed = test_interrupts.indexed  # the fixture: a collection with an index of m 16, ef_construction 64


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=REACH_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def first_line_or_drop_index_wait(admin: sa.Engine, proc: subprocess.Popen[str]) -> str:
    """The first line ``proc`` writes to stderr; fails at once if a DROP INDEX waits on a lock
    instead (before the fix it waited behind the build, and the build then waited for it)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + REACH_S
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.1)[0]:  # polling interval, not a timing assertion
            return proc.stderr.readline()
        with admin.connect() as conn:
            if conn.execute(sa.text(DROP_WAITS)).scalar():
                proc.kill()
                pytest.fail("the drop waited in DROP INDEX behind the running build")
    proc.kill()
    pytest.fail("the drop neither waited for the build nor ended")


DROP_WAITS = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DROP INDEX%'"


def test_two_rebuilds_at_once_both_finish(engine, admin, store, indexed) -> None:  # type: ignore[no-untyped-def]
    """The second waited in pg_advisory_lock, a statement, and the first's CREATE INDEX CONCURRENTLY
    waited for that statement: DeadlockDetected, with a traceback."""
    coll = indexed
    lock_writes = f"LOCK TABLE {qualified(embeddings.name)} IN ROW EXCLUSIVE MODE"
    with holding(admin, lambda conn: conn.exec_driver_sql(lock_writes)) as release:
        first = start_cli(engine, "-q", "index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40")
        wait_until_waiting(admin, first, "CREATE INDEX CONCURRENTLY%")
        second = start_cli(engine, "-q", "index", "rebuild", "-c", coll.name, "--m", "12", "--ef-construction", "48")
        wait_until_waiting(admin, second, "%pg_%advisory_lock(%", POLLING)
        release()
        results = [(proc, *finish(proc)) for proc in (first, second)]
    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "deadlock" not in err.lower()
    after = store.get_collection(coll.name)
    assert (after.hnsw_m, after.hnsw_ef_construction) == (12, 48)
    assert index_options(admin, queries.index_name(coll.id, coll.model_name)) == ["m=12", "ef_construction=48"]
    assert index_options(admin, queries.staging_index_name(coll.id, coll.model_name)) is None


def test_a_swap_behind_a_long_reader_gives_up_and_the_next_rebuild_swaps_the_kept_index(  # type: ignore[no-untyped-def]
    engine, admin, store, indexed
) -> None:
    """The swap waited for the table without a limit (every search queued behind it)."""
    coll = indexed
    name, staging = queries.index_name(coll.id, coll.model_name), queries.staging_index_name(coll.id, coll.model_name)
    read_lock = f"LOCK TABLE {qualified(embeddings.name)} IN ACCESS SHARE MODE"
    args = ("-q", "index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40")
    with holding(admin, lambda conn: conn.exec_driver_sql(read_lock)):
        proc = start_cli(engine, *args)
        _out, err = finish(proc)
        assert proc.returncode != 0
        assert len(err.strip().splitlines()) == 1 and "could not be swapped in" in err, err
        assert index_options(admin, name) == ["m=16", "ef_construction=64"]  # the old one stays
        assert index_options(admin, staging) == ["m=8", "ef_construction=40"]  # the new one kept
    proc = start_cli(engine, *args)
    _out, err = finish(proc)
    assert proc.returncode == 0, err
    assert index_options(admin, name) == ["m=8", "ef_construction=40"]
    assert index_options(admin, staging) is None
    assert store.get_collection(coll.name).hnsw_m == 8


def test_a_leftover_new_index_is_reported_and_index_check_drops_it(admin, store, indexed, capsys) -> None:  # type: ignore[no-untyped-def]
    """A kill -9 during the build left a valid second index (searched, written by every insert):
    nothing said so, and only a later rebuild dropped it."""
    from semsim_pg.cli.main import main

    coll = indexed
    staging = queries.staging_index_name(coll.id, coll.model_name)
    with admin.connect() as conn:
        conn.exec_driver_sql(queries.create_index(coll, 8, 16, name=staging))
        conn.commit()
    capsys.readouterr()
    assert main(["collections"]) == 0
    assert staging in capsys.readouterr().out
    # a running build (the lock held) may own it: the check leaves it alone then
    with holding(admin, lambda conn: conn.execute(queries.try_lock_index_build())):
        main(["index", "check", "-c", coll.name, "--sample", "5"])
        assert index_options(admin, staging) == ["m=8", "ef_construction=16"]
    capsys.readouterr()
    main(["index", "check", "-c", coll.name, "--sample", "5"])
    assert f"dropped the index {staging}" in capsys.readouterr().out
    assert index_options(admin, staging) is None
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": f"semsim.{staging}"}).scalar() is None


def test_dropping_a_collection_during_its_rebuild_waits_for_it(engine, admin, store, indexed) -> None:  # type: ignore[no-untyped-def]
    """The drop's DROP INDEX waited for the table behind the build CONCURRENTLY, which waited for the
    drop's transaction: DeadlockDetected, with a traceback."""
    coll = indexed
    lock_writes = f"LOCK TABLE {qualified(embeddings.name)} IN ROW EXCLUSIVE MODE"
    with holding(admin, lambda conn: conn.exec_driver_sql(lock_writes)) as release:
        rebuild = start_cli(engine, "-q", "index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40")
        wait_until_waiting(admin, rebuild, "CREATE INDEX CONCURRENTLY%")
        drop = start_cli(engine, "-q", "collections", "--drop", coll.name)
        # it polls the lock in a transaction it rolls back each time: its log line says it waits
        assert "waiting for another index build" in first_line_or_drop_index_wait(admin, drop)
        release()
        results = [(proc, *finish(proc)) for proc in (rebuild, drop)]
    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "deadlock" not in err.lower()
    assert coll.name not in [c.name for c in store.list_collections()]
    assert index_options(admin, queries.index_name(coll.id, coll.model_name)) is None
