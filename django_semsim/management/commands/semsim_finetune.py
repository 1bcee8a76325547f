"""``manage.py semsim_finetune app.Model --label-field FIELD --out DIR``: tune the bi-encoder on a
semantic model's own labels (rows that share a value of FIELD are positives), with hard
negatives from the model's HNSW index and a held-out dev part; the model is saved only when its
1-NN accuracy on that dev part beats the configured model's."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ._finetune import add_training_arguments, train


class Command(BaseCommand):
    help = "Tune the bi-encoder on a semantic model's labels (rows sharing a label value are positives)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", metavar="app_label.Model", help="the semantic model whose rows to learn from")
        parser.add_argument(
            "--label-field", required=True, metavar="FIELD", help="field whose equal values mark positives"
        )
        add_training_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from django.core.exceptions import FieldDoesNotExist

        from django_semsim.status import iter_models
        from semsim_pg.errors import SemsimError

        try:
            (model,) = iter_models([options["model"]])
        except SemsimError as exc:
            raise CommandError(str(exc)) from exc
        field = options["label_field"]
        try:
            model._meta.get_field(field)
        except FieldDoesNotExist:
            raise CommandError(f"{model._meta.label} has no field {field!r} to take labels from.") from None
        manager = model._default_manager.using(options["database"])
        rows = []
        for instance in manager.all().iterator(chunk_size=2000):
            label = getattr(instance, field)
            if label is not None and str(label).strip():
                rows.append((str(instance.pk), instance.semantic_text(), str(label)))

        def search(vector: Any, k: int) -> list[str]:
            return [str(row.pk) for row in manager.semantic_search(vector, k=k)]

        train(
            self,
            options,
            name=model._meta.label,
            rows=rows,
            search=search,
            faq=False,
            source={"django_model": model._meta.label, "label_field": field},
        )
