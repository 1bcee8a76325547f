"""``manage.py semsim_finetune_faq --out DIR``: tune the bi-encoder on the FAQ's own phrasings.

An entry's question and its alternative phrasings are positives for each other; hard negatives
are the other entries' phrasings nearest to each one in the FAQ's HNSW indexes. A part of the
phrasings is held out: the model is saved only when it matches them to their entries (accuracy@1)
better than the configured model does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_semsim.management.commands._finetune import add_training_arguments, train

#: the name the record gives this data (what rerank="auto" compares with)
FAQ_NAME = "django_semsim.faq"


class Command(BaseCommand):
    help = "Tune the bi-encoder on the published FAQ entries' questions and alternative phrasings."

    def add_arguments(self, parser: CommandParser) -> None:
        add_training_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_semsim.faq.models import FAQ, FAQPhrasing

        using = options["database"]
        entries = FAQ.objects.using(using).filter(published=True)
        phrasings = FAQPhrasing.objects.using(using).filter(faq__published=True)
        rows = [(f"q{pk}", question, str(pk)) for pk, question in entries.values_list("pk", "question")]
        rows += [(f"p{pk}", text, str(faq)) for pk, text, faq in phrasings.values_list("pk", "text", "faq_id")]

        def search(vector: Any, k: int) -> list[str]:
            # The FAQ keeps questions and phrasings in two tables: the nearest of both, merged.
            found = [(f"q{f.pk}", float(f.similarity)) for f in entries.semantic_search(vector, k=k)]
            found += [(f"p{p.pk}", float(p.similarity)) for p in phrasings.semantic_search(vector, k=k)]
            return [key for key, _ in sorted(found, key=lambda item: -item[1])[:k]]

        train(self, options, name=FAQ_NAME, rows=rows, search=search, faq=True, source={"django": FAQ_NAME})
