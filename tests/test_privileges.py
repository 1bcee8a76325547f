"""A role that lacks a privilege gets one line naming it and the fix, never a traceback: the
CLI (exit 1) and the Python API (:class:`PermissionDenied`, :class:`ExtensionMissing`).

The roles are real PostgreSQL roles without LOGIN: the session's login (the embedded server
admits only its own user) takes them on with ``options=-c role=NAME`` in the URL, which makes
them ``current_user`` for every privilege check, as a login of their own would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa

from semsim_pg.cli import main
from semsim_pg.db import get_engine, upgrade
from semsim_pg.errors import ExtensionMissing, PermissionDenied
from tests.roles import temporary_role

FAQ_FILE = Path(str(resources.files("semsim_pg.data").joinpath("faq_entries.tsv")))


@pytest.fixture()
def role(admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with temporary_role(admin) as name:
        yield name


def as_role(url: sa.URL, role: str, database: str | None = None) -> str:
    if database is not None:
        url = url.set(database=database)
    return url.update_query_dict({"options": f"-c role={role}"}).render_as_string(hide_password=False)


@pytest.fixture()
def cli_as(settings) -> Iterator:  # type: ignore[no-untyped-def,type-arg]
    """Run the CLI with SEMSIM_DATABASE_URL set to a URL; the engines it made are closed after."""
    from semsim_pg.settings import configure

    urls: list[str] = []

    def run(capsys, url: str, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
        urls.append(url)
        configure(settings.replace(database_url=url))
        try:
            code = main(["-q", *args])
        finally:
            configure(settings)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    for url in urls:
        get_engine(url=url).dispose()


@pytest.fixture()
def database(admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database of its own (no vector extension)."""
    name = f"priv_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def one_line(code: int, out: str, err: str) -> str:
    # the model's loading bar may come first (transformers prints it past -q): not semsim's output
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith("semsim: error: "), err
    return lines[0]


def test_upgrade_as_a_role_that_cannot_create_the_extension_says_who_must(  # type: ignore[no-untyped-def]
    capsys, engine, admin, role, database, cli_as
) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO {role}'))
    url = as_role(engine.url, role, database)
    err = one_line(*cli_as(capsys, url, "db", "upgrade"))
    assert (
        f"pgvector is available but not installed in database {database} and role {role} cannot create it: "
        f"have a superuser run CREATE EXTENSION vector; in {database}, then semsim db upgrade"
    ) in err
    with pytest.raises(ExtensionMissing, match="have a superuser run CREATE EXTENSION vector"):
        upgrade(get_engine(url=url))
    # once a superuser made it, the owner installs semsim's schema itself
    with sa.create_engine(engine.url.set(database=database), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION vector"))
    code, out, err = cli_as(capsys, url, "db", "upgrade")
    assert code == 0 and "semsim schema at" in out, err


def test_a_failed_migration_shows_its_cause_not_the_failed_unlock(  # type: ignore[no-untyped-def]
    capsys, engine, admin, role, database, cli_as
) -> None:
    """A role that may connect but not create in the database: the migration fails at its first
    statement, and that refusal (not "current transaction is aborted" from the unlock) is shown."""
    with sa.create_engine(engine.url.set(database=database), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION vector"))
    url = as_role(engine.url, role, database)
    err = one_line(*cli_as(capsys, url, "db", "upgrade"))
    assert f"role {role} lacks a privilege: permission denied for " in err and "aborted" not in err, err
    with pytest.raises(PermissionDenied, match="permission denied for"):
        upgrade(get_engine(url=url))
    # the migration lock was released: another migration runs at once
    with get_engine(url=engine.url.set(database=database).render_as_string(hide_password=False)).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar() == 0


@pytest.fixture()
def reader(engine, admin, role) -> str:  # type: ignore[no-untyped-def]
    """The role may read semsim's tables and nothing more."""
    with admin.connect() as conn:
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA semsim TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA semsim TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT ON public.semsim_alembic_version TO {role}"))
    return role


def test_a_read_only_role_gets_one_line_from_every_writing_command(  # type: ignore[no-untyped-def]
    capsys, engine, encoder, store, collection_name, reader, cli_as, tmp_path
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(["a cat", "a dog"])))
    store.create_collection(collection_name)
    store.upsert(collection_name, [("x", "a fish")], progress=False)
    url = as_role(engine.url, reader)
    fix = "(grant it, or use the role that owns semsim's schema)"
    for args in (
        ("ingest", str(docs), "-c", collection_name),
        ("collections", "--drop", collection_name),
        ("faq", "import", str(FAQ_FILE), "-c", f"{collection_name}_faq"),
    ):
        err = one_line(*cli_as(capsys, url, *args))
        assert f"semsim: error: role {reader} lacks a privilege: " in err and err.rstrip().endswith(fix), (args, err)
    # reading still works, and nothing was written or dropped
    code, out, err = cli_as(capsys, url, "collections")
    assert code == 0 and collection_name in out and f"{collection_name}_faq" not in out, err
    assert store.count(collection_name) == 1

    from semsim_pg.store import DocumentStore

    as_reader = DocumentStore(url, encoder=encoder)
    with pytest.raises(PermissionDenied, match=f"role {reader} lacks a privilege: permission denied for table"):
        as_reader.upsert(collection_name, [("y", "a bird")], progress=False)
    assert [h.external_id for h in as_reader.search(collection_name, "fish", 1)] == ["x"]
    with sa.create_engine(engine.url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f"REVOKE SELECT ON semsim.embeddings FROM {reader}"))
    # a search runs through psycopg itself, past the engine: the same line
    with pytest.raises(
        PermissionDenied, match=f"role {reader} lacks a privilege: permission denied for table embeddings"
    ):
        as_reader.search(collection_name, "fish", 1)


def test_a_refusal_after_set_role_names_the_role_in_use_not_the_login(engine, admin, role) -> None:  # type: ignore[no-untyped-def]
    """The README tries a reader role on the embedded server with SET ROLE: a statement refused
    then names that role (current_user of the connection refused), not the login role; in a
    transaction (the failed connection cannot answer), after a rollback undid a SET ROLE, with
    SET LOCAL, and in autocommit (the connection can answer)."""
    with admin.connect() as conn:
        login = conn.execute(sa.text("SELECT session_user")).scalar_one()
    refused = "SELECT count(*) FROM semsim.query_log"
    with temporary_role(admin) as other, engine.connect() as conn:  # semsim's engine: errors translated
        assert login not in (role, other)
        conn.execute(sa.text(f"SET ROLE {role}"))
        with pytest.raises(
            PermissionDenied, match=f"^role {role} lacks a privilege: permission denied for schema semsim"
        ):
            conn.execute(sa.text(refused))
        conn.rollback()
        conn.execute(sa.text(f"SET ROLE {role}"))
        conn.commit()  # the session's role now, past its transaction
        conn.execute(sa.text(f"SET ROLE {other}"))
        conn.rollback()  # undone
        with pytest.raises(PermissionDenied, match=f"^role {role} lacks a privilege"):
            conn.execute(sa.text(refused))
        conn.rollback()
        conn.execute(sa.text(f"SET LOCAL ROLE {other}"))
        with pytest.raises(PermissionDenied, match=f"^role {other} lacks a privilege"):
            conn.execute(sa.text(refused))
        conn.rollback()
        with pytest.raises(PermissionDenied, match=f"^role {role} lacks a privilege"):
            conn.execute(sa.text(refused))
        conn.rollback()
        conn.execute(sa.text("RESET ROLE"))
        conn.commit()
        assert conn.execute(sa.text("SELECT current_user")).scalar_one() == login
        conn.rollback()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"SET ROLE {role}"))
        try:
            with pytest.raises(PermissionDenied, match=f"^role {role} lacks a privilege"):
                conn.execute(sa.text(refused))
        finally:
            conn.execute(sa.text("RESET ROLE"))
