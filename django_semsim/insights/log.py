"""Logging from Django: the core's writer aimed at this app's table in the site's database."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from django.apps import apps
from django.db import router
from django.utils.crypto import salted_hmac
from sqlalchemy.engine import Engine

from django_semsim.conf import get_config
from semsim_pg import queries
from semsim_pg.insights.log import KIND_SEARCH, LoggedQuery, log_query
from semsim_pg.insights.log import log_answer as core_log_answer
from semsim_pg.settings import Settings, get_settings

__all__ = ["faq_label", "log_engine", "log_faq_answer", "log_search", "log_settings", "log_table"]

logger = logging.getLogger(__name__)

APP = "django_semsim.insights"


@lru_cache(maxsize=1)
def log_table() -> sa.Table:
    from django_semsim.insights.models import QueryLog

    return queries.log_table(QueryLog._meta.db_table)


def log_engine(using: str | None = None) -> Engine:
    """A SQLAlchemy engine on the database the log is written to (the core's, one per URL), or
    on the database ``using`` (an alias of ``settings.DATABASES``)."""
    from django_semsim.database import sqlalchemy_engine
    from django_semsim.insights.models import QueryLog

    engine: Engine = sqlalchemy_engine(using or router.db_for_write(QueryLog))
    return engine


#: what the key of the log's query hashes is derived from SECRET_KEY with (Django's salted_hmac)
KEY_SALT = "django_semsim.insights.query_hash"


def log_settings() -> Settings:
    """The core's settings with ``SEMSIM["QUERY_LOG*"]`` (the log is off unless the app is
    installed), and the key of the query hashes derived from ``settings.SECRET_KEY``: a secret
    of the site that a reader of the log table does not hold, the same in every process."""
    config = get_config()
    return get_settings().replace(
        query_log=bool(config.query_log) and apps.is_installed(APP),
        query_log_text=config.query_log_text,
        query_log_key=salted_hmac(KEY_SALT, "query log", algorithm="sha256").hexdigest(),
        query_log_sample_rate=config.query_log_sample_rate,
        query_log_drift_threshold=config.query_log_drift_threshold,
    )


def _enabled() -> Settings | None:
    """The log's settings when it is on, else None (the usual case, told by one cached lookup)."""
    if not get_config().query_log:
        return None
    settings = log_settings()
    return settings if settings.query_log else None


def faq_label() -> str:
    """What FAQ questions are logged under: the FAQ model's label."""
    return "semsim_faq.FAQ"


def log_faq_answer(answer: Any, started: float, *, k: int, reranked: bool) -> None:
    """Log one ``FAQ.objects.answer()`` when ``SEMSIM["QUERY_LOG"]`` is on (never raises; the
    writer encodes the question with ``SEMSIM["MODEL"]`` off the request path)."""
    try:
        settings = _enabled()
        if settings is None:
            return
        core_log_answer(
            settings,
            log_engine(),
            faq_label(),
            answer,
            started,
            key_of=lambda entry: entry.pk,
            k=k,
            mode="faq+rerank" if reranked else "faq",
            model_name=get_config().model_name,
            table=log_table(),
        )
    except Exception as exc:  # a log that cannot be written never fails the question
        logger.warning("query log: could not log an FAQ question (%s: %s)", type(exc).__name__, exc)


#: result ids and scores kept per logged search
LOGGED_RESULTS = 10


def log_search(model: Any, search: tuple[str, int | None, str], rows: Sequence[Any], started: float) -> None:
    """Log one ``semantic_search(text)`` / ``hybrid_search(text)`` as it runs (under the model's label); never raises."""
    try:
        settings = _enabled()
        if settings is None:
            return
        text, k, mode = search
        kept = [r for r in rows[:LOGGED_RESULTS] if getattr(r, "similarity", None) is not None]
        scores = [float(r.similarity) for r in kept]
        record = LoggedQuery(
            collection=model._meta.label,
            kind=KIND_SEARCH,
            text=text,
            vector=None,
            model_name=get_config().model_name,
            result_ids=[str(r.pk) for r in kept],
            result_scores=scores,
            top_score=scores[0] if scores else None,
            answered=None,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            mode=mode,
            k=k,
        )
        log_query(settings, log_engine(), record, log_table())
    except Exception as exc:  # a log that cannot be written never fails the search
        logger.warning("query log: could not log a search (%s: %s)", type(exc).__name__, exc)
