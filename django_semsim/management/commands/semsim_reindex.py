"""``manage.py semsim_reindex [app.Model ...] [--stale | --all] [--batch-size N]``.

``--stale`` (the default) encodes rows whose vector is missing or was made from other text: the
reconcile pass that catches bulk_create, update(), bulk_update and raw SQL. ``--all`` re-encodes
every row (vectors stay searchable meanwhile) and then drops vectors of other encoder models:
the fix after changing ``SEMSIM['MODEL']``. Safe to run while workers run: rows are claimed with
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_semsim.management.commands._options import add_database_option
from semsim_pg.errors import SemsimError
from semsim_pg.progress import progress_bar


class Command(BaseCommand):
    help = "Encode stale rows of semantic models (--stale, the default) or re-encode every row (--all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("models", nargs="*", metavar="app_label.Model", help="models to index (default: all)")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--stale", action="store_true", help="only rows whose vector is missing or out of date")
        mode.add_argument("--all", action="store_true", help="re-encode every row, then drop other models' vectors")
        parser.add_argument("--batch-size", type=int, default=None, help="rows per encoder call (default: SEMSIM)")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.status import iter_models, mark_all_stale, model_status, remove_other_models
        from django_semsim.sync import drain

        verbosity = int(options["verbosity"])
        using = options["database"]
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError(f"--batch-size must be >= 1, got {batch_size}.")
        try:
            models = iter_models(options["models"])
            for model in models:
                label = model._meta.label
                if options["all"]:
                    marked = mark_all_stale(model, using=using)
                    if verbosity >= 2:
                        self.stdout.write(f"{label}: {marked} vector(s) marked for re-encoding")
                before = model_status(model, using=using)
                start = time.perf_counter()
                todo = before.stale + before.missing
                # the command's own stderr, unwrapped: OutputWrapper appends newlines, the bar redraws in place
                stream = getattr(self.stderr, "_out", self.stderr)
                with progress_bar(verbosity >= 1 and todo > 0, total=todo, desc=label, unit="row", file=stream) as bar:

                    def advance(batch: Any, bar: Any = bar) -> None:
                        bar.update(len(batch.written))

                    result = drain(model, using=using, batch_size=batch_size, on_batch=advance)
                removed = remove_other_models(model, using=using) if options["all"] else 0
                seconds = time.perf_counter() - start
                if verbosity >= 1:
                    line = f"{label}: {len(result.written)} row(s) encoded in {seconds:.1f} s"
                    if result.conflicts:
                        line += f", {result.conflicts} changed while encoding (left for the next pass)"
                    if removed:
                        line += f", {removed} vector(s) of other models removed"
                    self.stdout.write(self.style.SUCCESS(line))
        except SemsimError as exc:
            raise CommandError(str(exc)) from exc
