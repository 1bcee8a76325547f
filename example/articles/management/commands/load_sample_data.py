"""``manage.py load_sample_data``: load the articles shipped in articles/data/articles.jsonl,
then the sample FAQ (articles/data/faq.csv, see ``load_sample_faq``) unless ``--no-faq``.

Rows are written in one transaction, so their vectors are encoded in one batch after it
commits (immediate mode; the command waits for them before it reports); in worker mode
``semsim_worker`` encodes them. Running it again updates changed articles only: unchanged text
is not re-encoded, and the sample text overwrites edits made to sample articles since:
``--if-empty`` (what the Docker image runs at every container start) loads nothing once the
site has any article, so the admin's edits and deletions stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from articles.models import Article
from django_semsim.sync import wait_idle

DATA = Path(__file__).resolve().parents[2] / "data" / "articles.jsonl"


class Command(BaseCommand):
    help = "Load the sample articles (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", type=Path, default=DATA, help="a JSON-lines file of {title, body, topic}")
        parser.add_argument("--no-faq", action="store_true", help="do not load the sample FAQ")
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="load nothing (articles nor FAQ) when the site already has articles: a first start only",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_empty"] and Article.objects.exists():
            if int(options["verbosity"]) >= 1:
                self.stdout.write(f"Sample data not loaded: the site has {Article.objects.count()} articles already.")
            return
        path: Path = options["file"]
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        created = 0
        with transaction.atomic():
            for row in rows:
                article, was_created = Article.objects.get_or_create(title=row["title"], defaults=row)
                if not was_created and (article.body, article.topic) != (row["body"], row["topic"]):
                    article.body, article.topic = row["body"], row["topic"]
                    article.save()
                created += was_created
        # immediate mode: the vectors are encoded after the commit; say "loaded" once they are
        wait_idle()
        if int(options["verbosity"]) >= 1:
            self.stdout.write(self.style.SUCCESS(f"{len(rows)} articles ({created} new) from {path.name}"))
        if not options["no_faq"]:
            call_command("load_sample_faq", verbosity=options["verbosity"])
