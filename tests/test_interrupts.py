"""Ctrl-C and SIGTERM sent to the real command line while it waits in an SQL statement, and what
an interrupted `semsim index rebuild` leaves (the old index, its parameters, no half-built one).

Each test starts the CLI in a subprocess, makes it wait inside a statement on a lock the test
holds, polls PostgreSQL until it does (no sleeps), then sends the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from semsim_pg import queries
from semsim_pg.queries.tables import embeddings, qualified

CLI = "import sys\nfrom semsim_pg.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
#: how long the CLI may take to start (imports under a loaded machine) and reach its statement
REACH_S = 300.0


def as_from_a_terminal() -> None:
    """Ctrl-C's default, as a shell gives it: a suite run in the background (`pytest &`) inherits
    SIGINT ignored, and Python then never turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(engine: sa.Engine, *args: str, script: str = CLI) -> subprocess.Popen[str]:
    env = {**os.environ, "SEMSIM_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=as_from_a_terminal,
    )


#: a session waiting in a statement on a lock
IN_A_STATEMENT = "wait_event_type = 'Lock'"
#: a builder polling the index-build lock (idle between tries), or one waiting in the statement
POLLING = "(state = 'idle' OR wait_event_type = 'Lock')"


def wait_until_waiting(
    admin: sa.Engine, proc: subprocess.Popen[str], statement_like: str, how: str = IN_A_STATEMENT
) -> None:
    """Poll until a session runs (or last ran) a statement LIKE ``statement_like`` and waits ``how``."""
    deadline = time.monotonic() + REACH_S
    probe = sa.text(
        f"SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND {how} AND query LIKE :like"
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the CLI ended (rc {proc.returncode}) before it waited in {statement_like!r}: {out}{err}")
        with admin.connect() as conn:
            if conn.execute(probe, {"like": statement_like}).scalar():
                return
        time.sleep(0.1)  # polling interval, not a timing assertion
    proc.kill()
    pytest.fail(f"the CLI never waited in a statement like {statement_like!r}")


@contextmanager
def holding(admin: sa.Engine, hold: Callable[[sa.Connection], Any]) -> Iterator[Callable[[], None]]:
    """A transaction of the test's that ran ``hold`` (takes a lock); ``release()`` commits it."""
    conn = admin.connect()
    conn.exec_driver_sql("BEGIN")
    hold(conn)

    def release() -> None:
        if not conn.closed:
            conn.exec_driver_sql("COMMIT")
            conn.close()

    try:
        yield release
    finally:
        release()


def index_options(admin: sa.Engine, name: str) -> list[str] | None:
    with admin.connect() as conn:
        return conn.execute(
            sa.text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:name)"),
            {"name": f"semsim.{name}"},
        ).scalar()


@pytest.fixture()
def indexed(store: Any, collection_name: str) -> Any:
    store.create_collection(collection_name, m=16, ef_construction=64)
    store.upsert(collection_name, [(f"d{i}", f"sentence number {i} about cats") for i in range(8)])
    coll = store.get_collection(collection_name)
    assert store.index_state(coll) == "valid"
    return coll


def assert_unchanged(store: Any, admin: sa.Engine, coll: Any) -> None:
    after = store.get_collection(coll.name)
    assert (after.hnsw_m, after.hnsw_ef_construction) == (16, 64)  # the new ones were not saved
    assert store.index_state(coll.name) == "valid"  # the old index stayed, searched
    assert index_options(admin, queries.index_name(coll.id, coll.model_name)) == ["m=16", "ef_construction=64"]
    assert index_options(admin, queries.index_name(coll.id, coll.model_name) + "_new") is None  # nothing half-built
    assert store.search(coll.name, "sentence number 3 about cats", k=1)[0].external_id == "d3"


def test_ctrl_c_while_a_rebuild_waits_is_interrupted_and_changes_nothing(  # type: ignore[no-untyped-def]
    engine, admin, store, indexed
) -> None:
    """It said "The connection to PostgreSQL ... was lost (KeyboardInterrupt)", exit 1, and left the
    collection without an index (dropped before the build) and with the new m/ef_construction."""
    coll = indexed
    # another build of this collection holds the build lock (an ingest's): the rebuild waits for it
    with holding(admin, lambda conn: conn.execute(queries.try_lock_index_build())):
        proc = start_cli(engine, "-q", "index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40")
        wait_until_waiting(admin, proc, "%pg_try_advisory_lock(%", POLLING)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=REACH_S)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "semsim: interrupted" and "lost" not in err and "Traceback" not in err
    assert out == ""
    assert_unchanged(store, admin, coll)


def test_sigterm_during_the_build_keeps_the_old_index_and_drops_the_new_one(  # type: ignore[no-untyped-def]
    engine, admin, store, indexed
) -> None:
    """SIGTERM (kill, docker stop) while the new index is being built: the old one answers meanwhile
    and stays; the unfinished one (written to by every insert) is dropped; exit 143."""
    coll = indexed
    # a writer's transaction still open: a build CONCURRENTLY waits for it to end
    lock_writes = f"LOCK TABLE {qualified(embeddings.name)} IN ROW EXCLUSIVE MODE"
    with holding(admin, lambda conn: conn.exec_driver_sql(lock_writes)) as release:
        proc = start_cli(engine, "-q", "index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40")
        wait_until_waiting(admin, proc, "CREATE INDEX CONCURRENTLY%")
        assert store.index_state(coll.name) == "valid"  # the old index, during the build
        proc.send_signal(signal.SIGTERM)
        release()  # so that the unfinished index can be dropped
        _out, err = proc.communicate(timeout=REACH_S)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "semsim: terminated" and "lost" not in err and "Traceback" not in err
    assert_unchanged(store, admin, coll)


def test_a_rebuild_swaps_the_new_index_in_with_its_parameters(store, admin, indexed, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    coll = indexed
    # a killed rebuild's leftover (kill -9 leaves no cleanup): the next rebuild drops it first
    with admin.connect() as conn:
        conn.exec_driver_sql(
            queries.create_index(coll, 8, 16, name=queries.index_name(coll.id, coll.model_name) + "_new")
        )
    assert main(["index", "rebuild", "-c", coll.name, "--m", "8", "--ef-construction", "40"]) == 0
    assert "m 8, ef_construction 40" in capsys.readouterr().out
    after = store.get_collection(coll.name)
    assert (after.hnsw_m, after.hnsw_ef_construction) == (8, 40)
    assert store.index_state(coll.name) == "valid"
    assert index_options(admin, queries.index_name(coll.id, coll.model_name)) == ["m=8", "ef_construction=40"]
    assert index_options(admin, queries.index_name(coll.id, coll.model_name) + "_new") is None
    assert store.search(coll.name, "sentence number 5 about cats", k=1)[0].external_id == "d5"

    # the build lock was released with the rebuild: an ingest's build does not wait for it
    def build_lock(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")  # fails the test rather than hang it
        assert conn.execute(queries.try_lock_index_build()).scalar()

    with holding(admin, build_lock):
        pass


# A CLI whose `import transformers` (seconds, at start-up) waits for the signal after saying so.
SLOW_START = """
import importlib.abc, pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
class SlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "transformers":
            marker.write_text("importing")
            while True:
                time.sleep(0.05)
        return None
sys.meta_path.insert(0, SlowImport())
from semsim_pg.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGINT, 130, "semsim: interrupted"), (signal.SIGTERM, 143, "semsim: terminated")],
)
def test_a_signal_during_start_up_is_one_line(engine, tmp_path, signum, code, line) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C in the first seconds of any command (while transformers is imported) printed a
    20-line KeyboardInterrupt traceback; SIGTERM then ended Python with no message."""
    marker = tmp_path / "importing"
    proc = start_cli(engine, str(marker), "-q", "db", "current", script=SLOW_START)
    deadline = time.monotonic() + REACH_S
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the CLI never imported transformers: {proc.communicate()}")
        time.sleep(0.05)  # polling interval, not a timing assertion
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=REACH_S)
    assert (proc.returncode, err.strip(), out) == (code, line, "")
