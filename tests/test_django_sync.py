"""Keeping vectors current: every write path, batching, workers in parallel, late workers, crashes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import override_settings

from django_semsim import status, sync
from django_semsim.conf import get_config
from django_semsim.expressions import TextHash
from django_semsim.models import companion_of
from semsim_pg.encoder import text_hash
from tests.djangoapp.models import Article, Manual, Note
from tests.djangoapp.testing import CORPUS, in_thread, vectors_match_text


class SpyEncoder:
    """The real encoder, counting calls; optionally doing something first (a crash, a concurrent write)."""

    def __init__(self, real: Any, before: Any = None) -> None:
        self.real = real
        self.before = before
        self.calls: list[int] = []

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.calls.append(len(texts))
        if self.before is not None:
            self.before(texts)
        return self.real.encode(texts, **kwargs)

    def encode_query(self, text: str) -> Any:
        return self.real.encode_query(text)


@pytest.fixture()
def spy(monkeypatch, encoder):  # type: ignore[no-untyped-def]
    spy = SpyEncoder(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    return spy


def _crash(texts: list[str]) -> None:
    raise RuntimeError("encoder crashed (simulated out-of-memory)")


@pytest.mark.django_db
def test_sql_text_and_hash_equal_python(spy) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create(
        [
            Article(title="Plain title", body="with a body"),
            Article(title="No body", body=None),
            Article(title="", body=""),
            Article(title="Ünïcödé — 日本語 ✓", body="line one\nline two\r\n\ttabbed 'quoted' \\ backslash"),
        ]
    )
    expression = Article.semantic_text_expression()
    rows = Article.objects.annotate(sql_text=expression, sql_hash=TextHash(expression))
    for row in rows:
        assert row.sql_text == row.semantic_text()
        assert row.sql_hash == text_hash(row.semantic_text()) == row.semantic_text_hash()


@pytest.mark.django_db
def test_save_encodes_after_commit_and_unchanged_save_encodes_nothing(  # type: ignore[no-untyped-def]
    spy, encoder, django_capture_on_commit_callbacks, django_assert_num_queries
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        article = Article.objects.create(title="Shipping times", body="Orders ship in two days.")
        assert companion_of(Article).objects.count() == 0  # nothing before commit
    assert vectors_match_text(Article) == {article.pk: True}
    assert spy.calls == [1]

    before = encoder.encoded_count
    reloaded = Article.objects.get(pk=article.pk)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, django_assert_num_queries(2):
        reloaded.published = False
        reloaded.views = 10
        reloaded.save()  # UPDATE only
        article.save()  # the instance that was created: its snapshot is the saved text
    assert callbacks == []
    assert encoder.encoded_count == before and spy.calls == [1]

    with django_capture_on_commit_callbacks(execute=True):
        reloaded.title = "Delivery times"
        reloaded.save()
    assert spy.calls == [1, 1]
    assert vectors_match_text(Article) == {article.pk: True}
    assert Article.objects.semantic_search("how long does delivery take", k=1).get().pk == article.pk


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["immediate", "inline"])
def test_a_save_that_changes_no_text_is_one_query_with_hooks_run(  # type: ignore[no-untyped-def]
    mode, spy, django_capture_on_commit_callbacks, django_assert_num_queries
) -> None:
    """What a TestCase sees under captureOnCommitCallbacks(execute=True), as the README advises."""
    with override_settings(SEMSIM={"SYNC": mode}):
        with django_capture_on_commit_callbacks(execute=True):
            article = Article.objects.create(title="Counter page", body="A page with views")
        reloaded = Article.objects.get(pk=article.pk)
        for instance in (article, reloaded):
            with django_assert_num_queries(1), django_capture_on_commit_callbacks(execute=True):
                instance.views += 1
                instance.save()  # the UPDATE, nothing else
        assert spy.calls == [1] and vectors_match_text(Article) == {article.pk: True}
        assert sync.wait_idle(timeout=60)


@pytest.mark.django_db
def test_fifty_saves_in_one_transaction_encode_in_one_batch(spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            for i in range(50):
                Article.objects.create(title=f"Article number {i}", body="about batching")
    assert spy.calls == [50]
    assert all(vectors_match_text(Article).values())


def _bulk_create() -> None:
    Article.objects.bulk_create([Article(title=t, body=b, published=p) for t, b, p in CORPUS[:4]])


def _queryset_update() -> None:
    Article.objects.filter(title__startswith="Re").update(title="Returns and refunds")


def _bulk_update() -> None:
    rows = list(Article.objects.all()[:2])
    for row in rows:
        row.body = f"{row.body} Updated in bulk."
    Article.objects.bulk_update(rows, ["body"])


def _raw_sql() -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE djangoapp_article SET body = body || ' (edited in SQL)' WHERE title LIKE 'S%%'")
        cursor.execute(
            "INSERT INTO djangoapp_article (title, body, published, views) VALUES ('Raw row', NULL, true, 0)"
        )


@pytest.mark.django_db
@pytest.mark.parametrize("write", [_bulk_create, _queryset_update, _bulk_update, _raw_sql])
def test_bypassing_writes_are_found_by_the_reconcile_pass(write, spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        for title, body, published in CORPUS[:4]:
            Article.objects.create(title=title, body=body, published=published)
    assert all(vectors_match_text(Article).values())
    with django_capture_on_commit_callbacks(execute=True):
        write()
    state = vectors_match_text(Article)
    assert not all(state.values()), "the write path should have bypassed the signals"
    counts = status.model_status(Article)
    assert counts.stale + counts.missing == list(state.values()).count(False)
    # rows with an older vector stay searchable meanwhile
    searchable = set(Article.objects.semantic_search("anything at all").values_list("pk", flat=True))
    assert searchable == {pk for pk, ok in state.items() if ok} | {
        pk for pk in state if companion_of(Article).objects.filter(source_id=pk, embedding__isnull=False).exists()
    }
    result = sync.drain(Article)
    assert sorted(result.written) == sorted(pk for pk, ok in state.items() if not ok)
    assert all(vectors_match_text(Article).values())
    assert status.model_status(Article).current == Article.objects.count()


@pytest.mark.django_db
def test_delete_removes_vectors(spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        article = Article.objects.create(title="Short lived", body="gone soon")
    assert companion_of(Article).objects.filter(source_id=article.pk).count() == 1
    article.delete()
    assert companion_of(Article).objects.count() == 0


@pytest.mark.django_db
def test_python_text_model_and_switched_off_model(spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        note = Note.objects.create(heading="Backups", tags="ops")
        manual = Manual.objects.create(text="Only reindexed by hand")
    assert vectors_match_text(Note) == {note.pk: True}
    assert vectors_match_text(Manual) == {manual.pk: False}  # semantic_auto_update = False
    calls = len(spy.calls)
    with django_capture_on_commit_callbacks(execute=True):
        Note.objects.get(pk=note.pk).save()  # Python text is re-checked after commit, not re-encoded
    assert len(spy.calls) == calls
    Note.objects.filter(pk=note.pk).update(tags="ops, disaster recovery")  # bypasses signals
    assert vectors_match_text(Note) == {note.pk: False}
    assert sync.drain(Note).written == [note.pk]
    assert sync.drain(Manual).written == [manual.pk]
    assert all(vectors_match_text(Note).values()) and all(vectors_match_text(Manual).values())


@pytest.mark.django_db
def test_worker_mode_leaves_saves_to_the_worker(spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import call_command

    with override_settings(SEMSIM={"SYNC": "worker"}):
        assert not get_config().immediate
        with django_capture_on_commit_callbacks(execute=True):
            article = Article.objects.create(title="Queued for the worker", body="")
        assert spy.calls == [] and vectors_match_text(Article) == {article.pk: False}
        call_command("semsim_worker", "--once", verbosity=0)
    assert spy.calls == [1] and vectors_match_text(Article) == {article.pk: True}


@pytest.mark.django_db
def test_crashing_encoder_loses_no_row(monkeypatch, encoder, django_capture_on_commit_callbacks, caplog) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import call_command
    from django.core.management.base import CommandError

    crashing = SpyEncoder(encoder, before=_crash)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: crashing)
    with caplog.at_level(logging.ERROR, logger="django_semsim.sync"):
        with django_capture_on_commit_callbacks(execute=True):
            saved = [Article.objects.create(title=t, body=b) for t, b, _ in CORPUS[:3]]  # the save itself succeeds
    assert "stay stale" in caplog.text and crashing.calls == [3]
    with pytest.raises(CommandError, match="crashed"):
        call_command("semsim_worker", "--once", verbosity=0)
    counts = status.model_status(Article)
    assert (counts.rows, counts.missing) == (3, 3)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: encoder)
    assert sorted(sync.drain(Article).written) == sorted(a.pk for a in saved)
    assert all(vectors_match_text(Article).values())


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_workers_in_parallel_process_every_row_exactly_once(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title=f"Stale article {i}", body="parallel") for i in range(40)])
    sync.add_placeholders(Article)
    barrier = threading.Barrier(2)
    written: dict[str, list[Any]] = {"a": [], "b": []}

    class Slow(SpyEncoder):
        def encode(self, texts: list[str], **kwargs: Any) -> Any:
            return self.real.encode(texts, **kwargs)

    monkeypatch.setattr(sync, "get_model_encoder", lambda: Slow(encoder))

    def worker(name: str) -> None:
        try:
            barrier.wait(timeout=30)
            while True:
                result = sync.drain_batch(Article, batch_size=5)
                if result.claimed == 0:
                    break
                written[name].extend(result.written)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(name,)) for name in written]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert written["a"] and written["b"], "both workers should have taken batches"
    assert not set(written["a"]) & set(written["b"])
    assert sorted(written["a"] + written["b"]) == sorted(Article.objects.values_list("pk", flat=True))
    assert all(vectors_match_text(Article).values())


@pytest.mark.django_db(transaction=True)
def test_late_worker_does_not_overwrite_newer_text(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    article = Article.objects.bulk_create([Article(title="Old title", body="old body")])[0]

    edits = {"Old title\nold body": "New title", "Second old title\nold body": "Newest title"}

    def edit_meanwhile(texts: list[str]) -> None:
        # another process saves new text while this worker is encoding the old one
        if texts[0] in edits:
            title = edits.pop(texts[0])
            in_thread(lambda: Article.objects.filter(pk=article.pk).update(title=title))

    late = SpyEncoder(encoder, before=edit_meanwhile)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: late)
    sync.add_placeholders(Article)
    result = sync.drain_batch(Article)
    assert (result.claimed, result.written, result.conflicts) == (1, [], 1)
    row = companion_of(Article).objects.get(source_id=article.pk)
    assert row.embedding is None and row.text_hash != text_hash("Old title\nold body")
    # drain() claims the row again with its new text (the saver skipped it while it was locked)
    result = sync.drain(Article)
    assert (result.written, result.conflicts) == ([article.pk], 0)
    assert late.calls == [1, 1]
    row = companion_of(Article).objects.get(source_id=article.pk)
    assert row.text_hash == text_hash("New title\nold body")
    Article.objects.filter(pk=article.pk).update(title="Second old title")
    total = sync.drain(Article)  # the same race inside one drain: it claims the row again and ends current
    assert (total.written, total.conflicts, total.batches) == ([article.pk], 1, 2)
    assert companion_of(Article).objects.get(source_id=article.pk).text_hash == text_hash("Newest title\nold body")
    assert all(vectors_match_text(Article).values())


@pytest.mark.django_db
def test_update_fields_without_text_then_full_save(spy, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        article = Article.objects.create(title="Original", body="text")
    article.title = "Edited in memory"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        article.views = 3
        article.save(update_fields=["views"])  # the title is not written: nothing to encode
    assert callbacks == [] and spy.calls == [1]
    with django_capture_on_commit_callbacks(execute=True):
        article.save()  # now the edited title reaches the database, and gets its vector
    assert spy.calls == [1, 1]
    assert all(vectors_match_text(Article).values())


def _live_lanes() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("semsim-drain")]


class LaneSpy(SpyEncoder):
    """The real encoder, recording which thread encoded each batch and how many encoded at once.

    The caller's second batch waits (bounded) until the extra lane has claimed a batch, so that
    both lanes take part however the threads are scheduled."""

    def __init__(self, real: Any, before: Any = None) -> None:
        super().__init__(real, before)
        self.threads: list[str] = []
        self.lane_claimed = threading.Event()
        self._lock = threading.Lock()
        self._inside = 0
        self.most_at_once = 0

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        name = threading.current_thread().name
        with self._lock:
            self.threads.append(name)
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
        try:
            if name == "MainThread" and self.threads.count(name) == 2:
                self.lane_claimed.wait(60)
            return super().encode(texts, **kwargs)
        finally:
            with self._lock:
                self._inside -= 1


def _watch_claims(monkeypatch: Any, spy: LaneSpy) -> None:
    claim = sync._claim_sql

    def watched(*args: Any, **kwargs: Any) -> Any:
        rows = claim(*args, **kwargs)
        if rows and threading.current_thread().name.startswith("semsim-drain"):
            spy.lane_claimed.set()
        return rows

    monkeypatch.setattr(sync, "_claim_sql", watched)


@pytest.mark.django_db(transaction=True)
def test_a_long_drain_runs_in_two_lanes_that_encode_in_turns(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title=f"Stale article {i}", body="two lanes") for i in range(30)])
    spy = LaneSpy(encoder)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    _watch_claims(monkeypatch, spy)
    result = sync.drain(Article, batch_size=5)
    assert set(spy.threads) == {"MainThread", "semsim-drain-1"}
    assert spy.most_at_once == 1  # one batch encodes at a time; the other lane claims or writes
    assert sorted(result.written) == sorted(Article.objects.values_list("pk", flat=True))  # each once
    assert (result.batches, result.claimed, result.conflicts) == (6, 30, 0)
    assert all(vectors_match_text(Article).values())
    assert _live_lanes() == []


@pytest.mark.django_db(transaction=True)
def test_text_changed_while_the_other_lane_encodes_is_not_written_with_the_old_vector(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title=f"Stale article {i}", body="two lanes") for i in range(20)])
    edited: list[str] = []

    def edit_meanwhile(texts: list[str]) -> None:
        # another process saves new text while the extra lane encodes the old one
        if threading.current_thread().name != "MainThread" and not edited:
            title = texts[0].split("\n")[0]
            edited.append(title)
            in_thread(lambda: Article.objects.filter(title=title).update(title=title + " (edited)"))

    spy = LaneSpy(encoder, before=edit_meanwhile)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    _watch_claims(monkeypatch, spy)
    result = sync.drain(Article, batch_size=5)
    assert edited and result.conflicts == 1  # left stale by its batch, then claimed again with its new text
    row = companion_of(Article).objects.get(source__title=edited[0] + " (edited)")
    assert row.text_hash == text_hash(f"{edited[0]} (edited)\ntwo lanes")
    assert all(vectors_match_text(Article).values())
    assert _live_lanes() == []


@pytest.mark.django_db(transaction=True)
def test_an_encoder_failing_in_one_lane_stops_the_drain_and_loses_no_row(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Article.objects.bulk_create([Article(title=f"Stale article {i}", body="two lanes") for i in range(30)])

    def crash_third(texts: list[str]) -> None:
        if len(spy.calls) == 3:
            _crash(texts)

    spy = LaneSpy(encoder, before=crash_third)
    monkeypatch.setattr(sync, "get_model_encoder", lambda: spy)
    _watch_claims(monkeypatch, spy)
    with pytest.raises(RuntimeError, match="crashed"):
        sync.drain(Article, batch_size=5)
    assert _live_lanes() == []
    current = vectors_match_text(Article)
    assert 0 < sum(current.values()) < 30  # the batches before the crash are written, its own is not
    monkeypatch.setattr(sync, "get_model_encoder", lambda: encoder)
    sync.drain(Article, batch_size=5)
    assert all(vectors_match_text(Article).values())


def _lock_waiter(timeout: float = 60) -> bool:
    """Whether another connection is waiting for a lock, polled until ``timeout`` (a thread's progress)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # in a transaction it would read one snapshot
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


class PlaceholderInserts:
    """A connection's execute wrapper: counts the placeholder inserts, runs ``after`` after the first."""

    def __init__(self, after: Any = None) -> None:
        self.after = after
        self.count = 0
        self.table = companion_of(Article)._meta.db_table

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith(f'INSERT INTO "{self.table}"') and "NOT EXISTS" in sql:
            self.count += 1
            if self.count == 1 and self.after is not None:
                self.after()
        return result


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", [True, False], ids=["delete-commits", "delete-rolls-back"])
def test_a_row_deleted_while_a_drain_commits_its_placeholders_spoils_nothing(spy, deleted) -> None:  # type: ignore[no-untyped-def]
    # Django's foreign keys are checked at commit: a placeholder inserted for a row that another
    # transaction deletes meanwhile used to fail the drain's commit, and every other row with it.
    doomed, survivor = Article.objects.bulk_create(
        [Article(title="Created and deleted at once", body=""), Article(title="Survivor about horses", body="")]
    )
    box: dict[str, Any] = {}
    inserts = PlaceholderInserts()

    def drain() -> None:
        try:
            with connection.execute_wrapper(inserts):
                box["result"] = sync.drain(Article, pks=[doomed.pk, survivor.pk])
        except BaseException as exc:  # re-raised below
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=drain)
    with transaction.atomic():
        Article.objects.filter(pk=doomed.pk).delete()  # the row stays locked until this ends
        thread.start()
        assert _lock_waiter(), "the drain's commit never came to check the deleted row"
        transaction.set_rollback(not deleted)
    thread.join(timeout=120)
    if "error" in box:
        raise box["error"]
    expected = {survivor.pk: True} if deleted else {doomed.pk: True, survivor.pk: True}
    assert vectors_match_text(Article) == expected
    assert sorted(box["result"].written) == sorted(expected)
    assert companion_of(Article).objects.count() == len(expected)
    assert inserts.count == (2 if deleted else 1)  # a commit that met the deleted row was tried again


@pytest.mark.django_db(transaction=True)
def test_a_placeholder_whose_row_is_deleted_before_the_commit_is_left_out(spy) -> None:  # type: ignore[no-untyped-def]
    doomed, survivor = Article.objects.bulk_create(
        [Article(title="Created and deleted at once", body=""), Article(title="Survivor about horses", body="")]
    )
    # another transaction deletes the row and commits after the insert read it, before its commit
    inserts = PlaceholderInserts(after=lambda: in_thread(lambda: Article.objects.filter(pk=doomed.pk).delete()))
    with connection.execute_wrapper(inserts):
        result = sync.drain(Article, pks=[doomed.pk, survivor.pk])
    assert result.written == [survivor.pk]
    assert inserts.count == 1  # left out before the commit, not tried again
    assert vectors_match_text(Article) == {survivor.pk: True}
    assert companion_of(Article).objects.count() == 1
