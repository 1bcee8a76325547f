"""The collections a store knows: looked up in the collections table, and remembered for searches.

A search must not pay a round trip to learn the collection's id, model and dimension before it
can search, so the store remembers each collection it has looked up, by name. A remembered
collection may go stale behind the store's back (another process drops and recreates it,
``semsim reembed`` switches its model, its language changes), so the search statement checks it:
it carries :func:`semsim_pg.queries.collection_current`, an ``EXISTS`` on the collection's row
with every value the statement was built from, evaluated once in the statement's own snapshot.
Its rows always belong to the collection of the remembered id (ids are never reused), and when
the check says the collection changed, :class:`StaleCollection` sends the store back here for
the current row and the search runs again. A search that finds nothing asks separately (one
more round trip, only then), since there is no row to carry the answer.

Lookups that are not searches (:meth:`DocumentStore.get_collection`, writes) always read the
row afresh, and refresh what is remembered. What an existing collection must match when it is
created again, and a change of its split into passages, are checked here too.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from sqlalchemy.engine import Connection, Engine

from semsim_pg import queries
from semsim_pg.chunking import Chunking
from semsim_pg.db import connect
from semsim_pg.encoder import resolve_model
from semsim_pg.errors import CollectionExists, CollectionNotFound, InvalidInput
from semsim_pg.store.types import Collection
from semsim_pg.validation import visible

__all__ = [
    "UNKNOWN_BACKEND",
    "Catalog",
    "StaleCollection",
    "check_existing",
    "find_collection",
    "list_collections",
    "not_found",
    "set_chunking",
]

logger = logging.getLogger(__name__)

#: what list_collections calls the backend of a vector that does not record one
UNKNOWN_BACKEND = "unknown"


class StaleCollection(Exception):
    """A remembered collection no longer matches its row: look it up again and retry.

    Never leaves the store (not a SemsimError): it is how a search learns its metadata changed."""

    def __init__(self, collection: Collection) -> None:
        super().__init__(f"collection {collection.name!r} (id {collection.id}) changed")
        self.collection = collection


class Catalog:
    """Collections by name, as last read from the database (thread-safe)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Collection | None:
        return self._by_name.get(name)

    def remember(self, collection: Collection) -> Collection:
        # Only what a search needs: counts and index state change all the time and are not kept.
        kept = dataclasses.replace(collection, documents=None, embedded=None, index=None, backends=None)
        with self._lock:
            self._by_name[collection.name] = kept
        return collection

    def forget(self, name: str) -> None:
        with self._lock:
            self._by_name.pop(name, None)


def find_collection(conn: Connection, name: str) -> Collection | None:
    """The collection's current row, or None."""
    row = conn.execute(queries.find_collection(name)).first()
    if row is None:
        return None
    # the search columns come last, after the counts list_collections adds
    fields, (config, chunk_size, chunk_overlap) = row[:-3], row[-3:]
    return dataclasses.replace(
        Collection(*fields), text_search_config=config, chunk_size=chunk_size, chunk_overlap=chunk_overlap
    )


def list_collections(conn: Connection) -> list[Collection]:
    """Every collection with its counts and how many of its vectors each backend made (the
    index state is the store's to add)."""
    found = [Collection(*row) for row in conn.execute(queries.list_collections()).all()]
    backends: dict[int, dict[str, int]] = {}
    for cid, backend, n in conn.execute(queries.vector_backends()).all():
        backends.setdefault(cid, {})[backend or UNKNOWN_BACKEND] = int(n)
    return [dataclasses.replace(c, backends=backends.get(c.id, {})) for c in found]


def not_found(name: str, known: list[str], *, creating: bool = True) -> CollectionNotFound:
    """No collection ``name``; ``creating``: say how to make one (not when it was to be dropped)."""
    # names made before they were checked (check_name) may hold controls: escaped, like the name asked for
    listing = ", ".join(visible(k) for k in known) if known else "none yet"
    how = (
        f" Create it with `semsim ingest FILE -c {visible(name)}` or DocumentStore.create_collection({name!r})."
        if creating
        else " Nothing was dropped."
    )
    return CollectionNotFound(f"No collection named {name!r} (collections: {listing}).{how}")


def check_existing(
    existing: Collection,
    model: str | None,
    metric: str | None,
    text_search_config: str | None,
    *,
    exist_ok: bool,
    m: int | None = None,
    ef_construction: int | None = None,
) -> Collection:
    """``existing``, when creating it again with these arguments is what it already is
    (:meth:`DocumentStore.create_collection`); else :class:`CollectionExists` saying what differs."""
    name = existing.name
    if not exist_ok:
        raise CollectionExists(f"Collection {name!r} exists already. Pick another name or drop it first.")
    model = resolve_model(model).name if model is not None else existing.model_name
    if model != existing.model_name or (metric is not None and metric != existing.metric):
        raise CollectionExists(
            f"Collection {name!r} exists with model {existing.model_name} and metric {existing.metric}, "
            f"not {model} and {metric or existing.metric}. Use another name, or "
            "`semsim reembed` to move it to another model."
        )
    if text_search_config is not None and text_search_config != existing.text_search_config:
        raise CollectionExists(
            f"Collection {name!r} exists with text search configuration {existing.text_search_config!r}, "
            f"not {text_search_config!r}. Change it with DocumentStore.set_text_search_config."
        )
    wanted_m = existing.hnsw_m if m is None else m
    wanted_ef = existing.hnsw_ef_construction if ef_construction is None else ef_construction
    if (wanted_m, wanted_ef) != (existing.hnsw_m, existing.hnsw_ef_construction):
        raise CollectionExists(
            f"Collection {name!r} exists with an HNSW graph of m {existing.hnsw_m} and ef_construction "
            f"{existing.hnsw_ef_construction}, not {wanted_m} and {wanted_ef}. Rebuild it with those: "
            f"`semsim index rebuild -c {name} --m {wanted_m} --ef-construction {wanted_ef}` "
            "(DocumentStore.build_index(..., m=, ef_construction=))."
        )
    return existing


def set_chunking(engine: Engine, coll: Collection, wanted: Chunking) -> Collection:
    """``coll`` splitting texts as ``wanted``: unchanged when it does already, set when it holds
    no documents yet; otherwise an error (its vectors were split another way)."""
    if coll.chunking == wanted:
        return coll
    with connect(engine) as conn, conn.begin():
        # Exclusive: an ingest's batch (which share-locks the row) cannot add documents meanwhile.
        conn.execute(queries.lock_collection_model(coll.id, exclusive=True))
        held = int(conn.execute(queries.count_documents(coll.id)).scalar_one())
        if held == 0:
            conn.execute(queries.set_chunking(coll.id, (wanted.size, wanted.overlap)))
    if held:
        now = (
            "does not split its texts"
            if coll.chunking is None
            else f"splits its texts into passages of {coll.chunk_size} tokens (overlap {coll.chunk_overlap})"
        )
        raise InvalidInput(
            f"Collection {coll.name!r} {now}, and its {held} documents were encoded that way; it cannot "
            f"switch to chunk {wanted.size} (overlap {wanted.overlap}). Ingest into a new collection "
            f"(-c {coll.name}_{wanted.size}), or drop this one first; without --chunk it keeps its own setting."
        )
    logger.info("collection %s: passages of %d tokens (overlap %d)", coll.name, wanted.size, wanted.overlap)
    return dataclasses.replace(coll, chunk_size=wanted.size, chunk_overlap=wanted.overlap)
