"""Immediate mode off the request thread: the background queue, its bound, catching up, preloading."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_semsim import background as queue
from django_semsim import sync
from django_semsim.apps import _wants_preload
from tests.djangoapp.models import Article
from tests.djangoapp.testing import vectors_match_text

ROOT = Path(__file__).resolve().parent.parent


class ThreadSpy:
    """The real encoder, recording which thread called it; optionally held until released."""

    def __init__(self, real: Any, hold: threading.Event | None = None) -> None:
        self.real = real
        self.hold = hold
        self.threads: list[str] = []
        self.entered = threading.Event()

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(120), "test never released the encoder"
        return self.real.encode(texts, **kwargs)


@pytest.fixture()
def background():  # type: ignore[no-untyped-def]
    with override_settings(SEMSIM={"SYNC": "immediate", "BATCH_SIZE": 64, "QUEUE_SIZE": 1}):
        yield
        assert sync.stop_background(timeout=120)


@pytest.mark.django_db(transaction=True)
def test_save_is_encoded_by_the_background_thread(background, monkeypatch, encoder) -> None:  # type: ignore[no-untyped-def]
    spy = ThreadSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    article = Article.objects.create(title="Shipping times", body="Orders ship in two days.")
    assert sync.wait_idle(timeout=120)
    assert spy.threads == ["semsim-encoder"]  # not the saving thread
    assert vectors_match_text(Article) == {article.pk: True}


@pytest.mark.django_db(transaction=True)
def test_row_not_queued_stays_stale_and_reindex_catches_it_up(background, monkeypatch, encoder, caplog) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()
    spy = ThreadSpy(encoder, hold=release)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    first = Article.objects.create(title="Reset your password", body="Use the link in the email.")
    assert spy.entered.wait(120)  # the thread holds the first row: the queue (one row) is full
    with caplog.at_level(logging.WARNING, logger="django_semsim.background"):
        second = Article.objects.create(title="Refund policy", body="Return items within 30 days.")
    assert "stay stale until semsim_worker or semsim_reindex --stale" in caplog.text
    assert (
        "(1 row(s) waiting, SEMSIM['QUEUE_SIZE'] is 1): 1 saved djangoapp.Article row(s) with new text" in caplog.text
    )
    assert not sync.wait_idle(timeout=0.2)  # still encoding the first row
    release.set()
    assert sync.wait_idle(timeout=120)
    assert vectors_match_text(Article) == {first.pk: True, second.pk: False}  # durable staleness mark
    call_command("semsim_reindex", "--stale", verbosity=0)
    assert vectors_match_text(Article) == {first.pk: True, second.pk: True}


@pytest.mark.django_db(transaction=True)
def test_stopped_queue_loses_nothing_the_worker_finds_it(background, caplog) -> None:  # type: ignore[no-untyped-def]
    queue._background().stop(timeout=120)  # what a dying process leaves behind: nothing queued
    with caplog.at_level(logging.WARNING, logger="django_semsim.background"):
        article = Article.objects.create(title="Feeding cats", body="Cats need protein.")
    assert "queue stopped" in caplog.text
    assert vectors_match_text(Article) == {article.pk: False}
    call_command("semsim_worker", "--once", verbosity=0)
    assert vectors_match_text(Article) == {article.pk: True}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["gunicorn", "site.wsgi"], {}, True),
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "makemigrations"], {}, False),
        (["manage.py", "semsim_worker"], {}, True),
        (["manage.py", "runserver"], {}, False),  # the autoreloader's parent
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),
        (["/venv/lib/python3.11/site-packages/django/__main__.py", "migrate"], {}, False),  # python -m django
        (["/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "--preload", "site.wsgi"], {}, True),
        (["/venv/lib/python3.11/site-packages/uvicorn/__main__.py", "site.asgi:application"], {}, True),
    ],
)
def test_preload_only_where_the_model_is_used(monkeypatch, argv, env, expected) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RUN_MAIN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with override_settings(SEMSIM={"PRELOAD": True}):
        assert _wants_preload(argv) is expected
    with override_settings(SEMSIM={"PRELOAD": False}):
        assert _wants_preload(argv) is False


@pytest.mark.slow
@pytest.mark.parametrize("preload", [True, False])
def test_preload_loads_the_model_in_setup(tmp_path, preload) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "preload_settings.py").write_text(
        f"from tests.django_settings import *\nSEMSIM = {{**SEMSIM, 'PRELOAD': {preload}}}\n"
    )
    script = textwrap.dedent(
        """
        import django
        django.setup()
        from django_semsim.encoding import get_model_encoder
        encoder = get_model_encoder()
        print("loaded" if encoder.loaded else "not loaded", encoder.encoded_count)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "preload_settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split() == (["loaded", "1"] if preload else ["not", "loaded", "0"])


def test_a_request_thread_never_waits_for_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first commit outside a request loads the model in the committing thread (a script that
    exits at once leaves its rows encoded); a thread serving a request never does: save() stays
    fast, the background thread (or SEMSIM['PRELOAD']) loads it."""
    from django.core.signals import request_finished, request_started

    from django_semsim import apps, encoding
    from semsim_pg.encoder import Encoder

    loads: list[str] = []
    unloaded = Encoder(cache_size=0)  # the real encoder, not loaded yet
    assert not unloaded.loaded
    monkeypatch.setattr(encoding, "get_model_encoder", lambda: unloaded)
    monkeypatch.setattr(apps, "preload", lambda: loads.append("preload"))
    request_started.send(sender=None)
    try:
        assert queue._ready_encoder() is False and loads == []
    finally:
        request_finished.send(sender=None)
    assert queue._ready_encoder() is True and loads == ["preload"]


@pytest.mark.django_db(transaction=True)
def test_an_instance_loaded_before_another_edit_saves_and_is_encoded(background, monkeypatch, encoder) -> None:  # type: ignore[no-untyped-def]
    spy = ThreadSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    article = Article.objects.create(title="Horses gallop across the field", body="")
    assert sync.wait_idle(timeout=120)
    first_tab = Article.objects.get(pk=article.pk)
    second_tab = Article.objects.get(pk=article.pk)
    second_tab.title = "Submarines dive deep"
    second_tab.save()
    assert sync.wait_idle(timeout=120)
    first_tab.views = 7
    first_tab.save()  # writes the horses back over the submarines: this instance's text did not change
    assert sync.wait_idle(timeout=120)
    assert Article.objects.get(pk=article.pk).title == "Horses gallop across the field"
    assert vectors_match_text(Article) == {article.pk: True}
    assert len(spy.threads) == 3
    first_tab.save()  # the text the row holds: looked at by the background thread, not encoded
    assert sync.wait_idle(timeout=120)
    assert len(spy.threads) == 3


@pytest.mark.django_db(transaction=True)
def test_a_transaction_saving_more_rows_than_the_queue_holds_still_encodes_its_edit(  # type: ignore[no-untyped-def]
    background, monkeypatch, encoder, caplog
) -> None:
    """A nightly job resets 100 counters and one page is edited, in one transaction: the unchanged
    rows are only verified (they never fill the queue), the edit is encoded, nothing is refused."""
    spy = ThreadSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    with override_settings(SEMSIM={"SYNC": "immediate", "BATCH_SIZE": 64, "QUEUE_SIZE": 100}):
        Article.objects.bulk_create([Article(title=f"Page {i}", body="about counters") for i in range(100)])
        edited = Article.objects.create(title="Draft", body="draft")
        sync.drain(Article)
        assert sync.wait_idle(timeout=120) and all(vectors_match_text(Article).values())
        encoded = len(spy.threads)
        with caplog.at_level(logging.DEBUG, logger="django_semsim.background"), transaction.atomic():
            for page in Article.objects.exclude(pk=edited.pk):
                page.views = 0
                page.save()
            edited.title = "Published: semantic search with pgvector"
            edited.save()
        assert sync.wait_idle(timeout=120)
    assert "queue full" not in caplog.text and "not verified" not in caplog.text
    assert all(vectors_match_text(Article).values())
    assert len(spy.threads) == encoded + 1  # the edit only


@pytest.mark.django_db(transaction=True)
def test_a_batch_larger_than_the_queue_is_taken_when_nothing_waits(background, monkeypatch, encoder, caplog) -> None:  # type: ignore[no-untyped-def]
    spy = ThreadSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    with caplog.at_level(logging.WARNING, logger="django_semsim.background"), transaction.atomic():
        rows = [Article.objects.create(title=f"Imported row {i}", body="") for i in range(3)]  # QUEUE_SIZE is 1
    assert sync.wait_idle(timeout=120)
    assert caplog.text == ""
    assert vectors_match_text(Article) == dict.fromkeys((row.pk for row in rows), True)


@pytest.mark.django_db(transaction=True)
def test_a_counter_saved_500_times_in_a_transaction_is_one_key_verified_in_one_statement(  # type: ignore[no-untyped-def]
    background, monkeypatch, encoder, caplog
) -> None:
    spy = ThreadSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    counter, other = Article.objects.bulk_create(
        [Article(title="Counter page", body="A page with views"), Article(title="Other page", body="")]
    )
    sync.drain(Article)
    spy.threads.clear()
    counter, other = Article.objects.get(pk=counter.pk), Article.objects.get(pk=other.pk)
    checked: list[list[Any]] = []
    stale_keys = sync.stale_keys

    def watched(model: Any, pks: Any, **kwargs: Any) -> Any:
        checked.append(list(pks))
        return stale_keys(model, pks, **kwargs)

    monkeypatch.setattr(sync, "stale_keys", watched)
    with (
        caplog.at_level(logging.DEBUG, logger="django_semsim.background"),
        CaptureQueriesContext(connection) as queries,
        transaction.atomic(),
    ):
        for _ in range(500):
            counter.views += 1
            counter.save()
        other.save()  # QUEUE_SIZE is 1: no room left to verify it (a safety net, dropped)
        assert queue._pending("verify") == {"default": {Article: {counter.pk}}}
        assert len(connection.run_on_commit) == 1
    assert sync.wait_idle(timeout=120)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["BEGIN", *["UPDATE"] * 501, "COMMIT"]
    assert checked == [[counter.pk]]
    assert f"Not verifying djangoapp.Article row {other.pk} after commit" in caplog.text
    assert spy.threads == [] and all(vectors_match_text(Article).values())
