"""Django settings for the test suite (pytest-django imports this before tests/conftest.py).

SEMSIM_DATA_DIR is the session's own, set when the tests package is imported (tests/__init__.py),
so that this module and tests/conftest.py agree on the embedded server's data directory;
SEMSIM_TEST_DATABASE_URL runs everything against another PostgreSQL with pgvector.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from django_semsim.database import database_config

SECRET_KEY = "tests"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.postgres",
    "django_semsim",
    "django_semsim.faq",
    "django_semsim.insights",
    "tests.djangoapp",
]
DATABASES = {"default": database_config(os.environ.get("SEMSIM_TEST_DATABASE_URL") or None)}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SEMSIM = {"SYNC": "inline", "BATCH_SIZE": 64}  # deterministic: encoded before save() returns
LOGGING_CONFIG = None
