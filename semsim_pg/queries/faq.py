"""Statements the FAQ matcher runs: its entries live in documents' metadata (``faq_id`` and the rest)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from semsim_pg.queries.tables import documents

__all__ = ["faq_entries", "faq_phrasings"]

d = documents.c


def faq_phrasings(collection_id: int) -> sa.Select[Any]:
    """(external id, faq id or NULL) of every document of the collection."""
    return sa.select(d.external_id, d.metadata["faq_id"].astext).where(d.collection_id == collection_id)


def faq_entries(collection_id: int) -> sa.Select[Any]:
    """The metadata of one phrasing per FAQ entry (the first by external id), ordered by faq id."""
    faq_id = d.metadata["faq_id"].astext
    return (
        sa.select(d.metadata)
        .where(d.collection_id == collection_id, d.metadata.has_key("faq_id"))
        .ext(distinct_on(faq_id))
        .order_by(faq_id, d.external_id)
    )
