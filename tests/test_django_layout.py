"""The FAQ as an app of its own: a site without it gets no FAQ table; a site that had the FAQ inside
django_semsim keeps its rows, vectors and permissions after upgrading; nothing in django_semsim
imports the FAQ. Each site is a fresh database on the test server, migrated in a subprocess with
tests/djangoapp/site_settings.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from semsim_pg.sql import vector_literal

pytestmark = pytest.mark.slow  # each test migrates a fresh database in a subprocess

ROOT = Path(__file__).resolve().parent.parent
FAQ_TABLES = {
    "django_semsim_faq",
    "django_semsim_faqphrasing",
    "django_semsim_faq_embedding",
    "django_semsim_faqphrasing_embedding",
}


def _url(database: str) -> str:
    s = connection.settings_dict
    host = s["HOST"] or "localhost"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{database}?host={host}" + (f"&port={s['PORT']}" if s["PORT"] else "")
    return f"postgresql://{auth}@{host}:{s['PORT'] or 5432}/{database}"


def _connect(database: str) -> psycopg.Connection[Any]:
    from semsim_pg.db import normalise_url  # noqa: F401  (the same URL rules as the core)

    s = connection.settings_dict
    return psycopg.connect(
        dbname=database,
        user=s["USER"],
        password=s["PASSWORD"] or None,
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        autocommit=True,
    )


@pytest.fixture()
def site_db(db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"semsim_site_{uuid.uuid4().hex[:10]}"
    with _connect(connection.settings_dict["NAME"]) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with _connect(connection.settings_dict["NAME"]) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _site(database: str, code: str, *, faq: bool, legacy: bool = False, example: bool = False) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_site.settings" if example else "tests.djangoapp.site_settings",
        "SEMSIM_SITE_DATABASE_URL": _url(database),
        "SEMSIM_DATABASE_URL": _url(database),
        "SEMSIM_SITE_FAQ": "1" if faq else "0",
        "SEMSIM_SITE_LEGACY": "1" if legacy else "0",
        "DJANGO_ALLOWED_HOSTS": "testserver",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "example"), str(ROOT)] if example else [str(ROOT)]),
    }
    script = "import django\ndjango.setup()\nfrom django.core.management import call_command\n" + code
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _tables(database: str) -> set[str]:
    with _connect(database) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_a_site_without_the_faq_app_has_no_faq_table(site_db: str) -> None:
    _site(site_db, "call_command('migrate', verbosity=0)", faq=False)
    tables = _tables(site_db)
    assert "django_semsim_embeddingmodel" in tables
    assert not tables & FAQ_TABLES
    assert not any("faq" in table for table in tables)


def test_a_site_with_the_faq_app_gets_its_tables(site_db: str) -> None:
    _site(site_db, "call_command('migrate', verbosity=0)", faq=True)
    assert FAQ_TABLES <= _tables(site_db)


def test_upgrading_a_site_that_had_the_faq_keeps_rows_vectors_and_permissions(site_db: str, encoder) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.conf import get_config

    # 1. the site as it was: django_semsim's migrations 0001 and 0002_faq as they were released
    _site(site_db, "call_command('migrate', verbosity=0)", faq=False, legacy=True)
    assert FAQ_TABLES <= _tables(site_db)
    config = get_config()
    question = "How do I return an item?"
    with _connect(site_db) as conn:
        conn.execute(
            "INSERT INTO django_semsim_embeddingmodel (name, dimension, created_at) VALUES (%s, %s, now())",
            [config.model_name, config.dimensions],
        )
        faq_id = conn.execute(
            "INSERT INTO django_semsim_faq (question, answer, category, published, external_id, created_at, "
            "updated_at) VALUES (%s, 'Start a return under Orders.', 'orders', true, 'returns', now(), now()) "
            "RETURNING id",
            [question],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO django_semsim_faqphrasing (text, faq_id) VALUES ('Can I send my order back?', %s)", [faq_id]
        )
        from semsim_pg.encoder import text_hash

        conn.execute(
            "INSERT INTO django_semsim_faq_embedding (source_id, model_name, text_hash, embedding, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s::vector, now(), now())",
            [faq_id, config.model_name, text_hash(question), vector_literal(encoder.encode([question])[0])],
        )
        # Django's post_migrate made a content type and permissions for the old FAQ model
        old = conn.execute(
            "SELECT p.id FROM auth_permission p JOIN django_content_type t ON t.id = p.content_type_id "
            "WHERE t.app_label = 'django_semsim' AND p.codename = 'change_faq'"
        ).fetchone()
        assert old is not None
    # 2. the upgrade: the new code, with the FAQ app installed
    out = _site(
        site_db,
        """
import json
call_command('migrate', verbosity=0)
from django.contrib.auth.models import Permission
from django_semsim.faq.models import FAQ, FAQPhrasing
from django_semsim.models import companion_of
from django_semsim.status import model_status
before = model_status(FAQ)
call_command('semsim_reindex', verbosity=0)
answer = FAQ.objects.answer('I want to send my order back')
print(json.dumps({
    "faqs": list(FAQ.objects.values_list('external_id', 'question')),
    "phrasings": list(FAQPhrasing.objects.values_list('text', flat=True)),
    "current_before_reindex": before.current,
    "vectors": companion_of(FAQ).objects.filter(embedding__isnull=False).count(),
    "answered": answer.answered, "answer": answer.entry.external_id if answer.entry else None,
    "permissions": list(Permission.objects.filter(codename='change_faq').values_list('id', 'content_type__app_label')),
}))
""",
        faq=True,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["faqs"] == [["returns", question]]
    assert result["phrasings"] == ["Can I send my order back?"]
    assert result["current_before_reindex"] == 1  # the vector written before the upgrade is still current
    assert result["vectors"] == 1
    assert result["answered"] and result["answer"] == "returns"
    assert result["permissions"] == [[old[0], "semsim_faq"]]  # the same permission row, now the app's


def test_django_semsim_never_imports_the_faq() -> None:
    code = (
        "import sys, django_semsim.models, django_semsim.query, django_semsim.sync, django_semsim.status, "
        "django_semsim.checks, django_semsim.signals, django_semsim.admin\n"
        "print(sorted(m for m in sys.modules if m.startswith('django_semsim.faq')))"
    )
    out = _site("unused", code, faq=False)
    assert out.strip().splitlines()[-1] == "[]"


def test_example_search_page_with_nul_in_a_filter_is_a_bad_request(site_db: str) -> None:
    code = """
call_command('migrate', verbosity=0)
from django.test import Client
client = Client(raise_request_exception=False)
print(client.get('/', {'q': 'password', 'topic': 'a\\x00b'}).status_code,
      client.get('/', {'q': 'pass\\x00word'}).status_code, client.get('/').status_code)
"""
    out = _site(site_db, code, faq=False, example=True)
    assert out.strip().splitlines()[-1] == "400 400 200"


_ENCODED = """
from django_semsim.models import companion_of
from django_semsim.faq.models import FAQ
from articles.models import Article
for model in (Article, FAQ):
    encoded = companion_of(model).objects.filter(embedding__isnull=False).count()
    print(model.__name__, model.objects.count(), encoded)
"""


def test_example_script_that_saves_and_exits_leaves_every_row_encoded(site_db: str) -> None:
    # immediate mode, and the process exits before its background thread has loaded the model: the
    # queue is drained at interpreter exit, where loading the model used to fail (every row stayed stale)
    code = """
call_command('migrate', verbosity=0)
from django.db import transaction
from articles.models import Article
with transaction.atomic():
    Article.objects.create(title='Reset your password', body='Use the link in the email.', topic='account')
    Article.objects.create(title='Shipping times', body='Orders ship within two days.', topic='orders')
"""
    _site(site_db, code, faq=False, example=True)
    out = _site(site_db, _ENCODED, faq=False, example=True)
    assert out.strip().splitlines()[-2:] == ["Article 2 2", "FAQ 0 0"]


def test_example_load_sample_data_has_encoded_everything_when_it_reports(site_db: str) -> None:
    code = "call_command('migrate', verbosity=0)\ncall_command('load_sample_data', verbosity=0)\n" + _ENCODED
    lines = _site(site_db, code, faq=False, example=True).strip().splitlines()[-2:]
    counts = [line.split() for line in lines]
    assert [name for name, *_ in counts] == ["Article", "FAQ"]
    assert all(int(rows) > 0 and rows == encoded for _, rows, encoded in counts), lines


def test_example_load_sample_data_if_empty_leaves_a_site_with_articles_as_it_is(site_db: str) -> None:
    # what the Docker image runs at every container start: the admin's edits and deletions stay
    code = """
call_command('migrate', verbosity=0)
from articles.models import Article
Article.objects.create(title='Mine', body='Written in the admin.', topic='own')
call_command('load_sample_data', '--if-empty', '--no-faq', verbosity=0)
print(Article.objects.count())
call_command('load_sample_data', '--no-faq', verbosity=0)
print(Article.objects.count() > 1)
"""
    out = _site(site_db, code, faq=False, example=True)
    assert out.strip().splitlines()[-2:] == ["1", "True"]


def test_example_search_without_hits_says_so_and_unpublished_articles_are_not_public(site_db: str) -> None:
    code = """
call_command('migrate', verbosity=0)
from django.test import Client
from django.urls import reverse
from articles.models import Article
client = Client(raise_request_exception=False)
page = client.get('/', {'q': 'how do I reset my password'}).content.decode()
print('no-hits-message' if 'No article is close enough' in page else 'no message')
hidden = Article.objects.create(title='Draft', body='Not ready yet.', topic='drafts', published=False)
shown = Article.objects.create(title='Ready', body='Published text.', topic='drafts')
print(client.get(reverse('article', args=[hidden.pk])).status_code,
      client.get(reverse('article', args=[shown.pk])).status_code)
"""
    out = _site(site_db, code, faq=False, example=True)
    assert out.strip().splitlines()[-2:] == ["no-hits-message", "404 200"]
