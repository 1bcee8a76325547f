"""A PostgreSQL role of a test's own (privilege tests), made and dropped by the superuser."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

#: the README's grants for a BI tool's role ("A reader role")
README_READER_GRANTS = (
    "GRANT USAGE ON SCHEMA semsim TO {role}",
    "GRANT SELECT ON semsim.collections, semsim.documents, semsim.embeddings TO {role}",
    "GRANT SELECT ON public.semsim_alembic_version TO {role}",
)


@contextlib.contextmanager
def temporary_role(admin: sa.Engine, *grants: str) -> Iterator[str]:
    """A new role; each of ``grants`` (with ``{role}`` for its name) is run for it; dropped after,
    with whatever it was granted."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role}"))
        for grant in grants:
            conn.execute(sa.text(grant.format(role=role)))
    try:
        yield role
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
