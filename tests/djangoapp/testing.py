"""Helpers shared by tests/test_django_*.py (fixtures live in each file; conftest.py is not ours)."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection, connections

from django_semsim.conf import get_config
from django_semsim.models import companion_of
from tests.djangoapp.models import Article

#: a small self-written corpus: (title, body, published)
CORPUS: list[tuple[str, str, bool]] = [
    ("Reset your password", "Click 'forgot password' on the login page and follow the link in the email.", True),
    ("Shipping times", "Orders ship within two business days and usually arrive within a week.", True),
    ("Refund policy", "Return any item within 30 days for a full refund of the purchase price.", True),
    ("Baking bread at home", "Knead the dough, let it rise for an hour, then bake it in a hot oven.", True),
    ("Training a puppy", "Reward your dog with a treat every time it sits on command.", False),
    ("Change your email address", "Open the account settings page to update the email you sign in with.", True),
    ("Two-factor authentication", "Protect your account with a code from an authenticator app at sign in.", False),
    ("Feeding cats", "Cats need a diet rich in animal protein and fresh water every day.", True),
    ("Planting tomatoes", "Tomatoes need full sun, rich soil and regular watering in summer.", False),
    ("Locked out of your account", "After five wrong passwords the account is locked for fifteen minutes.", True),
]


def vectors_match_text(model: type[Any]) -> dict[Any, bool]:
    """pk -> True when the object's companion row holds the hash of its current text and a vector."""
    config = get_config()
    companion = companion_of(model)
    stored = {
        row["source_id"]: row
        for row in companion.objects.filter(model_id=config.model_name).values("source_id", "text_hash", "embedding")
    }
    result = {}
    for obj in model.objects.all():
        row = stored.get(obj.pk)
        result[obj.pk] = (
            row is not None and row["embedding"] is not None and row["text_hash"] == obj.semantic_text_hash()
        )
    return result


def insert_random_rows(n: int, *, published_every: int, seed: int = 0) -> None:
    """n Article rows with random vectors written in SQL (no encoding, so stale but searchable): for plans."""
    companion = companion_of(Article)
    index = companion._meta.indexes[0]
    with connection.schema_editor() as editor:
        editor.remove_index(companion, index)  # a bulk build is several times faster than row-by-row inserts
    _insert_random_rows(n, published_every=published_every, seed=seed)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred FK checks: CREATE INDEX needs none pending
    with connection.schema_editor() as editor:
        editor.add_index(companion, index)


def _insert_random_rows(n: int, *, published_every: int, seed: int = 0) -> None:
    config = get_config()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed / 1000])
        cursor.execute(
            "INSERT INTO django_semsim_embeddingmodel (name, dimension, created_at) VALUES (%s, %s, now()) "
            "ON CONFLICT DO NOTHING",
            [config.model_name, config.dimensions],
        )
        cursor.execute(
            "WITH src AS (INSERT INTO djangoapp_article (title, body, published, views) "
            "SELECT 'synthetic ' || g, NULL, g %% %s = 0, 0 FROM generate_series(1, %s) g RETURNING id) "
            "INSERT INTO djangoapp_article_embedding (source_id, model_name, text_hash, embedding, created_at, updated_at) "
            "SELECT src.id, %s, NULL, "
            "(SELECT array_agg(random() - 0.5) FROM generate_series(1, %s) WHERE src.id > 0)::vector(%s), now(), now() "
            "FROM src",
            [published_every, n, config.model_name, config.dimensions, config.dimensions],
        )
        cursor.execute("ANALYZE djangoapp_article, djangoapp_article_embedding")


def in_thread(target: Any) -> Any:
    """Run ``target`` in a thread with its own database connection; return its result or raise."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")
