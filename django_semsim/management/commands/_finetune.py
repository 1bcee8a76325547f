"""What ``semsim_finetune`` and ``semsim_finetune_faq`` share: the training options, the rows as
labelled texts with their vectors, an index search through ``semantic_search`` (the companion
table's HNSW index, one SQL statement a query) for hard negatives, and the printed result."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from django_semsim.management.commands._options import add_database_option


def add_training_arguments(parser: CommandParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="where to save the model (written atomically)")
    parser.add_argument("--base", metavar="MODEL", help="model to start from (default: SEMSIM['MODEL'])")
    parser.add_argument("--dev-fraction", type=float, help="part of each label held out as dev (default 0.1)")
    parser.add_argument(
        "--epochs", type=float, help="passes over the training rows (default 1; more on little data: at least 20 steps)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32)")
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="peak learning rate (default 2e-5)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--candidates", type=int, default=30, help="index hits searched per text for negatives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core that is not busy)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already holds something")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    add_database_option(parser)


def train(
    command: Any,
    options: dict[str, Any],
    *,
    name: str,
    rows: Sequence[tuple[str, str, str]],
    search: Callable[[Any, int], list[str]],
    faq: bool,
    source: dict[str, Any],
) -> None:
    """Tune the configured model on ``rows`` (id, text, label) and print the record."""
    from django.core.management.base import CommandError

    from django_semsim.conf import get_config
    from django_semsim.encoding import get_model_encoder
    from semsim_pg.errors import SemsimError
    from semsim_pg.finetune import (
        BiEncoderOptions,
        CollectionTexts,
        LabelledText,
        finetune_labelled_bi_encoder,
        format_record,
    )

    config = get_config()
    if not rows:
        raise CommandError(f"{name} has no rows with a label to learn from.")
    try:
        if options["overwrite"]:
            # the folder may be the model of this site's vectors (or of a collection in its database):
            # checked in the site's database, not only in the one the core is configured with
            from django_semsim.database import sqlalchemy_engine
            from semsim_pg.finetune.common import check_out

            engine = sqlalchemy_engine(options["database"])
            try:
                check_out(Path(options["out"]), True, engine=engine)
            finally:
                engine.dispose()  # no idle connection of this command's is left on the site's database
        # The vectors the index holds are this model's: encode the rows once to measure the guard's
        # cosines and the "before" metric with them.
        vectors = get_model_encoder().encode([text for _, text, _ in rows])
        texts = CollectionTexts(
            collection=name,
            model_name=config.model_name,
            ids=[row_id for row_id, _, _ in rows],
            texts=[text for _, text, _ in rows],
            labels=[label for _, _, label in rows],
            vectors=vectors,
        )
        record = finetune_labelled_bi_encoder(
            [LabelledText(*row) for row in rows],
            texts,
            search,
            options["out"],
            base=options["base"] or config.model_name,
            faq=faq,
            dev_fraction=options["dev_fraction"],
            options=BiEncoderOptions(
                epochs=options["epochs"],
                batch_size=options["batch_size"],
                learning_rate=options["learning_rate"],
                max_steps=options["max_steps"],
                candidates=options["candidates"],
                seed=options["seed"],
                threads=options["threads"],
            ),
            progress=int(options["verbosity"]) >= 1,
            overwrite=options["overwrite"],
            source=source,
        )
    except SemsimError as exc:
        raise CommandError(str(exc)) from exc
    if options["json"]:
        command.stdout.write(json.dumps(record.to_dict(), indent=2))
        return
    command.stdout.write(format_record(record))
    command.stdout.write(
        f"switch to it: SEMSIM['MODEL'] = {record.out!r}, then manage.py semsim_reindex --all "
        "(old vectors serve until the switch)"
    )
