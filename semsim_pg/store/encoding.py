"""The encode pass that ``reconcile`` and ``reembed`` share: stale documents in, current vectors out.

A document is stale for a model when it has no vector of that model or one of other text.
The pass walks the stale documents in id order, encodes a batch with no transaction open (no
lock is held while the model runs), then writes it compare-and-set: a vector lands only if its
document still holds the text it was made from; a document changed meanwhile stays stale for
the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.encoder import Encoder
from semsim_pg.progress import ProgressBar
from semsim_pg.sql import vector_literal

__all__ = ["PassResult", "encode_stale"]

logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    encoded: int = 0
    written: int = 0


def encode_stale(
    engine: Engine,
    collection_id: int,
    encoder: Encoder,
    *,
    batch_size: int,
    bar: ProgressBar | None = None,
    on_batch: Callable[[int], None] | None = None,
    other_backends: bool = False,
) -> PassResult:
    """One pass over the collection's documents lacking a current vector of ``encoder``'s model
    (``other_backends``: or holding one that another backend than ``encoder``'s made).

    ``on_batch(encoded so far in this pass)`` runs after each written batch."""
    result = PassResult()
    after = 0
    redo = encoder.backend_name if other_backends else None
    while True:
        with connect(engine) as conn:
            rows = conn.execute(queries.stale_rows(collection_id, encoder.name, after, batch_size, backend=redo)).all()
        if not rows:
            return result
        vectors = encoder.encode(
            [r[1] for r in rows], batch_size=min(batch_size, encoder.batch_size), show_progress_bar=False
        )
        with connect(engine) as conn, conn.begin():
            written = conn.execute(
                queries.write_vectors_cas(
                    encoder.name,
                    [int(r[0]) for r in rows],
                    [r[2] for r in rows],
                    [vector_literal(v) for v in np.asarray(vectors, dtype=np.float32)],
                    encoder.backend_name,
                )
            ).rowcount
        result.encoded += len(rows)
        result.written += int(written)
        after = int(rows[-1][0])
        if bar is not None:
            bar.update(len(rows))
        if on_batch is not None:
            on_batch(result.encoded)
