"""``manage.py semsim_index_check [app.Model ...] [--sample N] [-k K] [--ef-search N]``.

The Django side of ``semsim index check``: live recall@k of a semantic model's companion HNSW
index against an exact scan, on a sample of its stored vectors (each searched with its own row
left out), with the same target and suggestion as the core (``semsim_pg.store.check``). The
companion is not a core collection, so both searches are plain SQL here: the planner is made to
use the index, then forbidden it, inside one read-only transaction.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction

from django_semsim.management.commands._options import add_database_option
from semsim_pg.errors import SemsimError
from semsim_pg.sql import METRICS
from semsim_pg.store.check import EF_SEARCH_STEPS, RECALL_TARGET, IndexCheck, suggestion
from semsim_pg.validation import check_k


class Command(BaseCommand):
    help = "Recall@k of semantic models' HNSW indexes against exact search, with a suggestion below 0.95."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model", help="models to check (default: all)")
        parser.add_argument("--sample", type=int, default=200, help="stored vectors searched (default 200)")
        parser.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
        parser.add_argument("--ef-search", type=int, default=None, help="hnsw.ef_search (default: SEMSIM)")
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.conf import get_config
        from django_semsim.status import iter_models

        if options["sample"] < 1:
            raise CommandError(f"--sample must be at least 1, got {options['sample']}.")
        try:
            k = check_k(options["k"], "-k")
            config = get_config()
            ef = config.ef_search if options["ef_search"] is None else options["ef_search"]
            if not 1 <= ef <= 1000:
                raise CommandError(f"--ef-search must be from 1 to 1000, got {ef}.")
            checks = [
                check_model(model, config, options["database"], sample=options["sample"], k=k, ef=ef)
                for model in iter_models(options["models"])
            ]
        except SemsimError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps([c.to_dict() for c in checks], indent=2))
        else:
            for c in checks:
                self.stdout.write(c.summary())
        if not all(c.ok for c in checks):
            raise SystemExit(3)  # as `semsim index check`: a cron job can alert on it


def check_model(model: Any, config: Any, using: str, *, sample: int, k: int, ef: int) -> IndexCheck:
    from django_semsim.models import companion_of

    companion = companion_of(model)
    index = companion._meta.indexes[0]
    check = IndexCheck(model._meta.label, "missing", k, 0, ef, config.hnsw_m, config.hnsw_ef_construction)
    connection = connections[using]
    qn = connection.ops.quote_name
    table, operator = qn(companion._meta.db_table), METRICS[model.semantic_metric].operator
    nearest = (
        f"SELECT id FROM {table} WHERE model_name = %s AND embedding IS NOT NULL AND id <> %s "
        f"ORDER BY embedding {operator} %s::vector LIMIT %s"
    )
    with transaction.atomic(using=using), connection.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [index.name],
        )
        row = cur.fetchone()
        check.state = "missing" if row is None else ("valid" if row[0] else "invalid")
        if check.state != "valid":
            check.suggestion = (
                f"Searches scan every vector meanwhile. Build it: python manage.py migrate ({index.name})."
            )
            return check
        cur.execute(
            f"SELECT id, embedding::text FROM {table} WHERE model_name = %s AND embedding IS NOT NULL "
            "ORDER BY random() LIMIT %s",
            [config.model_name, sample],
        )
        probes = cur.fetchall()
        if not probes:
            check.suggestion = "The model holds no vectors yet: nothing to measure."
            return check
        check.sample = len(probes)

        def top(probe: tuple[int, str], ef_value: int | None) -> set[int]:
            if ef_value is None:  # exact: the planner may not use the index
                cur.execute("SET LOCAL enable_indexscan = on; SET LOCAL enable_seqscan = on")
                cur.execute("SET LOCAL enable_indexscan = off")
            else:  # the index itself, even where a scan of a small table would be cheaper
                cur.execute("SET LOCAL enable_indexscan = on; SET LOCAL enable_seqscan = off")
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_value)])
                # as semantic_search() runs: with SEMSIM's iterative scan (the filter applies after the graph)
                cur.execute("SELECT set_config('hnsw.iterative_scan', %s, true)", [config.iterative_scan])
            cur.execute(nearest, [config.model_name, probe[0], probe[1], k])
            return {r[0] for r in cur.fetchall()}

        exact = [top(p, None) for p in probes]

        def recall_at(ef_value: int) -> float:
            shares = [len(top(p, ef_value) & e) / len(e) for p, e in zip(probes, exact, strict=True) if e]
            return sum(shares) / len(shares) if shares else 1.0

        check.recall = recall_at(ef)
        if check.recall < RECALL_TARGET:
            check.ef_search_needed = next(
                (s for s in EF_SEARCH_STEPS if s > ef and recall_at(s) >= RECALL_TARGET), None
            )
    check.suggestion = suggestion(
        check,
        ef_setting="SEMSIM['EF_SEARCH'] = {ef}",
        rebuild="SEMSIM['HNSW_M'] = {m} and SEMSIM['HNSW_EF_CONSTRUCTION'] = {efc}, then makemigrations and migrate",
    )
    return check
