"""Alembic migrations upgrade and downgrade cleanly, in a database of their own."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from semsim_pg.db import current_revision, downgrade, ensure_schema, get_engine, head_revision, upgrade
from semsim_pg.errors import SchemaNotInstalled


@pytest.fixture()
def empty_database(engine):  # type: ignore[no-untyped-def]
    name = f"migr_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    fresh = get_engine(url=engine.url.set(database=name).render_as_string(hide_password=False))
    yield fresh
    fresh.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def tables(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'semsim'")).scalars())


def test_upgrade_downgrade_upgrade(empty_database) -> None:  # type: ignore[no-untyped-def]
    engine = empty_database
    assert current_revision(engine) is None
    with pytest.raises(SchemaNotInstalled, match="semsim db upgrade"):
        ensure_schema(engine, migrate=False)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == {"collections", "documents", "embeddings", "query_log"}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        functions = set(
            conn.execute(
                sa.text(
                    "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace WHERE nspname = 'semsim'"
                )
            ).scalars()
        )
    assert {"search", "similar"} <= functions
    upgrade(engine)  # idempotent
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert tables(engine) == set()
    upgrade(engine)
    assert tables(engine) == {"collections", "documents", "embeddings", "query_log"}


def test_upgrade_to_lexical_search_keeps_rows_and_searches_them(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """A database filled before lexical search (migration 0005) keeps its rows, and lexical search finds them."""
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, "0002")
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    docs = [("a", "Glaciers retreat as summers warm."), ("b", "The bakery sells rye bread.")]
    with engine.begin() as conn:
        cid = conn.execute(
            sa.text(
                "INSERT INTO semsim.collections (name, model_name, dimension, metric, hnsw_m, hnsw_ef_construction)"
                " VALUES ('old', :model, :dim, 'cosine', 16, 64) RETURNING id"
            ),
            {"model": encoder.name, "dim": encoder.dimension},
        ).scalar_one()
        for external_id, text in docs:
            conn.execute(
                sa.text("INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, :x, :t)"),
                {"c": cid, "x": external_id, "t": text},
            )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.documents WHERE tsv IS NOT NULL")).scalar() == 2
    assert store.get_collection("old").text_search_config == "english"
    store.upsert("old", docs)  # the vectors (no text changed)
    assert [h.external_id for h in store.search("old", "glacier", 2, mode="lexical")] == ["a"]
    downgrade(engine, "0002")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.documents")).scalar() == 2
    upgrade(engine)
    assert [h.external_id for h in store.search("old", "bread", 2, mode="lexical")] == ["b"]
