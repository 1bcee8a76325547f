"""What the schema ``semsim`` holds, read from PostgreSQL's catalog (migration tests compare it
before and after an upgrade or a downgrade)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def semsim_functions(conn: sa.Connection, *columns: str) -> dict[str, tuple[object, ...]]:
    """Each function of the schema ``semsim`` by its signature (``name(argument types)``), with the
    ``columns`` asked for, expressions over ``pg_proc p`` such as ``p.prosrc`` or ``p.proacl::text``."""
    rows = conn.execute(
        sa.text(
            f"SELECT p.oid::regprocedure::text, {', '.join(columns)} FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'semsim'"
        )
    ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def assert_migrations_are_this_checkouts(*versions: str) -> None:
    """The migrations semsim runs are this checkout's (an editable install elsewhere would test
    another tree's), and they hold each of ``versions`` (file names under ``versions/``)."""
    from semsim_pg.db import migrations_dir

    assert migrations_dir() == Path(__file__).resolve().parent.parent / "migrations"
    for version in versions:
        assert (migrations_dir() / "versions" / version).is_file(), version
