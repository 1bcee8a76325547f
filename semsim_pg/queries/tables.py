"""The tables the query layer reads and writes: the typed models of :mod:`semsim_pg.schema`."""

from __future__ import annotations

import sqlalchemy as sa

from semsim_pg.schema import SCHEMA, Base

__all__ = ["SCHEMA", "collections", "documents", "embeddings", "qualified", "query_log"]

collections: sa.Table = Base.metadata.tables[f"{SCHEMA}.collections"]
documents: sa.Table = Base.metadata.tables[f"{SCHEMA}.documents"]
embeddings: sa.Table = Base.metadata.tables[f"{SCHEMA}.embeddings"]
query_log: sa.Table = Base.metadata.tables[f"{SCHEMA}.query_log"]


def qualified(name: str) -> str:
    """A relation of semsim's schema by name, as ``to_regclass`` and DDL want it."""
    return f"{SCHEMA}.{name}"
