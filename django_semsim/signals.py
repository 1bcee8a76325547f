"""The save() fast path: hand changed rows to the queue, after commit, in one batch per transaction.

Receivers are connected per semantic model (never without a sender) in ``AppConfig.ready()``.
They only compare the values the text is made of with those loaded from the database and queue
the key: no query, no encoding, no re-save. The reconcile pass (``semsim_reindex --stale``,
``semsim_worker``) is what guarantees freshness for every other write path.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save

from django_semsim.conf import get_config
from django_semsim.models import SemanticModel, semantic_models

__all__ = ["connect_signals", "on_post_save"]


def on_post_save(
    sender: type[SemanticModel],
    instance: SemanticModel,
    created: bool,
    using: str,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    if not sender.semantic_auto_update:
        return
    if update_fields is not None and sender.semantic_text_in_sql():
        if not set(update_fields) & set(sender.semantic_fields):
            return  # no text column written (and the snapshot stays that of the stored text)
    snapshot = instance._semsim_text_snapshot()
    previous = instance.__dict__.get("_semsim_snapshot")
    instance._semsim_snapshot = snapshot  # the next save of this instance compares with what it saved now
    if not created and snapshot is not None and snapshot == previous:
        return  # the text did not change: nothing to encode
    if not get_config().immediate:
        return  # worker mode: the stale-row anti-join finds the row
    from django_semsim.sync import enqueue

    enqueue(sender, instance.pk, using)


def connect_signals() -> None:
    for model in semantic_models():
        post_save.connect(on_post_save, sender=model, dispatch_uid=f"django_semsim.post_save.{model._meta.label}")
