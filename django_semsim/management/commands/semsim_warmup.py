"""``manage.py semsim_warmup [app.Model ...] [--no-model] [--json]``.

The Django side of ``semsim warmup --collections``: load the configured model and encode once
(what ``SEMSIM['PRELOAD']`` does in each process), and read each semantic model's companion HNSW
index into PostgreSQL's shared buffers, so that the first searches after a database restart do
not read the index from disk page by page. The buffers are the server's: once per database start
(a deploy script, a container's start) is enough, for every web and worker process.

With pg_prewarm where the database has it, else by an ordered scan of the whole index under the
core's settings (:data:`semsim_pg.queries.TRAVERSAL_SETTINGS`). The companion is not a core
collection: the scan is plain SQL here, as in ``semsim_index_check``; the server-wide questions
(shared_buffers, pg_prewarm) are the core's statements, compiled for the cursor.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import sqlalchemy as sa
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction
from sqlalchemy.dialects import postgresql

from django_semsim.management.commands._options import add_database_option
from django_semsim.session import set_config
from semsim_pg import queries
from semsim_pg.errors import SemsimError
from semsim_pg.sql import METRICS

logger = logging.getLogger(__name__)


def _sql(statement: sa.Select[Any]) -> str:
    """A core statement without parameters, as SQL for a Django cursor."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


class Command(BaseCommand):
    help = "Load the model and encode once, and read semantic models' HNSW indexes into PostgreSQL's memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model", help="models to warm (default: all)")
        parser.add_argument("--no-model", action="store_true", help="warm the indexes only, not the encoder")
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.apps import preload
        from django_semsim.conf import get_config
        from django_semsim.status import iter_models

        report: dict[str, Any] = {}
        try:
            if not options["no_model"]:
                start = time.perf_counter()
                preload()
                report["model"] = {"name": get_config().model_name, "seconds": round(time.perf_counter() - start, 3)}
            report["indexes"] = [warm_model(model, options["database"]) for model in iter_models(options["models"])]
        except SemsimError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if "model" in report:
            self.stdout.write(f"model {report['model']['name']} ready in {report['model']['seconds']:.1f} s")
        for w in report["indexes"]:
            if w["state"] != "valid":
                self.stdout.write(f"{w['model']}: index {w['index']} is {w['state']}: {w['suggestion']}")
                continue
            room = "" if w["fits"] else f"; larger than shared_buffers ({w['shared_buffers_bytes'] >> 20} MB)"
            self.stdout.write(
                f"{w['model']}: index {w['index']} ({w['index_bytes'] >> 20} MB, {w['vectors']:,} vectors) "
                f"in memory in {w['seconds']:.1f} s by {w['method']}{room}"
            )


def warm_model(model: Any, using: str) -> dict[str, Any]:
    """Read ``model``'s companion HNSW index into shared buffers; what was read (or why not)."""
    from django_semsim.models import companion_of

    companion = companion_of(model)
    index = companion._meta.indexes[0].name
    connection = connections[using]
    table = connection.ops.quote_name(companion._meta.db_table)
    found: dict[str, Any] = {"model": model._meta.label, "index": index}
    start = time.perf_counter()
    with transaction.atomic(using=using), connection.cursor() as cur:
        cur.execute(
            "SELECT i.indisvalid, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            [index],
        )
        row = cur.fetchone()
        if row is None or not row[0]:
            found["state"] = "missing" if row is None else "invalid"
            found["suggestion"] = f"build it with python manage.py migrate ({index}); searches scan meanwhile"
            return found
        found["state"], found["index_bytes"] = "valid", int(row[1])
        cur.execute(_sql(queries.shared_buffers_bytes()))
        found["shared_buffers_bytes"] = int(cur.fetchone()[0])
        found["fits"] = found["index_bytes"] <= found["shared_buffers_bytes"]
        cur.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NOT NULL")
        found["vectors"] = int(cur.fetchone()[0])
        cur.execute(_sql(queries.pg_prewarm_installed()))
        if cur.fetchone()[0]:
            found["method"], found["visited"] = "pg_prewarm", None
            cur.execute("SELECT pg_prewarm(%s::regclass)", [connection.ops.quote_name(index)])
        else:
            found["method"] = "index scan"
            set_config(connection, queries.TRAVERSAL_SETTINGS, local=True)
            cur.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} "
                f"ORDER BY embedding {METRICS[model.semantic_metric].operator} %s::vector LIMIT %s) s",
                [queries.axis_vector(companion._meta.get_field("embedding").dimensions), max(1, found["vectors"])],
            )
            found["visited"] = int(cur.fetchone()[0])
    if found["visited"] is not None and found["visited"] < 0.99 * found["vectors"]:  # as the core warns
        logger.warning(
            "warming %s: the index scan stopped after %d of %d vectors (its memory cap); the rest is read on use",
            found["model"],
            found["visited"],
            found["vectors"],
        )
    found["seconds"] = round(time.perf_counter() - start, 3)
    return found
