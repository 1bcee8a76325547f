"""``manage.py load_sample_faq``: load the FAQ shipped in articles/data/faq.csv into django_semsim's FAQ.

The same as ``manage.py semsim_faq_import articles/data/faq.csv``: the file is checked whole and
written in one transaction; entries are keyed by faq_id, so running it again updates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

DATA = Path(__file__).resolve().parents[2] / "data" / "faq.csv"


class Command(BaseCommand):
    help = "Load the sample FAQ (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", type=Path, default=DATA, help="a .csv/.tsv FAQ file")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("semsim_faq_import", str(options["file"]), verbosity=options["verbosity"])
