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
from django.test import override_settings

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
