"""The HNSW index of each (collection, model): its name, its DDL, and how a query uses it.

Each (collection, model) has a partial HNSW index on ``embeddings``, on the vector cast to the
model's dimension, so collections of different models and dimensions share one table. A query
uses it only if it repeats the cast and the predicate with literal values; both are built here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector

from semsim_pg.queries.tables import documents, embeddings, qualified
from semsim_pg.sql import METRICS

__all__ = [
    "TRAVERSAL_SETTINGS",
    "IndexedCollection",
    "axis_vector",
    "bulk_load_running",
    "collection_indexes",
    "create_index",
    "create_text_index",
    "drop_index",
    "hnsw_index_bytes",
    "hold_bulk_load",
    "index_name",
    "index_options",
    "index_predicate",
    "index_size",
    "index_traversal",
    "index_validity",
    "indexed_vectors",
    "inline",
    "pg_prewarm",
    "pg_prewarm_installed",
    "query_vector",
    "reindex",
    "release_bulk_load",
    "release_index_build",
    "rename_index",
    "shared_buffers_bytes",
    "staging_index_name",
    "text_index_name",
    "traversal_settings",
    "try_hold_index_build",
    "try_lock_index_build",
]

e = embeddings.c


class IndexedCollection(Protocol):
    """What the statements need of a collection (``semsim_pg.store.Collection`` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def model_name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def metric(self) -> str: ...


def index_name(collection_id: int, model_name: str) -> str:
    digest = hashlib.sha1(model_name.encode("utf-8")).hexdigest()[:10]
    return f"embeddings_hnsw_c{collection_id}_{digest}"


def staging_index_name(collection_id: int, model_name: str) -> str:
    """Where a rebuild builds the new index beside the old one (renamed to :func:`index_name` once
    valid). It matches :func:`collection_indexes`, so dropping the collection drops a leftover."""
    return f"{index_name(collection_id, model_name)}_new"


def inline(value: Any) -> sa.BindParameter[Any]:
    """A value rendered as a literal at execution, not sent as a parameter.

    psycopg prepares a statement it has run 5 times, and PostgreSQL then plans it once (a
    generic plan) if that plan is no worse than the ones made for each value. Where a value
    decides the plan, the generic plan must see it: a partial index's predicate can only be
    proven with the literal values, and ``LIMIT k`` makes the ordered index scan cheap (with an
    unknown limit the generic plan looks costlier, and every search would be planned again)."""
    return sa.bindparam(None, value, literal_execute=True)


def query_vector(vector: str, dimension: int) -> sa.ColumnElement[Any]:
    """The query vector as the statement's parameter ``q``, cast to the model's dimension.

    ``vector`` is pgvector's text form; a caller may bind ``q`` to a NumPy array at execution
    instead, which psycopg sends in pgvector's binary form once pgvector's types are registered
    on the connection (semsim_pg.db.vector_connection). Untyped, so that no cast to text is
    written around it (the binary form would be turned to text and parsed back)."""
    return sa.cast(sa.bindparam("q", vector, type_=sa.types.NullType()), Vector(int(dimension)))


def index_predicate(collection_id: int, model_name: str) -> sa.ColumnElement[bool]:
    return sa.and_(e.collection_id == inline(int(collection_id)), e.model_name == inline(model_name))


def indexed_vectors(dimension: int) -> sa.ColumnElement[Any]:
    """The indexed expression: the vector cast to the model's dimension."""
    return sa.cast(e.embedding, Vector(int(dimension)))


def _literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a SQL literal cannot hold a NUL character")
    return "'" + value.replace("'", "''") + "'"


def create_index(
    coll: IndexedCollection,
    m: int,
    ef_construction: int,
    *,
    model: str | None = None,
    concurrently: bool = False,
    name: str | None = None,
) -> str:
    """CREATE INDEX for ``model`` (default: the collection's) vectors of the collection, named
    ``name`` (default: :func:`index_name`).

    Literal SQL: PostgreSQL takes no parameters in DDL, and the partial index predicate must
    hold the literal values a query repeats."""
    model = coll.model_name if model is None else model
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {name or index_name(coll.id, model)} ON {qualified(embeddings.name)} "
        f"USING hnsw ((embedding::vector({int(coll.dimension)})) {METRICS[coll.metric].opclass}) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE collection_id = {int(coll.id)} AND model_name = {_literal(model)}"
    )


def text_index_name(collection_id: int) -> str:
    return f"documents_tsv_c{int(collection_id)}"


def create_text_index(collection_id: int) -> str:
    """CREATE INDEX of the collection's words: GIN over ``documents.tsv``, partial on the collection.

    One per collection, as the HNSW indexes are. One GIN index over every collection's documents
    also held the other collections' matches, each rechecked against the table: counting the
    documents of four query words among 5,183 SciFact abstracts beside 125,000 other documents
    took 4.8 ms through it, 1.4 ms through the collection's own; and the planner, misjudging the
    shared index, at times read the collection's rows one by one through the unique index
    instead (39 ms for the four words, 153 ms a lexical search). Lexical statements write the
    collection id as a literal, so the planner proves the predicate."""
    name = text_index_name(collection_id)
    return (
        f"CREATE INDEX IF NOT EXISTS {name} ON {qualified(documents.name)} USING gin (tsv) "
        f"WHERE collection_id = {int(collection_id)}"
    )


def drop_index(name: str, *, concurrently: bool = False) -> str:
    """DROP INDEX (DDL takes no parameters; ``name`` comes from :func:`index_name`)."""
    how = "CONCURRENTLY " if concurrently else ""
    return f"DROP INDEX {how}IF EXISTS {qualified(name)}"


def rename_index(name: str, new_name: str) -> str:
    return f"ALTER INDEX {qualified(name)} RENAME TO {new_name}"


def reindex(name: str) -> str:
    return f"REINDEX INDEX {qualified(name)}"


def index_validity(name: str) -> sa.Select[Any]:
    """True (a valid index), False (one an interrupted CONCURRENTLY build left), or no row."""
    pg_index = sa.table("pg_index", sa.column("indisvalid"), sa.column("indexrelid"), schema="pg_catalog")
    return sa.select(pg_index.c.indisvalid).where(pg_index.c.indexrelid == sa.func.to_regclass(qualified(name)))


# Advisory lock keys (two int4): a class of semsim's locks, then the collection id.
_BULK_LOAD = 0x53454D4C  # held (shared) by every load that dropped the index to build it at the end
_INDEX_BUILD = 0x53454D49  # held while an index is built, so two builders never race


def hold_bulk_load(collection_id: int) -> sa.Select[Any]:
    """Mark a bulk load of the collection as running, for the session (it dies with the process)."""
    return sa.select(sa.func.pg_advisory_lock_shared(_BULK_LOAD, int(collection_id)))


def release_bulk_load(collection_id: int) -> sa.Select[Any]:
    return sa.select(sa.func.pg_advisory_unlock_shared(_BULK_LOAD, int(collection_id)))


def bulk_load_running(collection_id: int) -> sa.Select[Any]:
    """Whether some session holds the bulk-load mark of the collection (read from pg_locks:
    a two-key advisory lock shows its keys as classid and objid, with objsubid 2)."""
    pg_locks = sa.table(
        "pg_locks",
        sa.column("locktype"),
        sa.column("classid"),
        sa.column("objid"),
        sa.column("objsubid"),
        sa.column("granted"),
        schema="pg_catalog",
    )
    held = sa.select(sa.literal(1)).where(
        pg_locks.c.locktype == "advisory",
        sa.cast(pg_locks.c.classid, sa.BigInteger) == _BULK_LOAD,
        sa.cast(pg_locks.c.objid, sa.BigInteger) == int(collection_id),
        pg_locks.c.objsubid == 2,
        pg_locks.c.granted,
    )
    return sa.select(held.exists())


def try_lock_index_build() -> sa.Select[Any]:
    """Take the index-build lock until the transaction ends, if free (True), without waiting.

    One lock for every index build on ``embeddings`` (whatever the collection): two builds on one
    table cannot run together anyway, and one that waited in a statement for another (the lock,
    or the table) deadlocked with it, as a build CONCURRENTLY waits for every open transaction.
    So a builder never waits inside a transaction: it polls this, and sleeps between tries."""
    return sa.select(sa.func.pg_try_advisory_xact_lock(_INDEX_BUILD, 0))


def try_hold_index_build() -> sa.Select[Any]:
    """:func:`try_lock_index_build` for the session: a CONCURRENTLY build runs outside a transaction."""
    return sa.select(sa.func.pg_try_advisory_lock(_INDEX_BUILD, 0))


def release_index_build() -> sa.Select[Any]:
    return sa.select(sa.func.pg_advisory_unlock(_INDEX_BUILD, 0))


def index_options(name: str) -> sa.Select[Any]:
    """The index's storage parameters (``['m=16', 'ef_construction=64']``; no row: no such index)."""
    pg_class = sa.table("pg_class", sa.column("oid"), sa.column("reloptions"), schema="pg_catalog")
    return sa.select(pg_class.c.reloptions).where(pg_class.c.oid == sa.func.to_regclass(qualified(name)))


def index_size(name: str) -> sa.Select[Any]:
    """Bytes on disk (NULL when the index does not exist)."""
    return sa.select(sa.func.pg_relation_size(sa.func.to_regclass(qualified(name))))


def collection_indexes(collection_id: int) -> sa.Select[Any]:
    """The names of every index of the collection (one per model that has one)."""
    pg_indexes = sa.table("pg_indexes", sa.column("schemaname"), sa.column("indexname"), schema="pg_catalog")
    return sa.select(pg_indexes.c.indexname).where(
        pg_indexes.c.schemaname == embeddings.schema,
        pg_indexes.c.indexname.like(f"embeddings\\_hnsw\\_c{int(collection_id)}\\_%"),
    )


def pg_prewarm_installed() -> sa.Select[Any]:
    """Whether the database has the pg_prewarm extension (contrib; ``CREATE EXTENSION pg_prewarm``)."""
    pg_extension = sa.table("pg_extension", sa.column("extname"), schema="pg_catalog")
    return sa.select(sa.select(sa.literal(1)).where(pg_extension.c.extname == "pg_prewarm").exists())


def pg_prewarm(name: str) -> sa.Select[Any]:
    """Read every block of the index into shared buffers; the number of blocks read."""
    return sa.select(sa.func.pg_prewarm(sa.func.to_regclass(qualified(name))))


def hnsw_index_bytes() -> sa.Select[Any]:
    """The size of semsim's HNSW indexes together (0 before the schema exists)."""
    pg_index = sa.table("pg_index", sa.column("indexrelid"), sa.column("indrelid"), schema="pg_catalog")
    pg_class = sa.table("pg_class", sa.column("oid"), sa.column("relam"), schema="pg_catalog")
    pg_am = sa.table("pg_am", sa.column("oid"), sa.column("amname"), schema="pg_catalog")
    size = sa.func.coalesce(sa.func.sum(sa.func.pg_relation_size(pg_index.c.indexrelid)), 0)
    return (
        sa.select(size)
        .select_from(pg_index.join(pg_class, pg_class.c.oid == pg_index.c.indexrelid))
        .join(pg_am, pg_am.c.oid == pg_class.c.relam)
        .where(pg_am.c.amname == "hnsw", pg_index.c.indrelid == sa.func.to_regclass(qualified(embeddings.name)))
    )


def shared_buffers_bytes() -> sa.Select[Any]:
    """The server's shared_buffers, in bytes."""
    pg_settings = sa.table("pg_settings", sa.column("name"), sa.column("setting"), schema="pg_catalog")
    block = sa.cast(sa.func.current_setting("block_size"), sa.BigInteger)
    return sa.select(sa.cast(pg_settings.c.setting, sa.BigInteger) * block).where(
        pg_settings.c.name == "shared_buffers"
    )


#: pgvector and planner settings under which an ordered scan of an HNSW index reads all of it:
#: the index scan whatever its cost (no scan and sort, no bitmap) and pgvector's iterative scan
#: let run through the whole graph (relaxed order, no cap on the tuples). Its memory is capped at
#: 256 MB (4x a 64 MB work_mem: a 4 MB cap stopped after 16,434 of 100,000 vectors, so about a
#: million vectors fit); past that it stops early, with a warning, and pg_prewarm is the way. For
#: one transaction (set_config's is_local); the Django app sets the same for its companion tables.
TRAVERSAL_SETTINGS = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    "hnsw.iterative_scan": "relaxed_order",
    "hnsw.max_scan_tuples": "2147483647",
    "hnsw.scan_mem_multiplier": "4",
    "work_mem": "64MB",
}


def traversal_settings() -> sa.Select[Any]:
    """:data:`TRAVERSAL_SETTINGS` for this transaction, in one round trip (for :func:`index_traversal`)."""
    return sa.select(*(sa.func.set_config(name, value, True) for name, value in TRAVERSAL_SETTINGS.items()))


def axis_vector(dimension: int) -> str:
    """A unit vector along the first axis in pgvector's text form: a query with a direction for
    any metric (cosine has none for a zero vector), whose neighbours do not matter."""
    return "[" + ",".join(["1"] + ["0"] * (int(dimension) - 1)) + "]"


def index_traversal(coll: IndexedCollection, vectors: int) -> sa.Select[Any]:
    """How many of the collection's ``vectors`` an ordered scan of its HNSW index returns, asked
    for all of them: the scan visits every element of the graph, reading each page of the index
    (what pg_prewarm does, where it is not installed). Run under :func:`traversal_settings`."""
    metric = METRICS[coll.metric]
    axis = query_vector(axis_vector(coll.dimension), coll.dimension)
    scan = (
        sa.select(sa.literal(1))
        .where(index_predicate(coll.id, coll.model_name))
        .order_by(metric.distance(indexed_vectors(coll.dimension), axis))
        .limit(inline(max(1, int(vectors))))
    )
    return sa.select(sa.func.count()).select_from(scan.subquery())
