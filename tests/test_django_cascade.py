"""A user's delete() meets a background drain: the companion's foreign key cascades in the database.

Django's Collector deletes the companion rows first and the source rows in a second statement;
a drain that commits a companion row for one of those source rows in between (a placeholder, a
passage) used to make the user's commit fail on the deferred foreign key check.
"""

from __future__ import annotations

import copy
import io
import logging
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction
from django.test import override_settings

from django_semsim import sync
from django_semsim.cascade import cascade_companion_keys, companion_keys
from django_semsim.checks import check_connection
from django_semsim.models import companion_of, semantic_models
from tests.djangoapp.models import Article, Note, Recipe, Report
from tests.djangoapp.testing import in_thread


def recreate_key(model: type[Any]) -> None:
    """Drop the companion's source key and let Django create it again, with its own SQL (NO ACTION),
    as a migration that alters the field does."""
    companion = companion_of(model)
    field = companion._meta.get_field("source")
    loose = copy.copy(field)
    loose.db_constraint = False
    with connection.schema_editor() as editor:
        editor.alter_field(companion, field, loose)
        editor.alter_field(companion, loose, field)


def w007() -> list[Any]:
    return [m for m in check_connection(connection) if m.id == "semsim.W007"]


class AfterCompanionDelete:
    """An execute wrapper: runs ``between`` (in another connection) once the companion rows are deleted."""

    def __init__(self, model: type[Any], between: Any) -> None:
        self.table = companion_of(model)._meta.db_table
        self.between = between
        self.ran = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith(f'DELETE FROM "{self.table}"') and not self.ran:
            self.ran += 1
            in_thread(self.between)  # committed before the source rows are deleted
        return result


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("model", [Article, Recipe], ids=["own-rows", "multi-table-child"])
def test_a_placeholder_committed_between_the_two_deletes_goes_with_its_row(model) -> None:  # type: ignore[no-untyped-def]
    with override_settings(SEMSIM={"SYNC": "worker"}):  # not encoded yet: no companion row
        rows = [model.objects.create(title=f"Created and deleted at once {i}", body="") for i in range(6)]
    doomed = [row.pk for row in rows[::2]]
    between = AfterCompanionDelete(Article, lambda: sync.add_placeholders(Article, pks=doomed))
    with connection.execute_wrapper(between):
        deleted, _ = model.objects.filter(pk__in=doomed).delete()
    assert between.ran == 1 and deleted >= len(doomed)
    companions = companion_of(Article).objects
    assert not companions.filter(source_id__in=doomed).exists()
    assert Article.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_passages_written_between_the_two_deletes_go_with_their_row(encoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sync, "get_model_encoder", lambda: encoder)
    body = " ".join(f"Sentence {i} about the tides, the moon and the harbour wall." for i in range(20))
    with override_settings(SEMSIM={"SYNC": "worker"}):
        reports = [Report.objects.create(title=f"Long report {i}", body=body) for i in range(3)]
    doomed = [reports[0].pk, reports[2].pk]
    drained: list[Any] = []
    # a whole drain in between: placeholders, then several passage rows per report, committed
    between = AfterCompanionDelete(Report, lambda: drained.append(sync.drain(Report, pks=doomed)))
    with connection.execute_wrapper(between):
        Report.objects.filter(pk__in=doomed).delete()
    assert sorted(drained[0].written) == sorted(doomed)
    assert not companion_of(Report).objects.filter(source_id__in=doomed).exists()
    assert list(Report.objects.values_list("pk", flat=True)) == [reports[1].pk]


@pytest.mark.django_db
def test_every_companion_key_cascades_deferred_on_the_test_database() -> None:
    # pytest-django created this database with migrate: the receiver ran there
    keys = companion_keys()
    assert {key.model for key in keys} == set(semantic_models()) and len(keys) == len(semantic_models())
    assert all(key.cascades and key.validated for key in keys)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bool_and(condeferrable AND condeferred) FROM pg_constraint WHERE conname = ANY(%s)",
            [[key.name.strip('"') for key in keys]],
        )
        assert cursor.fetchone()[0] is True
    assert cascade_companion_keys() == []  # idempotent


@pytest.mark.django_db(transaction=True)
def test_a_migration_that_recreates_the_key_gets_the_cascade_back_on_migrate(caplog) -> None:  # type: ignore[no-untyped-def]
    companion = companion_of(Article)
    recreate_key(Article)
    (warning,) = w007()
    assert warning.obj is Article and companion._meta.db_table in warning.msg and "migrate" in warning.hint
    article = Article.objects.create(title="Kept by the old key", body="")
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:  # NO ACTION: a raw delete of a row with vectors fails at commit
            cursor.execute(f"DELETE FROM {Article._meta.db_table} WHERE id = %s", [article.pk])

    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="django_semsim.cascade"):
        call_command("migrate", verbosity=1, stdout=out)
    assert f"{companion._meta.db_table}" in out.getvalue()
    assert "ON DELETE CASCADE" in caplog.text and "Article" in caplog.text
    assert not w007()
    with connection.cursor() as cursor:  # the database deletes the vectors with the row
        cursor.execute(f"DELETE FROM {Article._meta.db_table} WHERE id = %s", [article.pk])
    assert not companion.objects.filter(source_id=article.pk).exists()
    out = io.StringIO()
    call_command("migrate", verbosity=1, stdout=out)
    assert "cascade" not in out.getvalue()  # nothing left to change


def test_migrating_a_second_database_cascades_its_keys(django_db_setup, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    name = f"semsim_second_{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connections.settings["second"] = {**connection.settings_dict, "NAME": name}
        try:
            assert companion_keys("second") == []  # not migrated: no table, nothing to change
            call_command("migrate", database="second", verbosity=0)
            keys = companion_keys("second")
            assert len(keys) == len(semantic_models()) and all(key.cascades and key.validated for key in keys)
        finally:
            connections["second"].close()
            del connections["second"]
            del connections.settings["second"]
            with connection._nodb_cursor() as cursor:
                cursor.execute(f'DROP DATABASE "{name}"')


@pytest.mark.django_db(transaction=True)
def test_a_migrate_behind_a_long_transaction_leaves_the_key_with_a_warning_and_succeeds(caplog) -> None:  # type: ignore[no-untyped-def]
    recreate_key(Article)
    table = companion_of(Article)._meta.db_table
    report = connection.get_new_connection(connection.get_connection_params())
    try:
        # a long report reading the source table, left open: it holds an ACCESS SHARE lock, which the
        # key's change (ACCESS EXCLUSIVE) waits for. It ends itself after a while, so that a migrate
        # that waits for it (no lock timeout) ends too, and this test fails rather than hangs.
        report.execute("SET idle_in_transaction_session_timeout = '60s'")
        report.execute(f"SELECT count(*) FROM {Article._meta.db_table}")
        out = io.StringIO()
        semsim = {**django_settings.SEMSIM, "MIGRATE_LOCK_TIMEOUT_SECONDS": 0.2}
        with override_settings(SEMSIM=semsim), caplog.at_level(logging.WARNING, logger="django_semsim.cascade"):
            call_command("migrate", verbosity=1, stdout=out)
        assert report.execute("SELECT 1").fetchone() == (1,)  # the migrate ended first: it did not wait
        (record,) = [r for r in caplog.records if r.name == "django_semsim.cascade"]
        message = record.getMessage()
        assert record.levelno == logging.WARNING and "\n" not in message
        assert table in message and "Article" in message and "lock timeout" in message
        assert "migrate again at a quiet moment" in message and "MIGRATE_LOCK_TIMEOUT_SECONDS" in message
        assert "cascade" not in out.getvalue()  # nothing changed
        (warning,) = w007()
        assert warning.obj is Article
    finally:
        report.close()
    call_command("migrate", verbosity=0)  # the report is over: the next migrate changes it
    assert not w007()


@pytest.mark.django_db(transaction=True)
def test_a_role_that_does_not_own_a_companion_table_gets_a_warning_and_the_other_keys_change(caplog) -> None:  # type: ignore[no-untyped-def]
    # the upgrade's migrate run by the app's role (GRANT ALL, not the owner), as a container's
    # entrypoint does: Article's table is not the role's (and comes first), Note's is
    recreate_key(Article)
    recreate_key(Note)
    article, note = (companion_of(model)._meta.db_table for model in (Article, Note))
    role = f"app_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        cursor.execute(f"ALTER TABLE {note} OWNER TO {role}")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")
        out = io.StringIO()
        with caplog.at_level(logging.INFO, logger="django_semsim.cascade"):
            call_command("migrate", verbosity=1, stdout=out)  # no traceback
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (role,)  # the same session throughout
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            cursor.execute(f"ALTER TABLE {note} OWNER TO {owner}")
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE {role}")
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "django_semsim.cascade"]
    message = record.getMessage()
    assert "\n" not in message and article in message and f"owner {owner}" in message
    assert f"migrate as {owner}" in message and "semsim.W007" in message
    assert note in out.getvalue() and article not in out.getvalue()  # Note's key changed after Article's failed
    keys = {key.model: key for key in companion_keys()}
    assert keys[Note].cascades and keys[Note].validated and not keys[Article].cascades
    (warning,) = w007()
    assert warning.obj is Article and f"migrate as {owner}" in warning.hint


@pytest.mark.django_db(transaction=True)
def test_the_sql_of_w007s_hint_run_by_the_owner_gives_the_key_its_cascade() -> None:
    recreate_key(Report)
    (warning,) = w007()
    assert warning.obj is Report
    sql = warning.hint.split("(sqlmigrate does not show it): ", 1)[1]
    assert sql.startswith("BEGIN; SET LOCAL lock_timeout = '3s'; ALTER TABLE ")
    with connection.cursor() as cursor:  # what a DBA pastes into psql: one string, several statements
        cursor.execute(sql)
    assert not w007()
    (key,) = [key for key in companion_keys() if key.model is Report]
    assert key.cascades and key.validated
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT condeferrable AND condeferred FROM pg_constraint WHERE conname = %s", [key.name.strip('"')]
        )
        assert cursor.fetchone() == (True,)
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone() == ("0",)  # SET LOCAL: the session's own setting is back
