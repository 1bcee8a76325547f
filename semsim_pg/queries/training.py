"""What fine-tuning reads from a collection: every document with its label and stored vector."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from semsim_pg.queries.documents import _raw
from semsim_pg.queries.tables import collections, documents, embeddings

__all__ = [
    "DJANGO_MODELS_TABLE",
    "collections_table",
    "collections_using_model",
    "django_model_recorded",
    "django_models_table",
    "training_rows",
]

d, e = documents.c, embeddings.c

#: the Django app's record of each encoder model with vectors (django_semsim.models.EmbeddingModel;
#: the core never imports Django, so its table is named here, in the search path)
DJANGO_MODELS_TABLE = "django_semsim_embeddingmodel"
_django_models = sa.table(DJANGO_MODELS_TABLE, sa.column("name", sa.Text))


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


def _at_or_under(column: Any, folder: str) -> Any:
    """``column`` names ``folder`` or a path inside it (starts_with: no LIKE wildcards to escape)."""
    return sa.or_(column == folder, sa.func.starts_with(column, folder.rstrip("/") + "/"))


def collections_using_model(folder: str) -> sa.Select[Any]:
    """Name and model of the collections whose vectors (and queries) a model in ``folder`` makes
    (``folder`` itself, or one inside it), by name."""
    return (
        sa.select(collections.c.name, collections.c.model_name)
        .where(_at_or_under(collections.c.model_name, folder))
        .order_by(collections.c.name)
    )


def collections_table() -> sa.Select[Any]:
    """semsim's table of collections, or NULL when this database has none (a Django site's own
    database holds only the Django app's tables): run this before :func:`collections_using_model`."""
    return sa.select(sa.cast(sa.func.to_regclass(f"{collections.schema}.{collections.name}"), sa.Text))


def django_models_table() -> sa.Select[Any]:
    """The Django app's table of models, or NULL when it is not in this database (run this first:
    a statement naming a missing table fails as it is parsed)."""
    return sa.select(sa.cast(sa.func.to_regclass(DJANGO_MODELS_TABLE), sa.Text))


def django_model_recorded(folder: str) -> sa.Select[Any]:
    """The first model the Django app's table of models records (it has vectors of it) that is
    ``folder`` or inside it, else NULL."""
    return sa.select(sa.func.min(_django_models.c.name)).where(_at_or_under(_django_models.c.name, folder))
