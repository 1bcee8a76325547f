"""What fine-tuning reads from a collection: every document with its label and stored vector."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from semsim_pg.queries.documents import _raw
from semsim_pg.queries.tables import documents, embeddings

__all__ = ["training_rows"]

d, e = documents.c, embeddings.c


def training_rows(collection_id: int, model: str, label_field: str | None = None) -> sa.Select[Any]:
    """(external id, text, metadata ``label_field`` as text or NULL, current ``model`` vector or NULL)
    of every document, in id order. A vector of older text (another hash) counts as missing."""
    label = d.metadata[label_field].astext if label_field else sa.null()
    current = sa.and_(e.document_id == d.id, e.model_name == model, e.passage == 0, e.text_hash == d.text_hash)
    return (
        sa.select(d.external_id, d.text, label, _raw(e.embedding))
        .select_from(documents.outerjoin(embeddings, current))
        .where(d.collection_id == collection_id)
        .order_by(d.id)
    )
