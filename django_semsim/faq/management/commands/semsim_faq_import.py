"""``manage.py semsim_faq_import FILE [--replace]``: load FAQ entries from a CSV/TSV file.

The whole file is read and checked before anything is written, then written in one transaction:
a malformed file reports its line and imports nothing. Vectors follow after the commit
(immediate mode: the command waits for them) or from ``semsim_worker``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_semsim.management.commands._options import add_database_option
from semsim_pg.errors import SemsimError


class Command(BaseCommand):
    help = (
        "Import FAQ entries from a .csv/.tsv with header [faq_id,] question, answer[, category][, alternatives]"
        '[, published] (alternatives separated by "|"; published true or false). Existing entries (same faq_id, else same question) are updated; '
        "phrasings added from unanswered questions that the file does not list are kept (see --replace)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="a .csv or .tsv file")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="make the FAQ hold exactly the file: delete the entries, and the promoted phrasings, it does not list",
        )
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.faq.io import import_entries, read_entries
        from django_semsim.sync import wait_idle

        try:
            entries = read_entries(options["file"])
            result = import_entries(entries, replace=options["replace"], using=options["database"])
        except SemsimError as exc:
            raise CommandError(str(exc)) from exc
        wait_idle()  # immediate mode: the vectors are encoded after the commit; report once they are
        if int(options["verbosity"]) >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"{len(entries)} FAQ entries from {options['file'].name}: {result.created} new, "
                    f"{result.updated} updated, {result.unchanged} unchanged, {result.removed} removed"
                    + result.kept_note("`manage.py semsim_faq_export`")
                )
            )
