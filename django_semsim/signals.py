"""The save() fast path: hand changed rows to the queue, after commit, in one batch per transaction.

Receivers are connected per semantic model (never without a sender) in ``AppConfig.ready()``.
They only compare the values the text is made of with those loaded from the database and queue
the key: no query, no encoding, no re-save. The reconcile pass (``semsim_reindex --stale``,
``semsim_worker``) is what guarantees freshness for every other write path.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import models, transaction
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
    owner = semantic_owner(sender) or sender  # a proxy's or a multi-table child's row is its owner's
    if not owner.semantic_auto_update:
        return
    if update_fields is not None and owner.semantic_text_in_sql():
        if not set(update_fields) & set(owner.semantic_fields):
            return  # no text column written (and the snapshot stays that of the stored text)
    config = get_config()
    snapshot = instance._semsim_text_snapshot()
    previous = instance.__dict__.get("_semsim_snapshot")
    if not created and snapshot is not None and snapshot == previous:
        if instance.__dict__.get("_semsim_pending"):
            # an earlier save of this transaction changed the text; this one changed it back: what
            # commits is this text, so it is the one to remember (and nothing to encode)
            _remember_on_commit(instance, snapshot, using)
        if config.sync == "immediate":
            # The text this instance loaded, written back: current, unless another save changed
            # the row since this instance was loaded (a second admin tab), whose vector this
            # overwrites. Only the database knows; the background thread asks it, in one
            # statement for many keys, and encodes only what it finds stale. Inline and worker
            # modes leave that case to semsim_worker / semsim_reindex --stale (the anti-join).
            from django_semsim.background import enqueue_verify

            enqueue_verify(owner, instance.pk, using)
        return  # the text did not change: nothing to encode
    # The next save of this instance compares with what this one stored, once it is committed: a
    # save rolled back (a retry after a deadlock) must not make the same change look done.
    _remember_on_commit(instance, snapshot, using)
    if not config.immediate:
        return  # worker mode: the stale-row anti-join finds the row
    from django_semsim.sync import enqueue

    enqueue(owner, instance.pk, using)


def _remember_on_commit(instance: SemanticModel, snapshot: tuple[Any, ...] | None, using: str) -> None:
    # counts the hooks not run yet (a rolled-back transaction's never run: its count stays, which
    # only costs later unchanged saves of this instance a hook each)
    instance._semsim_pending = instance.__dict__.get("_semsim_pending", 0) + 1
    transaction.on_commit(partial(_remember, instance, snapshot), using=using)


def _remember(instance: SemanticModel, snapshot: tuple[Any, ...] | None) -> None:
    instance._semsim_snapshot = snapshot
    instance._semsim_pending = max(instance.__dict__.get("_semsim_pending", 1) - 1, 0)


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
