"""``manage.py semsim_worker [--once] [--batch-size N]``: drain the stale-row queue.

Run any number of workers, on any number of machines: each claims its batch with ``FOR UPDATE
SKIP LOCKED`` and writes a vector only if the row still holds the text it encoded. An encoder
or database failure rolls the batch back (no row is lost), is logged, and is retried after a
back-off that doubles up to ``SEMSIM['WORKER_MAX_BACKOFF_SECONDS']``.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from django_semsim.management.commands._options import add_database_option

logger = logging.getLogger("django_semsim.worker")


class Command(BaseCommand):
    help = "Encode stale rows of every semantic model, continuously (or once with --once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="drain what is stale now, then exit")
        parser.add_argument("--batch-size", type=int, default=None, help="rows per claim (default: SEMSIM)")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.conf import get_config
        from django_semsim.status import iter_models
        from django_semsim.sync import drain

        config = get_config()
        verbosity = int(options["verbosity"])
        using = options["database"]
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError(f"--batch-size must be >= 1, got {batch_size}.")
        stop = threading.Event()
        if not options["once"] and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        models = iter_models()
        backoff = 0.0
        total = 0
        while not stop.is_set():
            done = 0
            try:
                for model in models:
                    result = drain(model, using=using, batch_size=batch_size)
                    done += len(result.written)
                    if result.written and verbosity >= 1:
                        self.stdout.write(f"{model._meta.label}: {len(result.written)} row(s) encoded")
            except Exception as exc:
                # Encoder or database failure: the batch rolled back, its rows are still stale.
                if options["once"]:
                    raise CommandError(f"Encoding failed, rows stay stale and will be retried: {exc}") from exc
                backoff = min(max(2 * backoff, config.worker_poll_seconds), config.worker_max_backoff_seconds)
                logger.exception("semsim_worker: batch failed; retrying in %.0f s", backoff)
                close_old_connections()
                stop.wait(backoff)
                continue
            backoff = 0.0
            total += done
            if options["once"]:
                break
            if done == 0:
                close_old_connections()
                stop.wait(config.worker_poll_seconds)
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"semsim_worker: {total} row(s) encoded"))
