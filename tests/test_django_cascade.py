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
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction
from django.test import override_settings

from django_semsim import sync
from django_semsim.cascade import cascade_companion_keys, companion_keys
from django_semsim.checks import check_connection
from django_semsim.models import companion_of, semantic_models
from tests.djangoapp.models import Article, Recipe, Report
from tests.djangoapp.testing import in_thread


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
    field = companion._meta.get_field("source")
    loose = copy.copy(field)
    loose.db_constraint = False
    with connection.schema_editor() as editor:  # Django re-creates the key with its own SQL (NO ACTION)
        editor.alter_field(companion, field, loose)
        editor.alter_field(companion, loose, field)
    (warning,) = [m for m in check_connection(connection) if m.id == "semsim.W007"]
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
    assert not [m for m in check_connection(connection) if m.id == "semsim.W007"]
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
