"""Each system check fires on its misconfiguration, with its stable id."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from django.db import connection, models
from django.test import modify_settings, override_settings
from django.test.utils import isolate_apps

from django_semsim.checks import check_connection, check_semantic_model
from django_semsim.models import EmbeddingModel, SemanticModel, companion_of
from tests.djangoapp.models import Article


def _ids(messages: list[checks.CheckMessage]) -> set[str]:
    return {m.id for m in messages if m.id and m.id.startswith("semsim.")}


def test_installed_apps_and_settings_are_clean() -> None:
    assert _ids(checks.run_checks()) == {"semsim.W001"}  # tests.djangoapp.Note has Python-only text on purpose


def test_e001_contrib_postgres_missing() -> None:
    with modify_settings(INSTALLED_APPS={"remove": ["django.contrib.postgres"]}):
        messages = checks.run_checks(tags=[checks.Tags.compatibility])
    (error,) = [m for m in messages if m.id == "semsim.E001"]
    assert "django.contrib.postgres" in error.hint


@pytest.mark.parametrize(
    ("semsim", "needle"),
    [
        ({"SYNC": "later"}, "SYNC"),
        ({"EF_SEARCH": 0}, "EF_SEARCH"),
        ({"MODLE": "x"}, "Unknown key"),
        ({"HNSW_M": 40}, "HNSW_EF_CONSTRUCTION (64) must be at least twice HNSW_M (40)"),
        ({"WORKER_POLL_SECONDS": 0}, "WORKER_POLL_SECONDS must be a number of seconds between 0.01 and 3600, got 0"),
        ({"WORKER_POLL_SECONDS": "2"}, "WORKER_POLL_SECONDS"),
        ({"WORKER_MAX_BACKOFF_SECONDS": float("nan")}, "WORKER_MAX_BACKOFF_SECONDS"),
        ({"MIGRATE_LOCK_TIMEOUT_SECONDS": 0}, "MIGRATE_LOCK_TIMEOUT_SECONDS must be a number of seconds between 0.01"),
    ],
)
def test_e005_invalid_settings(semsim: dict[str, object], needle: str) -> None:
    with override_settings(SEMSIM=semsim):
        messages = checks.run_checks(tags=[checks.Tags.compatibility])
    (error,) = [m for m in messages if m.id == "semsim.E005"]
    assert needle in error.msg


@isolate_apps("tests.djangoapp")
def test_model_checks() -> None:
    class MissingField(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)
        semantic_fields = ["title", "summary"]

    class NotText(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        count = models.IntegerField()
        semantic_fields = ["count"]

    class NoText(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)

    class BadMetric(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)
        semantic_fields = ["title"]
        semantic_metric = "hamming"

    class PythonText(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)

        def semantic_text(self) -> str:
            return str(self.title).upper()

    class Good(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)
        body = models.TextField()
        semantic_fields = ["title", "body"]

    assert _ids(check_semantic_model(MissingField)) == {"semsim.E002"}
    assert "summary" in check_semantic_model(MissingField)[0].msg
    assert _ids(check_semantic_model(NotText)) == {"semsim.E003"}
    assert _ids(check_semantic_model(NoText)) == {"semsim.E004"}
    assert _ids(check_semantic_model(BadMetric)) == {"semsim.E006"}
    assert _ids(check_semantic_model(PythonText)) == {"semsim.W001"}
    assert check_semantic_model(Good) == []
    assert companion_of(Good).__name__ == "GoodEmbedding"


def test_e007_database_not_postgresql() -> None:
    from django.db.backends.sqlite3.base import DatabaseWrapper

    sqlite = DatabaseWrapper(
        {**connection.settings_dict, "ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}, alias="lite"
    )
    (error,) = check_connection(sqlite)
    assert error.id == "semsim.E007" and "sqlite" in error.msg


@pytest.mark.django_db
def test_database_is_clean() -> None:
    assert _ids(check_connection(connection)) == set()


@contextlib.contextmanager
def _database_without_pgvector(django_db_blocker, role: str | None = None) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A second, real database (outside the test transaction) under the alias ``noext``; with
    ``role``, owned by that new role, which the connection takes on (``-c role=``)."""
    from django.db import connections

    name = f"semsim_noext_{uuid.uuid4().hex[:8]}"
    settings = {**connection.settings_dict, "NAME": name}
    with django_db_blocker.unblock():
        with connection._nodb_cursor() as cursor:
            if role is not None:
                cursor.execute(f"CREATE ROLE {role}")
                settings["OPTIONS"] = {**settings.get("OPTIONS", {}), "options": f"-c role={role}"}
            cursor.execute(f'CREATE DATABASE "{name}"' + (f" OWNER {role}" if role else ""))
        # a real alias (django.contrib.postgres looks connections up by alias when they open)
        connections.settings["noext"] = settings
        other = connections["noext"]
        try:
            yield other
        finally:
            other.close()
            del connections["noext"]
            del connections.settings["noext"]
            with connection._nodb_cursor() as cursor:
                cursor.execute(f'DROP DATABASE "{name}"')
                if role is not None:
                    cursor.execute(f"DROP ROLE {role}")


def test_e008_pgvector_missing_from_a_migrated_database(django_db_setup, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    with _database_without_pgvector(django_db_blocker) as other:
        assert check_connection(other) == []  # not migrated yet: migrate will create the extension
        with other.cursor() as cursor:
            cursor.execute("CREATE TABLE django_migrations (id serial, app text, name text, applied timestamptz)")
            cursor.execute(
                "INSERT INTO django_migrations (app, name, applied) VALUES ('django_semsim', '0001_initial', now())"
            )
        (error,) = check_connection(other)
        assert error.id == "semsim.E008" and "CREATE EXTENSION" in error.hint


def test_e008_pgvector_not_installed_and_the_role_cannot_create_it(django_db_setup, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    """The database's owner, not a superuser: migrate would fail at CREATE EXTENSION, so the check
    says who must create it."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    with _database_without_pgvector(django_db_blocker, role) as other:
        (error,) = check_connection(other)
        name = other.settings_dict["NAME"]
        assert error.id == "semsim.E008" and f"role {role} cannot create it" in error.msg, error.msg
        assert error.hint == f"Have a superuser run CREATE EXTENSION vector; in {name}, then migrate."


@pytest.mark.django_db
def test_w002_column_dimension_differs() -> None:
    table = companion_of(Article)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector(8)")
    (warning,) = check_connection(connection)
    assert warning.id == "semsim.W002" and "vector(8)" in warning.msg and "vector(384)" in warning.msg
    assert "semsim_reindex --all" in warning.hint


@pytest.mark.django_db
def test_w003_vectors_of_another_model(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import call_command

    with django_capture_on_commit_callbacks(execute=True):
        article = Article.objects.create(title="Model change", body="old vectors")
    old = EmbeddingModel.objects.create(name="paraphrase-old-model", dimension=384)
    companion = companion_of(Article)
    current = companion.objects.get(source=article)
    companion.objects.create(source=article, model=old, text_hash=current.text_hash, embedding=current.embedding)
    (warning,) = check_connection(connection)
    assert warning.id == "semsim.W003" and "paraphrase-old-model" in warning.msg
    assert f"semsim_reindex --all {Article._meta.label}" in warning.hint
    call_command("semsim_reindex", "--all", verbosity=0)
    assert check_connection(connection) == []


def test_readme_settings_table_is_conf_py() -> None:
    from pathlib import Path

    from django_semsim.conf import DEFAULTS, settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme
    # and every key the README's table names is one conf.py accepts, with the default it documents
    rows = [line for line in settings_table().splitlines()[2:]]
    assert [row.split("`")[1] for row in rows] == list(DEFAULTS)


def test_search_defaults_are_the_cores() -> None:
    from django_semsim.conf import get_config
    from semsim_pg.settings import Settings

    core, config = Settings(), get_config()
    assert (config.ef_search, config.iterative_scan) == (core.ef_search, core.iterative_scan)


@isolate_apps("tests.djangoapp")
def test_search_config_checks() -> None:
    from django.contrib.postgres.indexes import GinIndex
    from django.contrib.postgres.search import SearchVector

    class Indexed(SemanticModel):
        class Meta:
            app_label = "djangoapp"
            indexes = [GinIndex(SearchVector("title", "body", config="simple"), name="indexed_search")]

        title = models.CharField(max_length=10)
        body = models.TextField()
        semantic_fields = ["title", "body"]
        search_config = "simple"

    class Unindexed(SemanticModel):
        class Meta:
            app_label = "djangoapp"
            # an index on other words than the search's: it does not serve it
            indexes = [GinIndex(SearchVector("title", config="simple"), name="unindexed_search")]

        title = models.CharField(max_length=10)
        body = models.TextField()
        semantic_fields = ["title", "body"]
        search_config = "simple"

    class PythonWords(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)
        search_config = "english"

        def semantic_text(self) -> str:
            return str(self.title).upper()

    class NotAName(SemanticModel):
        class Meta:
            app_label = "djangoapp"

        title = models.CharField(max_length=10)
        semantic_fields = ["title"]
        search_config = ""

    assert check_semantic_model(Indexed) == []
    (warning,) = check_semantic_model(Unindexed)
    assert warning.id == "semsim.W004" and 'SearchVector("title", "body", config="simple")' in warning.hint
    assert _ids(check_semantic_model(PythonWords)) == {"semsim.E011", "semsim.W001"}
    assert _ids(check_semantic_model(NotAName)) == {"semsim.E011"}


@pytest.mark.django_db
def test_e010_unknown_text_search_config(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(Article, "search_config", "klingon")
    (error,) = check_connection(connection)
    assert error.id == "semsim.E010" and "'klingon'" in error.msg and "its search_config" in error.msg
    assert "english" in error.hint and "simple" in error.hint
    monkeypatch.setattr(Article, "search_config", None)
    with override_settings(SEMSIM={"SYNC": "inline", "TEXT_SEARCH_CONFIG": "elvish"}):
        errors = check_connection(connection)
    assert {e.id for e in errors} == {"semsim.E010"}
    assert Article in {e.obj for e in errors} and all("TEXT_SEARCH_CONFIG" in e.msg for e in errors)


@pytest.mark.parametrize("semsim", ['{"SYNC": "later"}', '{"HNSW_M": 0}', '"not a dict"'])
def test_invalid_settings_are_a_check_error_not_a_crash_at_import(semsim: str) -> None:
    """Semantic models build their companions while Django imports them, before any check runs:
    invalid settings there must reach ``manage.py check`` as semsim.E005, not a traceback from
    django.setup() (the FAQ app's models alone are enough to hit it)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "from django.conf import settings\n"
        "import tests.django_settings as base\n"
        "values = {k: getattr(base, k) for k in dir(base) if k.isupper()}\n"
        f"values['SEMSIM'] = {semsim}\n"
        "settings.configure(**values)\n"
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(['manage.py', 'check'])\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(semsim.E005) Invalid settings.SEMSIM" in done.stderr or "(semsim.E005) settings.SEMSIM" in done.stderr, (
        done.stderr
    )
    assert "Traceback" not in done.stderr, done.stderr
