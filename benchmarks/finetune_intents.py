"""BANKING77 intents: 1-NN accuracy of the base and the tuned bi-encoder on texts neither saw.

A seeded part of train.csv (--test-fraction) is set aside as an unseen test; the rest is ingested
into a collection with its category as metadata, and ``finetune_collection_bi_encoder`` tunes on
it (holding out its own dev part). The test texts are then searched (k=1) in a collection of the
same documents encoded by each model, through the product's own search, and the category of the
nearest document is compared with the text's. Run with the embedded server:

    SEMSIM_DATA_DIR=/tmp/semsim-bench python benchmarks/finetune_intents.py ../shared/data/banking77/train.csv --out /tmp/intents-v1
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from semsim_pg.backends import cpu_info


def machine() -> dict[str, Any]:
    """The CPU and the load average now: figures from a shared machine are read with these."""
    return {
        "cpu": cpu_info().model,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", type=Path, help="BANKING77 train.csv (text,category)")
    parser.add_argument("--out", type=Path, required=True, help="where the tuned model goes")
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the product's for labels (5e-5)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--limit", type=int, help="use only this many rows (a quick run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--max-anchors", type=int, help="train on a sample of this many texts")
    parser.add_argument("--evals-per-epoch", type=int, default=1, help="dev evaluations per epoch (the best is kept)")
    parser.add_argument("--negative-ratio", type=float, help="score guard (default: none for labels)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    started_on = machine()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from semsim_pg.finetune import BiEncoderOptions, finetune_collection_bi_encoder
    from semsim_pg.finetune.common import use_all_cores
    from semsim_pg.store import DocumentStore

    use_all_cores(args.threads)  # for the ingests and searches too, not only the training

    with args.train.open(newline="", encoding="utf-8") as handle:
        rows = [(r["text"].strip(), r["category"]) for r in csv.DictReader(handle) if r["text"].strip()]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    if args.limit:
        rows = rows[: args.limit]
    cut = round(len(rows) * args.test_fraction)
    test, train = rows[:cut], rows[cut:]
    docs = [(f"b{i}", text, {"category": label}) for i, (text, label) in enumerate(train)]
    store = DocumentStore()
    name = f"bench-intents-{len(train)}"
    store.create_collection(name)
    store.upsert(name, docs, progress=False)

    def accuracy(collection: str) -> float:
        hits = store.search_many(collection, [t for t, _ in test], k=1)
        return sum(h[0].metadata["category"] == label for h, (_, label) in zip(hits, test, strict=True)) / len(test)

    base = accuracy(name)
    print(f"base 1-NN accuracy on {len(test)} unseen texts: {base:.4f}", flush=True)
    start = time.perf_counter()
    record = finetune_collection_bi_encoder(
        store,
        name,
        args.out,
        label_field="category",
        options=BiEncoderOptions(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_steps=args.max_steps,
            seed=args.seed,
            threads=args.threads,
            max_anchors=args.max_anchors,
            evals_per_epoch=args.evals_per_epoch,
            negative_ratio=args.negative_ratio,
        ),
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    print(json.dumps(record.to_dict(), indent=2), flush=True)
    tuned_name = f"{name}-tuned"
    if tuned_name in {c.name for c in store.list_collections()}:
        store.drop_collection(tuned_name)
    store.create_collection(tuned_name, model=str(args.out))
    store.upsert(tuned_name, docs, progress=False)
    tuned = accuracy(tuned_name)
    figures = {
        "train_docs": len(train),
        "test_texts": len(test),
        "base_test_accuracy": base,
        "tuned_test_accuracy": tuned,
        "dev_before": record.before,
        "dev_after": record.after,
        "finetune_seconds": round(seconds, 1),
        "train_seconds": record.seconds,
        "steps": record.steps,
        "mining": record.data.get("mining"),
        "machine_at_start": started_on,
        "machine_at_end": machine(),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    from _entry import run

    run(main)
