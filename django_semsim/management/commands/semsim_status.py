"""``manage.py semsim_status [--json]``: per semantic model, rows / current / stale / missing."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_semsim.management.commands._options import add_database_option
from semsim_pg.errors import SemsimError


class Command(BaseCommand):
    help = "Show, per semantic model, how many rows have a current, stale (older) or missing vector."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model", help="models (default: all)")
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.conf import get_config
        from django_semsim.status import iter_models, model_status

        try:
            statuses = [model_status(m, using=options["database"]) for m in iter_models(options["models"])]
        except SemsimError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps([s.as_dict() for s in statuses], indent=2))
            return
        config = get_config()
        self.stdout.write(f"encoder model: {config.model_name} ({config.dimensions} dimensions), sync: {config.sync}")
        header = f"{'model':<30} {'rows':>8} {'current':>8} {'stale':>8} {'missing':>8}"
        self.stdout.write(header)
        for s in statuses:
            line = f"{s.label:<30} {s.rows:>8} {s.current:>8} {s.stale:>8} {s.missing:>8}"
            if s.other_models:
                line += "  other models: " + ", ".join(f"{k} ({v})" for k, v in s.other_models.items())
            self.stdout.write(line)
