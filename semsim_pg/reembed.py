"""Move a collection to another model without downtime (ARCHITECTURE.md decision 2 and 4).

The new model's vectors go into the same companion table, ``embeddings``, as rows keyed
``(document_id, new model)``, beside the old ones; searches keep reading the old model's rows
(the collection still names it) while the new ones are written. Then:

1. the new (collection, model) partial HNSW index is built after the bulk load (faster than
   growing it row by row), ``CONCURRENTLY`` so that writes to the table go on meanwhile;
2. catch-up passes encode documents whose text changed during the run (their stored hash no
   longer matches the new vector's);
3. one short transaction switches: with writers to ``documents`` held off (readers are
   not), it checks that no document lacks a current new vector, then updates the collection's
   ``model_name`` and ``dimension``. From its commit on, searches use the new vectors;
4. the old model's rows are deleted in batches and its index dropped concurrently.

A run stopped anywhere resumes: each pass encodes only documents without a new vector for
their current text, so finished batches are never encoded again. Re-embedding to the model the
collection already uses removes rows other models left behind (an abandoned run).

With a ``backend`` and the collection's own model, the vectors another encoder backend made
(``embeddings.backend``, NULL when unknown) are re-encoded in place with that one: vectors of all
backends of a model are comparable, this is for bit-identical ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.encoder import Encoder, get_encoder, resolve_model
from semsim_pg.errors import DatabaseError, DimensionMismatch, InvalidInput
from semsim_pg.progress import ProgressBar, progress_bar
from semsim_pg.settings import BACKENDS
from semsim_pg.store.encoding import encode_stale
from semsim_pg.store.indexes import build_index, drop_index

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = ["ReembedResult", "reembed", "stale_count"]

logger = logging.getLogger(__name__)

# pgvector indexes vectors of up to 2,000 dimensions with HNSW.
MAX_INDEXED_DIMENSION = 2000
SWITCH_ATTEMPTS = 5


@dataclass
class ReembedResult:
    collection: str
    old_model: str
    new_model: str
    old_dimension: int
    new_dimension: int
    encoded: int = 0
    #: vectors encoded: more than ``encoded`` (documents) in a collection split into passages
    vectors: int = 0
    reused: int = 0
    passes: int = 0
    switched: bool = False
    removed_old_rows: int = 0
    seconds: float = 0.0
    #: the backend asked for (``--backend``), resolved (``auto`` -> what it chose); None: any
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.switched and self.backend is not None:
            return (
                f"{self.collection}: {self.encoded} documents ({self.vectors} vectors) of {self.new_model} made by "
                f"another backend (or an unknown one) re-encoded with {self.backend}, in {self.seconds:.1f} s"
            )
        if not self.switched:
            return (
                f"{self.collection}: already on {self.new_model}; removed {self.removed_old_rows} rows of other models"
            )
        return (
            f"{self.collection}: {self.old_model} ({self.old_dimension} dims) -> {self.new_model} "
            f"({self.new_dimension} dims); {self.encoded} documents encoded, {self.reused} kept from an earlier run, "
            f"{self.removed_old_rows} old vectors removed, in {self.seconds:.1f} s"
        )


def stale_count(conn: sa.Connection, collection_id: int, model: str) -> int:
    """Documents of the collection without a vector of ``model`` for their current text."""
    return int(conn.execute(queries.stale_count(collection_id, model)).scalar_one())


def reembed(
    store: DocumentStore,
    collection: str | Collection,
    model: str | None = None,
    *,
    backend: str | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    encoder: Encoder | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ReembedResult:
    """Re-encode every document of ``collection`` with ``model`` and switch the collection to it.

    ``model`` None (or the collection's own) with a ``backend``: re-encode in place, with that
    backend, only the vectors another backend made (or an unknown one). ``encoder`` may be given
    for the new model (it must carry the name ``model`` resolves to, and run ``backend`` if one is
    asked for); ``on_batch(n_encoded_so_far)`` runs after each written batch (progress reporting, tests).
    """
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}.")
    if backend is not None and backend not in BACKENDS:
        raise InvalidInput(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    start = time.perf_counter()
    coll = store.get_collection(collection)
    if model is None and backend is None:
        raise InvalidInput("Give the model to move the collection to, or a backend to re-encode its vectors with.")
    new = encoder if encoder is not None else _encoder(store, model or coll.model_name, backend)
    wanted = resolve_model(model).name if model is not None else coll.model_name
    if new.name != wanted:
        raise InvalidInput(f"The encoder given is for model {new.name}, not {wanted}.")
    result = ReembedResult(coll.name, coll.model_name, new.name, coll.dimension, coll.dimension)
    if backend is not None:
        result.backend = new.backend_name  # auto resolved; torch with SEMSIM_PRECISION=bfloat16 is torch-bf16
    if new.name == coll.model_name and backend is not None:
        _reencode(store, coll, new, batch_size, progress, on_batch, result)
        result.seconds = time.perf_counter() - start
        return result
    if new.name == coll.model_name:
        result.removed_old_rows = _remove_other_models(store, coll)
        result.seconds = time.perf_counter() - start
        return result
    dimension = new.dimension
    result.new_dimension = dimension
    if coll.chunk_size is not None and coll.chunk_size > new.max_seq_length:
        raise InvalidInput(
            f"Collection {coll.name!r} splits texts into passages of {coll.chunk_size} tokens, more than the "
            f"{new.max_seq_length} model {new.name} reads. Choose a model that reads at least {coll.chunk_size}, "
            "or ingest into a new collection with a smaller --chunk."
        )
    if dimension > MAX_INDEXED_DIMENSION:
        raise DimensionMismatch(
            f"Model {new.name} makes {dimension}-dimensional vectors; pgvector's HNSW index takes at most "
            f"{MAX_INDEXED_DIMENSION}. Choose a smaller model."
        )
    with connect(store.engine) as conn:
        todo = stale_count(conn, coll.id, new.name)
        total = int(conn.execute(queries.count_documents(coll.id)).scalar_one())
    result.reused = total - todo
    logger.info("reembed %s: %d of %d documents to encode with %s", coll.name, todo, total, new.name)
    bar = progress_bar(progress, total=todo, desc=f"reembed {coll.name}", unit="doc")
    try:
        # First pass, then the index, then catch-up passes for texts changed meanwhile.
        _encode_pass(store, coll, new, batch_size, bar, on_batch, result)
        build_index(store.engine, coll, model=new.name, dimension=dimension, concurrently=True)
        for _attempt in range(SWITCH_ATTEMPTS):
            _encode_pass(store, coll, new, batch_size, bar, on_batch, result)
            if _switch(store, coll, new.name, dimension):
                break
        else:
            raise DatabaseError(
                f"Collection {coll.name!r} kept changing faster than it could be re-embedded ({SWITCH_ATTEMPTS} "
                "catch-up passes). Run `semsim reembed` again when writes are quieter: finished work is kept."
            )
    finally:
        bar.close()
    result.switched = True
    logger.info("collection %s now uses %s", coll.name, new.name)
    result.removed_old_rows = _remove_model(store, coll, coll.model_name)
    result.seconds = time.perf_counter() - start
    return result


def _encoder(store: DocumentStore, model: str, backend: str | None) -> Encoder:
    """The process-wide encoder of ``model``, or one of its own when a backend is asked for."""
    if backend is None:
        return get_encoder(model, device=store.settings.device)
    return Encoder(model, device=store.settings.device, backend=backend)


def _reencode(
    store: DocumentStore,
    coll: Collection,
    encoder: Encoder,
    batch_size: int,
    progress: bool | None,
    on_batch: Callable[[int], None] | None,
    result: ReembedResult,
) -> None:
    """Re-encode, in place, the collection's vectors another backend than ``encoder``'s made (and
    stale ones): compare-and-set as reconcile does, so searches and writes go on meanwhile."""
    with connect(store.engine) as conn:
        todo = int(
            conn.execute(queries.stale_count(coll.id, coll.model_name, backend=encoder.backend_name)).scalar_one()
        )
    logger.info("reembed %s: %d documents to re-encode with backend %s", coll.name, todo, encoder.backend_name)
    with progress_bar(progress, total=todo, desc=f"reencode {coll.name}", unit="doc") as bar:
        _encode_pass(store, coll, encoder, batch_size, bar, on_batch, result, other_backends=True)


def _encode_pass(
    store: DocumentStore,
    coll: Collection,
    encoder: Encoder,
    batch_size: int,
    bar: ProgressBar,
    on_batch: Callable[[int], None] | None,
    result: ReembedResult,
    *,
    other_backends: bool = False,
) -> None:
    """One pass of the encoding reconcile also runs, counted into ``result``."""
    done = result.encoded

    def report(encoded: int) -> None:
        if on_batch is not None:
            on_batch(done + encoded)

    done_pass = encode_stale(
        store.engine,
        coll.id,
        encoder,
        batch_size=batch_size,
        bar=bar,
        on_batch=report,
        other_backends=other_backends,
        chunking=coll.chunking,
    )
    result.encoded += done_pass.encoded
    result.vectors += done_pass.vectors
    result.passes += 1


def _switch(store: DocumentStore, coll: Collection, model: str, dimension: int) -> bool:
    """The atomic switch; False (nothing changed) when documents changed since the last pass."""
    with connect(store.engine) as conn, conn.begin():
        current = conn.execute(queries.lock_collection_model(coll.id, exclusive=True)).scalar()
        if current != coll.model_name:
            raise DatabaseError(
                f"Collection {coll.name!r} moved from {coll.model_name} to {current} while this run went on "
                f"(another reembed?). Nothing was switched. The {model} vectors this run wrote are kept: "
                f"`semsim reembed -c {coll.name} --model {model}` reuses them, "
                f"`semsim reembed -c {coll.name} --model {current}` removes them and their index."
            )
        # SHARE blocks writers of documents (their text could change under the check), not readers.
        conn.execute(queries.lock_documents_share())
        left = stale_count(conn, coll.id, model)
        if left:
            logger.info("%d documents changed during the pass; encoding them before the switch", left)
            conn.rollback()
            return False
        conn.execute(queries.set_collection_model(coll.id, model, dimension))
    return True


def _remove_model(store: DocumentStore, coll: Collection, model: str, batch: int = 5000) -> int:
    """Delete a model's rows of a collection in batches (short transactions), then drop its index."""
    removed = 0
    while True:
        with connect(store.engine) as conn, conn.begin():
            n = int(conn.execute(queries.remove_model_rows(coll.id, model, batch)).rowcount)
        removed += n
        if n < batch:
            break
    drop_index(store.engine, coll, model=model, concurrently=True)
    return removed


def _remove_other_models(store: DocumentStore, coll: Collection) -> int:
    with connect(store.engine) as conn:
        models = conn.execute(queries.model_names(coll.id)).scalars().all()
    return sum(_remove_model(store, coll, other) for other in models if other != coll.model_name)
