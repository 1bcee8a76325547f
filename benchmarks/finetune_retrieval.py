"""SciFact: nDCG@10 of the base and the tuned bi-encoder, and of a tuned reranker over the top
candidates, on judged queries that no training step (nor its dev part) saw.

A seeded part of the judged queries (--test-fraction) is set aside as the unseen test; the rest
is written to a train qrels file that ``finetune_collection_bi_encoder`` and
``finetune_collection_reranker`` use (each holds out its own dev part from it). The test queries
are then scored with ``evaluate_retrieval``, the product's own path (ingest, HNSW search, rerank
with the blend weight the reranker's record chose on its dev part):

    SEMSIM_DATA_DIR=/tmp/semsim-bench python benchmarks/finetune_retrieval.py ../shared/data/scifact --work /tmp/scifact-tuning
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/train.tsv")
    parser.add_argument("--work", type=Path, required=True, help="folder for the split files and the models")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--skip", choices=("bi-encoder", "reranker"), action="append", default=[])
    parser.add_argument("--bi-epochs", type=float, help="default: the command's (one epoch, at least 20 steps)")
    parser.add_argument("--rerank-epochs", type=float, help="default: the command's (one epoch, at least 20 steps)")
    parser.add_argument("--max-anchors", type=int, help="bi-encoder: train on a sample of this many queries")
    parser.add_argument("--max-steps", type=int, help="stop each training after this many steps")
    parser.add_argument("--batch-size", type=int, help="rows per step (default: the commands' defaults)")
    parser.add_argument("--candidates", type=int, default=30, help="first-stage hits the reranker reorders")
    parser.add_argument("--negatives", type=int, help="reranker: mined negatives per query (default: the command's)")
    parser.add_argument("--max-length", type=int, help="reranker: tokens of (query, document) read (default 256)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate of both (default: the commands')")
    parser.add_argument("--dev-fraction", type=float, help="judged train queries each command holds out as dev")
    parser.add_argument("--limit-test", type=int, help="score only the first N unseen queries (a quicker run)")
    args = parser.parse_args()
    from finetune_intents import machine  # the same machine description in both benchmarks

    started_on = machine()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from semsim_pg.evaluation.retrieval import evaluate_retrieval, format_report, read_qrels
    from semsim_pg.finetune import (
        BiEncoderOptions,
        RerankerOptions,
        finetune_collection_bi_encoder,
        finetune_collection_reranker,
    )
    from semsim_pg.finetune.common import use_all_cores
    from semsim_pg.store import DocumentStore

    use_all_cores(args.threads)  # for the ingests and searches too, not only the training

    corpus, queries = args.data / "corpus.jsonl", args.data / "queries.jsonl"
    qrels = read_qrels(args.data / "qrels" / "train.tsv")
    ids = sorted(qrels)
    random.Random(args.seed).shuffle(ids)
    cut = round(len(ids) * args.test_fraction)
    args.work.mkdir(parents=True, exist_ok=True)
    split = {"test": ids[:cut], "train": ids[cut:]}
    for name, chosen in split.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q in chosen for d, g in qrels[q].items()]
        (args.work / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = DocumentStore()
    figures: dict[str, object] = {"test_queries": cut, "train_queries": len(ids) - cut}

    def evaluate(collection: str, model: str | None = None, rerank: str | None = None) -> dict[str, object]:
        report = evaluate_retrieval(
            store,
            corpus=corpus,
            queries=queries,
            qrels=args.work / "test.tsv",
            collection=collection,
            model=model,
            rerank=rerank,
            candidates=args.candidates,
            limit_queries=args.limit_test,
            progress=False,
        )
        print(format_report(report), flush=True)
        return {stage.name: stage.metrics for stage in report.stages}

    figures["base"] = evaluate("bench-scifact")

    if "bi-encoder" not in args.skip:
        start = time.perf_counter()
        record = finetune_collection_bi_encoder(
            store,
            "bench-scifact",
            args.work / "bi",
            queries=queries,
            qrels=args.work / "train.tsv",
            options=BiEncoderOptions(
                epochs=args.bi_epochs,
                seed=args.seed,
                threads=args.threads,
                max_anchors=args.max_anchors,
                max_steps=args.max_steps,
                batch_size=args.batch_size or BiEncoderOptions.batch_size,
                learning_rate=args.learning_rate,
            ),
            dev_fraction=args.dev_fraction,
            overwrite=True,
        )
        figures["bi_encoder_record"] = {**record.to_dict(), "wall_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(figures["bi_encoder_record"], indent=2), flush=True)
        figures["tuned_bi_encoder"] = evaluate("bench-scifact-tuned", model=str(args.work / "bi"))

    if "reranker" not in args.skip:
        start = time.perf_counter()
        record = finetune_collection_reranker(
            store,
            "bench-scifact",
            args.work / "ce",
            queries=queries,
            qrels=args.work / "train.tsv",
            options=RerankerOptions(
                epochs=args.rerank_epochs,
                candidates=args.candidates,
                seed=args.seed,
                threads=args.threads,
                max_steps=args.max_steps,
                batch_size=args.batch_size or RerankerOptions.batch_size,
                learning_rate=args.learning_rate or RerankerOptions.learning_rate,
                negatives=args.negatives or RerankerOptions.negatives,
                max_length=args.max_length or RerankerOptions.max_length,
            ),
            dev_fraction=args.dev_fraction,
            overwrite=True,
        )
        figures["reranker_record"] = {**record.to_dict(), "wall_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(figures["reranker_record"], indent=2), flush=True)
        figures["reranked"] = evaluate("bench-scifact", rerank=str(args.work / "ce"))
    figures["machine_at_start"], figures["machine_at_end"] = started_on, machine()
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    from _entry import run

    run(main)
