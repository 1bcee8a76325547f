"""``manage.py semsim_log_prune --older-than 90d [-c LABEL] [--json] [--database ALIAS]``.

The Django side of ``semsim log prune``: the same lengths of time, limits and messages
(:func:`semsim_pg.insights.prune_older_than`), on this app's table in the site's database, which
the core's command does not touch. Run it from cron to keep the log to a retention window.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router

from django_semsim.management.commands._options import database_alias
from semsim_pg.errors import SemsimError


class Command(BaseCommand):
    help = "Delete logged queries older than a length of time from the search insights' log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12w")
        parser.add_argument(
            "-c", "--collection", help="only this label's rows, e.g. semsim_faq.FAQ or app.Model (default: all)"
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--database",
            type=database_alias,
            help="database alias (default: the one the database router writes the log to)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.insights.log import log_engine, log_table
        from django_semsim.insights.models import QueryLog
        from semsim_pg.insights import prune_older_than

        using = options["database"] or router.db_for_write(QueryLog)
        try:
            # the command's own stderr, unwrapped: OutputWrapper appends newlines, the bar redraws in place
            stream = getattr(self.stderr, "_out", self.stderr)
            pruned = prune_older_than(
                log_engine(using),
                options["older_than"],
                collection=options["collection"],
                progress=int(options["verbosity"]) >= 1,
                table=log_table(),
                file=stream,
            )
        except SemsimError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps({**pruned.to_dict(), "database": using}))
        elif int(options["verbosity"]) >= 1:
            self.stdout.write(pruned.summary())
