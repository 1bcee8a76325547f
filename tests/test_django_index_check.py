"""manage.py semsim_index_check: live recall of a companion HNSW index against exact search."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_semsim.models import companion_of
from tests.djangoapp.models import Article
from tests.djangoapp.testing import insert_random_rows

pytestmark = pytest.mark.django_db


def _check(*args: str) -> tuple[int, list[dict[str, object]]]:
    out = StringIO()
    try:
        call_command("semsim_index_check", "djangoapp.Article", "--json", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_index_check_measures_recall_of_the_companion_index_and_sees_it_missing() -> None:
    insert_random_rows(300, published_every=3)
    code, (check,) = _check("--sample", "50", "-k", "10")
    assert check["collection"] == "djangoapp.Article" and check["state"] == "valid"
    assert check["sample"] == 50 and check["recall"] is not None
    # 300 random 384-d vectors: the graph at the default ef_search finds nearly all of the exact top 10
    assert 0.9 <= check["recall"] <= 1.0
    assert code == (0 if check["recall"] >= 0.95 else 3)
    # ef_search 1 without iterative scans returns one candidate per search: recall falls near 0.1
    # and the check names a fix (the core's suggestion, in SEMSIM's words)
    with override_settings(SEMSIM={**getattr(django_settings, "SEMSIM", {}), "ITERATIVE_SCAN": "off"}):
        code, (low,) = _check("--sample", "50", "--ef-search", "1")
    assert low["recall"] < check["recall"] and code == 3
    assert "EF_SEARCH" in low["suggestion"] or "HNSW_M" in low["suggestion"]
    companion = companion_of(Article)
    with connection.schema_editor() as editor:
        editor.remove_index(companion, companion._meta.indexes[0])
    code, (gone,) = _check()
    assert gone["state"] == "missing" and gone["recall"] is None and code == 3
    assert "migrate" in gone["suggestion"]


def test_warmup_reads_the_companion_index_through_the_graph_and_reports_a_missing_one() -> None:
    insert_random_rows(300, published_every=3)
    companion = companion_of(Article)
    index = companion._meta.indexes[0].name

    def scans() -> int:  # this transaction's scans of the index (the command runs in a savepoint of it)
        with connection.cursor() as cur:
            cur.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", [index])
            return int(cur.fetchone()[0])

    before = scans()
    out = StringIO()
    call_command("semsim_warmup", "djangoapp.Article", "--no-model", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert "model" not in report
    (warmed,) = report["indexes"]
    assert warmed["model"] == "djangoapp.Article" and warmed["state"] == "valid" and warmed["fits"] is True
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {companion._meta.db_table} WHERE embedding IS NOT NULL")
        assert warmed["vectors"] == cur.fetchone()[0] > 0
    if warmed["method"] == "index scan":  # a server without pg_prewarm (the embedded one)
        assert warmed["visited"] >= 0.99 * warmed["vectors"]
        assert scans() == before + 1  # one ordered scan of the HNSW index itself, not a table scan
    out = StringIO()
    call_command("semsim_warmup", "djangoapp.Article", "--no-model", stdout=out)
    assert f"index {index}" in out.getvalue() and "in memory" in out.getvalue()
    with connection.schema_editor() as editor:
        editor.remove_index(companion, companion._meta.indexes[0])
    out = StringIO()
    call_command("semsim_warmup", "djangoapp.Article", "--no-model", "--json", stdout=out)
    (gone,) = json.loads(out.getvalue())["indexes"]
    assert gone["state"] == "missing" and "migrate" in gone["suggestion"]


def test_a_model_with_no_rows_yet_is_healthy() -> None:
    """A site whose model is still empty: the index is valid, there is nothing to miss, and the
    exit status stays 0 (a cron job alerting on 3 would alert for ever)."""
    code, (empty,) = _check()
    assert empty["state"] == "valid" and empty["sample"] == 0 and empty["recall"] is None
    assert "no vectors yet" in empty["suggestion"]
    assert code == 0
