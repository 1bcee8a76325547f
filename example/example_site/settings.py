"""Settings of the example site.

The database is ``SEMSIM_DATABASE_URL`` when set (any PostgreSQL with pgvector, e.g. the
docker/compose.yaml one), else the embedded PostgreSQL + pgvector server in ``SEMSIM_DATA_DIR``
(default ``~/.local/share/semsim``), started on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from django_semsim.database import database_config

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_semsim",
    "django_semsim.faq",  # the FAQ app (FAQ admin, semsim_faq_import); leave it out for search alone
    "django_semsim.insights",  # query log, "Search insights" and "Unanswered questions" in the admin
    "articles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SEMSIM = {
    "MODEL": os.environ.get("SEMSIM_MODEL", "all-MiniLM-L6-v2"),
    # "immediate": encode after each commit in a background thread of the web process;
    # "worker": run manage.py semsim_worker
    "SYNC": os.environ.get("SEMSIM_SYNC", "immediate"),
    # log FAQ questions for the admin's insights pages (SEMSIM_QUERY_LOG=1 turns it on here)
    "QUERY_LOG": os.environ.get("SEMSIM_QUERY_LOG", "0") == "1",
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_semsim": {"handlers": ["console"], "level": "INFO"}},
}
