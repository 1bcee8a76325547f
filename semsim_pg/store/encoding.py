"""The encode pass that ``reconcile`` and ``reembed`` share: stale documents in, current vectors out.

A document is stale for a model when it has no vector of that model or one of other text.
The pass walks the stale documents in id order, encodes a batch with no transaction open (no
lock is held while the model runs), then writes it compare-and-set: a vector lands only if its
document still holds the text it was made from; a document changed meanwhile stays stale for
the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import Engine

from semsim_pg import queries
from semsim_pg.chunking import Chunking, split_many
from semsim_pg.db import connect
from semsim_pg.encoder import Encoder
from semsim_pg.progress import ProgressBar
from semsim_pg.sql import vector_literal

__all__ = ["PassResult", "PassageVector", "encode_passages", "encode_stale", "passage_arrays"]

#: (passage number, start, end or None for the end of the text, vector): one row of ``embeddings``
PassageVector = tuple[int, int, int | None, npt.NDArray[np.float32]]


def encode_passages(
    encoder: Encoder, texts: Sequence[str], chunking: Chunking | None, *, batch_size: int | None = None
) -> list[list[PassageVector]]:
    """Each text's passages with their vectors, all encoded in one call of the model.

    Without ``chunking`` (or for a text that fits it) a text is one passage, the whole text,
    whose vector is the text's own: an unsplit collection stores what it always did."""
    if chunking is None:
        vectors = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=False)
        return [[(0, 0, None, v)] for v in vectors]
    split = split_many(texts, encoder, chunking.size, chunking.overlap)
    flat = [p.text for passages in split for p in passages]
    rows = iter(encoder.encode(flat, batch_size=batch_size, show_progress_bar=False))
    return [
        [(p.index, p.start, None if p.end == len(text) else p.end, next(rows)) for p in passages]
        for text, passages in zip(texts, split, strict=True)
    ]


def passage_arrays(
    ids: Sequence[int], hashes: Sequence[str], encoded: Sequence[list[PassageVector]]
) -> tuple[list[int], list[str], list[str], list[tuple[int, int, int | None]]]:
    """The arguments of :func:`semsim_pg.queries.write_vectors_cas`: one entry per passage."""
    rows = [(i, h, p) for i, h, passages in zip(ids, hashes, encoded, strict=True) for p in passages]
    return (
        [r[0] for r in rows],
        [r[1] for r in rows],
        [vector_literal(np.asarray(r[2][3], dtype=np.float32)) for r in rows],
        [(r[2][0], r[2][1], r[2][2]) for r in rows],
    )


logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    encoded: int = 0
    written: int = 0
    #: vectors encoded: one per passage, so more than ``encoded`` (documents) for split texts
    vectors: int = 0


def encode_stale(
    engine: Engine,
    collection_id: int,
    encoder: Encoder,
    *,
    batch_size: int,
    bar: ProgressBar | None = None,
    on_batch: Callable[[int], None] | None = None,
    other_backends: bool = False,
    chunking: Chunking | None = None,
) -> PassResult:
    """One pass over the collection's documents lacking a current vector of ``encoder``'s model
    (``other_backends``: or holding one that another backend than ``encoder``'s made).

    ``chunking``: the collection's, each stale text is split anew and all its passages replaced.
    ``on_batch(encoded so far in this pass)`` runs after each written batch."""
    result = PassResult()
    after = 0
    redo = encoder.backend_name if other_backends else None
    while True:
        with connect(engine) as conn:
            rows = conn.execute(queries.stale_rows(collection_id, encoder.name, after, batch_size, backend=redo)).all()
        if not rows:
            return result
        encoded = encode_passages(
            encoder, [r[1] for r in rows], chunking, batch_size=min(batch_size, encoder.batch_size)
        )
        ids, hashes, vectors, passages = passage_arrays([int(r[0]) for r in rows], [r[2] for r in rows], encoded)
        with connect(engine) as conn, conn.begin():
            written = conn.execute(
                queries.write_vectors_cas(encoder.name, ids, hashes, vectors, encoder.backend_name, passages)
            ).scalar_one()
        result.encoded += len(rows)
        result.written += int(written)
        result.vectors += len(ids)
        after = int(rows[-1][0])
        if bar is not None:
            bar.update(len(rows))
        if on_batch is not None:
            on_batch(result.encoded)
