"""Settings from the environment, the embedded server shared by processes, unreachable databases."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def test_processes_share_one_embedded_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(
        """
        import sys
        import sqlalchemy as sa
        from pathlib import Path
        from semsim_pg.server import embedded_server_url
        url = embedded_server_url(Path(sys.argv[1]))
        with sa.create_engine(url).connect() as conn:
            print(conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    # Started together they find one server (one start time); the last one out stops it.
    assert len({out.strip() for out, _ in outputs}) == 1
