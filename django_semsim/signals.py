"""The save() fast path: hand saved rows to the queue, after commit, in one batch per transaction.

Receivers are connected per semantic model (never without a sender) in ``AppConfig.ready()``.
They only queue the key: no query, no encoding, no re-save. The reconcile pass
(``semsim_reindex --stale``, ``semsim_worker``) is what guarantees freshness for every other write path.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_save, pre_save

from django_semsim.conf import get_config
from django_semsim.models import EmbeddingModel, SemanticModel, semantic_owner, semantic_senders

__all__ = ["connect_signals", "on_companion_pre_save", "on_post_save"]


def on_post_save(
    sender: type[SemanticModel],
    instance: SemanticModel,
    created: bool,
    using: str,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """Queue every save that writes the text's columns, whether or not this instance changed them.

    What the instance loaded says nothing about what the row holds now: another save since (a
    second admin tab, another process) may have changed the text, and this one writes the old
    text back over it, whose vector is gone. Only the database knows, so the background drain
    decides, by the text hash it computes in SQL; a row whose text is current costs it one look
    and encodes nothing. The saving thread only remembers the key, changed text or not.
    """
    owner = semantic_owner(sender) or sender  # a proxy's or a multi-table child's row is its owner's
    if not owner.semantic_auto_update:
        return
    if update_fields is not None and owner.semantic_text_in_sql():
        if not set(update_fields) & set(owner.semantic_fields):
            return  # no text column written: the row holds the text it held
    if not get_config().immediate:
        return  # worker mode: the stale-row anti-join finds the row
    from django_semsim.sync import enqueue

    enqueue(owner, instance.pk, using)


def on_companion_pre_save(sender: type[models.Model], instance: Any, raw: bool, using: str, **kwargs: Any) -> None:
    """A fixture's vector row (``loaddata`` of ``dumpdata myapp``) names its encoder model, whose row
    is django_semsim's and not in the app's dump: add it, so the app's own dump loads on its own."""
    if not raw or instance.model_id is None:
        return
    dimension = len(instance.embedding) if instance.embedding is not None else get_config().dimensions
    row = EmbeddingModel(name=instance.model_id, dimension=dimension)
    EmbeddingModel.objects.using(using).bulk_create([row], ignore_conflicts=True)


def connect_signals() -> None:
    for model, owner in semantic_senders():
        post_save.connect(on_post_save, sender=model, dispatch_uid=f"django_semsim.post_save.{model._meta.label}")
        if owner is model:
            companion = owner.semsim_companion
            pre_save.connect(
                on_companion_pre_save, sender=companion, dispatch_uid=f"django_semsim.pre_save.{companion._meta.label}"
            )
