"""Settings of a throwaway site for the layout tests (tests/test_django_layout.py), run in subprocesses.

SEMSIM_SITE_DATABASE_URL: its database; SEMSIM_SITE_FAQ=1 installs the FAQ app; SEMSIM_SITE_LEGACY=1
migrates django_semsim with its migrations as they were before the FAQ became an app of its own.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from django_semsim.database import database_config

SECRET_KEY = "tests"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.postgres", "django_semsim"]
if os.environ.get("SEMSIM_SITE_FAQ") == "1":
    INSTALLED_APPS.append("django_semsim.faq")
if os.environ.get("SEMSIM_SITE_LEGACY") == "1":
    MIGRATION_MODULES = {"django_semsim": "tests.djangoapp.legacy_migrations"}
DATABASES = {"default": database_config(os.environ["SEMSIM_SITE_DATABASE_URL"])}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SEMSIM = {"SYNC": "inline"}
