"""Alembic environment for semsim's own schema.

semsim keeps its version in ``public.semsim_alembic_version`` so that it never collides with the
host application's Alembic (or Django) history. semsim passes an open connection in
``config.attributes["connection"]``; used on its own (``alembic -c ...``) this file connects to
the configured semsim database.
"""

from __future__ import annotations

from alembic import context

from semsim_pg.db import VERSION_TABLE, get_engine
from semsim_pg.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=str(get_engine().url),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        with get_engine().connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        version_table_schema="public",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
