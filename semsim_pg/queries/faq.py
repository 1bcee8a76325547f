"""Statements the FAQ matcher runs: its entries live in documents' metadata (``faq_id`` and the rest)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on

from semsim_pg.queries.documents import has_keys
from semsim_pg.queries.tables import documents

__all__ = ["PHRASING_KEYS", "PROMOTED_KEY", "faq_entries", "faq_phrasings"]

d = documents.c

#: the metadata every phrasing of an FAQ entry carries (the matcher writes them): a document
#: without them is not an FAQ's, and makes its collection no FAQ collection
PHRASING_KEYS = ("faq_id", "question", "answer")


#: the metadata mark (``true``) of a phrasing that promoting unanswered questions added
PROMOTED_KEY = "promoted"


def faq_phrasings(collection_id: int) -> sa.Select[Any]:
    """(external id, faq id, promoted text) of every document of the collection, oldest first;
    the faq id is NULL for a document that is no FAQ entry's phrasing, the promoted text NULL for
    a phrasing without the :data:`PROMOTED_KEY` mark."""
    phrasing = has_keys(PHRASING_KEYS)
    faq_id = sa.case((phrasing, d.metadata["faq_id"].astext), else_=sa.null())
    promoted = sa.case((sa.and_(phrasing, d.metadata.contains({PROMOTED_KEY: True})), d.text), else_=sa.null())
    return sa.select(d.external_id, faq_id, promoted).where(d.collection_id == collection_id).order_by(d.id)


def faq_entries(collection_id: int) -> sa.Select[Any]:
    """The metadata of one phrasing per FAQ entry (the first by external id), ordered by faq id."""
    faq_id = d.metadata["faq_id"].astext
    return (
        sa.select(d.metadata)
        .where(d.collection_id == collection_id, has_keys(PHRASING_KEYS))
        .ext(distinct_on(faq_id))
        .order_by(faq_id, d.external_id)
    )
