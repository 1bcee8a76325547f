"""``semsim finetune``: tune a model on your own data, measure it on data it never saw, save it
only when it is better.

* ``bi-encoder -c NAME --label-field F | --faq | --queries Q --qrels R``: from a collection.
* ``reranker -c NAME --queries Q --qrels R``: a cross-encoder that reorders the collection's hits.
* ``bi-encoder --train PAIRS --dev PAIRS`` and ``cross-encoder --train --dev``: from pair files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from typing import Any

__all__ = ["register"]

BASE_HELP = "model to start from: a name or a directory"
#: pair files (STS-style scores or (query, positive) pairs) train at this rate unless told
PAIRS_LEARNING_RATE = 2e-5


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim finetune`` and its subcommands."""
    from semsim_pg.finetune.reranker import RerankerOptions  # the defaults live there, once

    parser = subparsers.add_parser(
        "finetune",
        help="tune a bi-encoder or a reranker on a collection's labels, FAQ phrasings or queries",
        description="Tune a model on your own data. From a collection: documents that share a label "
        "(--label-field), FAQ phrasings (--faq) or BEIR queries/qrels (--queries/--qrels) train a bi-encoder "
        "or a reranker, with hard negatives mined from the collection's index. A dev part is held out (or "
        "given with --dev), its metric is printed before and after, and a model that is not better is not "
        "saved. From pair files: --train/--dev sentence pairs. Models are saved atomically with a record "
        "(semsim-finetune.json) and load by path wherever a model is asked for.",
    )
    kinds = parser.add_subparsers(dest="finetune_kind", metavar="KIND", required=True)

    bi = kinds.add_parser(
        "bi-encoder",
        help="tune the model that makes the stored vectors",
        description="Tune a sentence-transformers bi-encoder (MultipleNegativesRankingLoss with a mined hard "
        "negative a row). Then switch the collection to it: semsim reembed -c NAME --model DIR.",
    )
    _collection_options(bi, required=False)
    bi.add_argument("--label-field", metavar="FIELD", help="metadata field whose equal values mark positives")
    bi.add_argument("--faq", action="store_true", help="an FAQ collection: phrasings of one entry are positives")
    bi.add_argument("--text-field", default="text", help="text column of a --dev file of labelled texts")
    bi.add_argument(
        "--max-anchors", type=int, help="train on a seeded sample of this many texts/queries (default: all)"
    )
    _pair_options(bi)
    bi.add_argument(
        "--base", metavar="MODEL", help=f"{BASE_HELP} (default: the collection's model, or all-MiniLM-L6-v2)"
    )
    bi.add_argument(
        "--loss",
        choices=("cosine", "mnrl"),
        default=None,
        help="pair files only: cosine for scored pairs, mnrl for (query, positive)",
    )
    _training_options(bi, batch_size=32, learning_rate=None, rate_help="5e-5; 1e-4 for --faq; 2e-5 for pair files")
    bi.set_defaults(func=_run_bi_encoder)

    rr = kinds.add_parser(
        "reranker",
        help="tune a cross-encoder that reranks a collection's hits",
        description="Tune a cross-encoder (BinaryCrossEntropyLoss on relevant documents and mined hard negatives) "
        "starting from the packaged all-MiniLM-L6-v2 body with a new one-score head. Saved only when it reorders "
        "the dev queries' top candidates better than the index; `--rerank auto` uses it only where its record "
        "shows that gain.",
    )
    _collection_options(rr, required=True)
    rr.add_argument(
        "--base", default="all-MiniLM-L6-v2", metavar="MODEL", help=f"{BASE_HELP} (default all-MiniLM-L6-v2)"
    )
    rr.add_argument(
        "--negatives",
        type=int,
        default=RerankerOptions.negatives,
        help=f"mined negatives per training query (default {RerankerOptions.negatives})",
    )
    rr.add_argument(
        "--max-length",
        type=int,
        default=RerankerOptions.max_length,
        help=f"tokens of query+document read (default {RerankerOptions.max_length})",
    )
    _training_options(
        rr,
        batch_size=RerankerOptions.batch_size,
        learning_rate=RerankerOptions.learning_rate,
        candidates=RerankerOptions.candidates,
    )
    rr.set_defaults(func=_run_reranker)

    ce = kinds.add_parser(
        "cross-encoder",
        help="train a cross-encoder on scored sentence pairs",
        description="Train a cross-encoder by regression on scored pairs (sentence1, sentence2, score).",
    )
    _pair_options(ce, required=True)
    ce.add_argument(
        "--base", default="all-MiniLM-L6-v2", metavar="MODEL", help=f"{BASE_HELP} (default all-MiniLM-L6-v2)"
    )
    ce.add_argument("--loss", choices=("cosine",), default=None, help=argparse.SUPPRESS)
    _training_options(ce, batch_size=16, learning_rate=PAIRS_LEARNING_RATE, mined=False)
    ce.set_defaults(func=_run_pairs, kind="cross-encoder")


def _collection_options(sub: argparse.ArgumentParser, *, required: bool) -> None:
    sub.add_argument("-c", "--collection", required=required, help="the collection to learn from")
    sub.add_argument("--queries", metavar="FILE", help="BEIR queries.jsonl ({_id, text} per line)")
    sub.add_argument("--qrels", metavar="FILE", help="BEIR qrels TSV (query-id, corpus-id, score) over the collection")
    sub.add_argument(
        "--dev",
        metavar="FILE",
        help="dev data instead of a held-out part: a qrels TSV (with --queries) or a labelled CSV/JSONL (with "
        "--label-field), or dev pairs (with --train)",
    )
    sub.add_argument(
        "--dev-fraction", type=float, help="part held out as dev (default 0.1 of each label; 0.2 of queries)"
    )


def _pair_options(sub: argparse.ArgumentParser, *, required: bool = False) -> None:
    sub.add_argument("--train", required=required, metavar="FILE", help="training pairs, .csv or .tsv (pair mode)")
    if required:
        sub.add_argument("--dev", required=True, metavar="FILE", help="dev pairs, measured before and after")


def _training_options(
    sub: argparse.ArgumentParser,
    *,
    batch_size: int,
    learning_rate: float | None,
    candidates: int = 30,
    mined: bool = True,
    rate_help: str | None = None,
) -> None:
    sub.add_argument("--out", required=True, metavar="DIR", help="where to save the model (written atomically)")
    sub.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the training data (default 1; from a collection, more on little data: at least 20 steps)",
    )
    sub.add_argument("--batch-size", type=int, default=batch_size, help=f"rows per step (default {batch_size})")
    sub.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    sub.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help=f"peak learning rate (default {rate_help or f'{learning_rate:g}'})",
    )
    if mined:
        sub.add_argument(
            "--candidates",
            type=int,
            default=candidates,
            help=f"index hits per query: mined for negatives (and, for a reranker, the ones it reorders; default {candidates})",
        )
        sub.add_argument(
            "--negative-ratio",
            type=float,
            default=None,
            help="false-negative guard: skip candidates whose cosine reaches this share of the positive's (default "
            "0.95 for queries; for labels none: a candidate of another label is a true negative, and with this "
            "option it must also score below this share of the nearest same-label document)",
        )
    sub.add_argument("--seed", type=int, default=0)
    if mined:
        sub.add_argument("--threads", type=int, help="torch threads (default: every core that is not busy)")
    sub.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it already holds something (never the model of a collection: write a new folder and "
        "`semsim reembed` to it)",
    )
    sub.add_argument("--json", action="store_true", help="print the result as JSON")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.stderr.write("semsim: terminated; removing the unfinished model\n")
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _training_session() -> Any:
    # `kill` (SIGTERM) would end Python without running cleanup: turn it into SystemExit so the
    # temporary model folder beside --out is removed, as it is for Ctrl-C. The trainers print to
    # stdout; stdout is for the result (and --json).
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_bi_encoder(args: argparse.Namespace) -> int:
    from semsim_pg.errors import InvalidInput

    if args.train:
        if args.collection or args.label_field or args.faq or args.queries:
            raise InvalidInput("--train (pair files) and -c (a collection) are two modes; give one.")
        if not args.dev:
            raise InvalidInput("--train needs --dev: the pairs measured before and after.")
        args.kind = "bi-encoder"
        return _run_pairs(args)
    if not args.collection:
        raise InvalidInput(
            "Give -c COLLECTION (with --label-field, --faq or --queries/--qrels), or --train/--dev pair files."
        )
    if args.loss:
        raise InvalidInput("--loss is for pair files; a collection trains with MultipleNegativesRankingLoss.")
    from semsim_pg.finetune import BiEncoderOptions, finetune_collection_bi_encoder

    options = BiEncoderOptions(**_common_options(args), max_anchors=args.max_anchors)
    with _training_session():
        record = finetune_collection_bi_encoder(
            _store(),
            args.collection,
            args.out,
            label_field=args.label_field,
            faq=args.faq,
            queries=args.queries,
            qrels=args.qrels,
            dev=args.dev,
            text_field=args.text_field,
            base=args.base,
            dev_fraction=args.dev_fraction,
            options=options,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    return _print_record(record, args.json)


def _run_reranker(args: argparse.Namespace) -> int:
    from semsim_pg.errors import InvalidInput
    from semsim_pg.finetune import RerankerOptions, finetune_collection_reranker

    if not args.queries or not args.qrels:
        raise InvalidInput("A reranker learns from judged queries: give --queries FILE and --qrels FILE.")
    options = RerankerOptions(**_common_options(args), negatives=args.negatives, max_length=args.max_length)
    with _training_session():
        record = finetune_collection_reranker(
            _store(),
            args.collection,
            args.out,
            queries=args.queries,
            qrels=args.qrels,
            dev=args.dev,
            base=args.base,
            dev_fraction=args.dev_fraction,
            options=options,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    return _print_record(record, args.json)


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_steps": args.max_steps,
        "candidates": args.candidates,
        "negative_ratio": args.negative_ratio,
        "seed": args.seed,
        "threads": args.threads,
    }


def _store() -> Any:
    from semsim_pg.store import DocumentStore

    return DocumentStore()


def _print_record(record: Any, as_json: bool) -> int:
    from semsim_pg.finetune.records import format_record

    out = sys.stdout
    if as_json:
        json.dump(record.to_dict(), out, indent=2)
        out.write("\n")
        return 0
    out.write(format_record(record) + "\n")
    if record.kind == "bi-encoder":
        out.write(f"switch to it: semsim reembed -c {record.collection} --model {record.out}\n")
    else:
        out.write(
            f"use it: SEMSIM_CROSS_ENCODER={record.out} and `semsim search --rerank auto -c {record.collection}`\n"
        )
    return 0


def _run_pairs(args: argparse.Namespace) -> int:
    from semsim_pg.finetune import RECORD_NAME, finetune_bi_encoder, finetune_cross_encoder

    train = finetune_bi_encoder if args.kind == "bi-encoder" else finetune_cross_encoder
    with _training_session():
        result = train(
            args.train,
            args.dev,
            args.base or "all-MiniLM-L6-v2",
            args.out,
            loss=args.loss,
            epochs=1.0 if args.epochs is None else args.epochs,
            batch_size=args.batch_size,
            max_steps=args.max_steps,
            learning_rate=PAIRS_LEARNING_RATE if args.learning_rate is None else args.learning_rate,
            seed=args.seed,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    out = sys.stdout
    out.write(f"{result.kind} fine-tuned from {result.base} ({result.loss})\n")
    out.write(
        f"  {result.train_pairs} training pairs, {result.steps} steps, {result.seconds:.0f} s; "
        f"dev: {result.dev_pairs} pairs\n"
    )
    width = max(len(name) for name in result.before)
    out.write(f"  {'dev metric':<{width}}  {'before':>8}  {'after':>8}  {'change':>8}\n")
    for name, before in result.before.items():
        after = result.after[name]
        mark = "  <- decides" if name == result.metric else ""
        out.write(f"  {name:<{width}}  {before:8.2f}  {after:8.2f}  {after - before:+8.2f}{mark}\n")
    out.write(f"saved to {result.out} (with its record, {RECORD_NAME})\n")
    hint = "SEMSIM_MODEL" if result.kind == "bi-encoder" else "SEMSIM_CROSS_ENCODER"
    out.write(f"use it with {hint}={result.out} (or pass the path wherever a model is asked for)\n")
    return 0
