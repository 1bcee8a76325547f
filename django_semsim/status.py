"""How current the vectors are, per semantic model, and the model-switch chores of ``semsim_reindex``.

All in the ORM: counts are one aggregate over a LEFT JOIN of the companion (a ``FilteredRelation``
on the configured encoder model), so PostgreSQL computes them, not a Python loop, whenever the
text is an SQL expression.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import BooleanField, Count, ExpressionWrapper, F, FilteredRelation, Q

from django_semsim.conf import get_config
from django_semsim.models import SemanticModel, companion_of, semantic_models, semantic_owner
from semsim_pg.errors import InvalidInput

__all__ = ["ModelStatus", "iter_models", "mark_all_stale", "model_status", "remove_other_models"]

logger = logging.getLogger(__name__)

#: the FilteredRelation alias of the configured encoder model's companion row
_ROW = "_semsim_row"


@dataclass
class ModelStatus:
    label: str
    model_name: str
    rows: int
    current: int
    stale: int
    missing: int
    other_models: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "encoder": self.model_name,
            "rows": self.rows,
            "current": self.current,
            "stale": self.stale,
            "missing": self.missing,
            "other_models": self.other_models,
        }


def mark_all_stale(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Forget which text every vector came from (vectors stay searchable) so that all are re-encoded."""
    companions = companion_of(model)._base_manager.using(using)
    return int(companions.filter(model_id=get_config().model_name).update(text_hash=None))


def remove_other_models(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Delete vectors made by encoder models other than the configured one."""
    companions = companion_of(model)._base_manager.using(using)
    deleted, _ = companions.exclude(model_id=get_config().model_name).delete()
    return int(deleted)


def with_vector_row(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> Any:
    """``model``'s rows LEFT JOINed (as ``_semsim_row``) to their companion row of the configured encoder."""
    # passage 0 stands for the object: a model that splits has one row per passage, all written together
    condition = Q(semsim_embeddings__model_id=get_config().model_name, semsim_embeddings__passage=0)
    return model._base_manager.using(using).alias(**{_ROW: FilteredRelation("semsim_embeddings", condition=condition)})


def model_status(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> ModelStatus:
    """Rows, current, stale (older vector) and missing (no vector) for the configured encoder model."""
    config = get_config()
    rows = with_vector_row(model, using=using)
    expression = model.semantic_text_expression()
    if expression is not None:
        counts = rows.aggregate(
            rows=Count("pk"),
            current=Count(
                "pk",
                filter=Q(
                    **{f"{_ROW}__embedding__isnull": False, f"{_ROW}__text_hash": model.semantic_hash_expression()}
                ),
            ),
            missing=Count("pk", filter=Q(**{f"{_ROW}__embedding__isnull": True})),
        )
        total, current, missing = counts["rows"], counts["current"], counts["missing"]
    else:
        total, current, missing = _status_python(model, rows)
    others = (
        companion_of(model)
        ._base_manager.using(using)
        .exclude(model_id=config.model_name)
        .values_list("model_id")
        .annotate(n=Count("pk"))
        .order_by("model_id")
    )
    return ModelStatus(
        model._meta.label,
        config.model_name,
        int(total),
        int(current),
        int(total - current - missing),
        int(missing),
        {name: int(n) for name, n in others},
    )


def _status_python(model: type[SemanticModel], rows: Any) -> tuple[int, int, int]:
    no_vector = ExpressionWrapper(Q(**{f"{_ROW}__embedding__isnull": True}), output_field=BooleanField())
    stored = {
        pk: (h, none)
        for pk, h, none in rows.annotate(_h=F(f"{_ROW}__text_hash"), _none=no_vector).values_list("pk", "_h", "_none")
    }
    total = current = missing = 0
    for obj in rows.iterator(chunk_size=2000):
        total += 1
        h, none = stored.get(obj.pk, (None, True))
        if none:
            missing += 1
        elif h == obj.semantic_text_hash():
            current += 1
    return total, current, missing


def iter_models(labels: Iterable[str] | None = None) -> list[type[SemanticModel]]:
    """Semantic models by ``app_label.ModelName`` (all of them when no label is given)."""
    from django.apps import apps

    everything = semantic_models()
    if not labels:
        return everything
    chosen = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            raise InvalidInput(f"No model {label!r}: give app_label.ModelName, e.g. articles.Article.") from None
        owner = semantic_owner(model)  # a proxy's or a multi-table child's vectors are its owner's
        if owner is None:
            names = ", ".join(m._meta.label for m in everything) or "none"
            raise InvalidInput(f"{label} is not a semantic model (semantic models: {names}).")
        if owner is not model:
            logger.info("%s keeps its vectors with %s: working on %s", label, owner._meta.label, owner._meta.label)
        if owner not in chosen:
            chosen.append(owner)
    return chosen
