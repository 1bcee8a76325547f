"""``manage.py semsim_faq_export FILE``: write every FAQ entry to a CSV/TSV file that
``semsim_faq_import`` reads back (header faq_id, question, answer, category, alternatives, published)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_semsim.management.commands._options import add_database_option
from semsim_pg.errors import SemsimError


class Command(BaseCommand):
    help = "Export the FAQ to a .csv or .tsv file (the format semsim_faq_import reads)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the .csv or .tsv file to write")
        add_database_option(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.faq.io import export_csv
        from django_semsim.faq.models import FAQ
        from semsim_pg.fsutil import atomic_write_text

        path: Path = options["file"]
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".tsv"):
            raise CommandError(f"{path}: name the file .csv or .tsv (got {path.suffix or 'no extension'!r}).")
        queryset = FAQ.objects.using(options["database"]).all()
        try:
            text = export_csv(queryset, delimiter="\t" if suffix == ".tsv" else ",")
        except SemsimError as exc:  # an entry that would not read back: nothing is written
            raise CommandError(str(exc)) from exc
        try:
            # whole or not at all: a failed write (a full disk) leaves the previous export as it was
            atomic_write_text(path, text, overwrite=True)
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror}.") from exc
        if int(options["verbosity"]) >= 1:
            self.stdout.write(self.style.SUCCESS(f"{queryset.count()} FAQ entries written to {path}"))
