"""A Django ``DATABASES`` entry for semsim: your PostgreSQL, or the embedded one.

``DATABASES = {"default": database_config()}`` uses ``SEMSIM_DATABASE_URL`` when it is set
(any PostgreSQL with pgvector) and otherwise starts, or joins, the embedded PostgreSQL +
pgvector server in ``SEMSIM_DATA_DIR`` (the same server the ``semsim`` CLI uses).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["database_config", "sqlalchemy_engine"]


def database_config(
    url: str | None = None,
    *,
    data_dir: str | Path | None = None,
    conn_max_age: int = 0,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a ``DATABASES`` entry from a URL, ``SEMSIM_DATABASE_URL``, or the embedded server.

    Starting the embedded server happens here, when settings are imported: that is the moment
    Django needs a database, and the server is shared by every process using the data directory.
    """
    url = url or os.environ.get("SEMSIM_DATABASE_URL") or None
    if url is None:
        from semsim_pg.server import embedded_server_url
        from semsim_pg.settings import Settings

        folder = Path(data_dir).expanduser() if data_dir is not None else Settings.from_env().data_dir
        url = embedded_server_url(folder)
    from semsim_pg.db import parse_url

    parsed = parse_url(url)  # the core's rules: the same URLs work for `semsim` and for Django
    query = dict(parsed.query)
    host = query.pop("host", None) or parsed.host or ""
    if isinstance(host, tuple):  # repeated ?host= parameters: libpq tries them in turn
        host = ",".join(host)
    db_options: dict[str, Any] = {str(k): v for k, v in query.items()}
    db_options.update(options or {})
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.database or "postgres",
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": conn_max_age,
        "OPTIONS": db_options,
    }


def sqlalchemy_engine(alias: str) -> Any:
    """A SQLAlchemy engine (the core's, one per URL) on the database of ``settings.DATABASES[alias]``,
    for the core's functions that read or write it (the query log, the model-in-use check)."""
    from django.db import connections
    from sqlalchemy.engine.url import URL

    from semsim_pg.db import get_engine

    info = connections[alias].settings_dict
    host = str(info.get("HOST") or "")
    url = URL.create(
        "postgresql+psycopg",
        username=info.get("USER") or None,
        password=info.get("PASSWORD") or None,
        host=None if host.startswith("/") or not host else host,
        port=int(info["PORT"]) if info.get("PORT") else None,
        database=info.get("NAME") or None,
        query={"host": host} if host.startswith("/") else {},
    )
    return get_engine(url=url.render_as_string(hide_password=False))
