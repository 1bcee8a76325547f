"""Async views: ``async for`` over a search and ``await qs.afirst()`` never block the event loop on encoding.

The query is encoded when the SQL is built, and Django's async QuerySet API builds and runs it
inside ``sync_to_async`` (a worker thread), so the loop keeps serving other tasks meanwhile. The
test makes each encode wait until a task on the loop has ticked a few times: if an encode ever
ran on the loop's thread, the loop could not tick and the encode would give up and fail.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync

from tests.djangoapp.models import Article, Category
from tests.djangoapp.testing import CORPUS

pytestmark = pytest.mark.django_db

#: ticks of the loop each encode waits for, and how long it waits at most before failing
TICKS, PATIENCE_S = 3, 30.0


@pytest.fixture()
def articles(django_capture_on_commit_callbacks, encoder):  # type: ignore[no-untyped-def]
    category = Category.objects.create(name="help")
    with django_capture_on_commit_callbacks(execute=True):
        return [Article.objects.create(title=t, body=b, published=p, category=category) for t, b, p in CORPUS]


def test_async_search_keeps_the_event_loop_running(articles, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import django_semsim.encoding

    real = django_semsim.encoding.get_model_encoder()
    ticks = [0]
    encodes: list[tuple[int, int]] = []  # (thread of the encode, ticks seen while it waited)

    class WaitsForTheLoop:
        def encode_query(self, text: str) -> object:
            start = ticks[0]
            deadline = time.monotonic() + PATIENCE_S
            while ticks[0] < start + TICKS:
                if time.monotonic() > deadline:
                    raise AssertionError("the event loop did not run while the query was encoded")
                time.sleep(0.001)
            encodes.append((threading.get_ident(), ticks[0] - start))
            return real.encode_query(text)

    monkeypatch.setattr(django_semsim.encoding, "get_model_encoder", WaitsForTheLoop)

    async def view() -> tuple[list[str], str, str, int]:
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks[0] += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        try:
            titles = [a.title async for a in Article.objects.semantic_search("I forgot my password", k=3)]
            first = await Article.objects.filter(published=True).semantic_search("feeding my kitten", k=5).afirst()
            hybrid = await Article.objects.hybrid_search("password login", k=5).afirst()
        finally:
            done.set()
            await task
        assert first is not None and hybrid is not None
        return titles, first.title, hybrid.title, threading.get_ident()

    titles, first, hybrid, loop_thread = async_to_sync(view)()
    assert titles[0] == "Reset your password" and len(titles) == 3
    assert first == "Feeding cats"
    assert hybrid == "Reset your password"
    assert len(encodes) == 3
    assert all(thread != loop_thread and seen >= TICKS for thread, seen in encodes)
