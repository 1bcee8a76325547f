"""``semsim finetune bi-encoder|cross-encoder``: adapt a model to your pairs, then use it by path."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim finetune`` and its two subcommands."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a bi-encoder or a cross-encoder on sentence pairs",
        description="Fine-tune on CSV/TSV sentence pairs (with or without a header). Scored pairs "
        "(sentence1, sentence2, score on any range) train with a cosine-similarity loss (bi-encoder) or by "
        "regression (cross-encoder); unscored (query, positive) pairs train a bi-encoder with "
        "multiple-negatives ranking. Prints the dev metrics before and after and saves a model that "
        "SEMSIM_MODEL / SEMSIM_CROSS_ENCODER and every --model option accept as a path.",
    )
    kinds = parser.add_subparsers(dest="finetune_kind", metavar="KIND", required=True)
    for kind, text in (
        ("bi-encoder", "train a sentence-transformers bi-encoder (the model that makes the stored vectors)"),
        ("cross-encoder", "train a cross-encoder (a reranker that scores a pair of texts directly)"),
    ):
        sub = kinds.add_parser(kind, help=text, description=text)
        sub.add_argument("--train", required=True, metavar="FILE", help="training pairs, .csv or .tsv")
        sub.add_argument("--dev", required=True, metavar="FILE", help="dev pairs, measured before and after")
        sub.add_argument(
            "--base",
            default="all-MiniLM-L6-v2",
            metavar="MODEL",
            help="model to start from: a name or a directory (default all-MiniLM-L6-v2; for a cross-encoder "
            "its transformer body is used and a new one-score head is added)",
        )
        sub.add_argument("--out", required=True, metavar="DIR", help="where to save the model (written atomically)")
        sub.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs (default 1)")
        sub.add_argument("--batch-size", type=int, default=16, help="pairs per step (default 16)")
        sub.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
        sub.add_argument("--learning-rate", type=float, default=2e-5, help="peak learning rate (default 2e-5)")
        sub.add_argument(
            "--loss",
            choices=("cosine", "mnrl"),
            default=None,
            help="bi-encoder loss: cosine for scored pairs, mnrl for (query, positive) pairs (default: from the file)",
        )
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--overwrite", action="store_true", help="replace --out if it already holds something")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
        sub.set_defaults(func=_run, kind=kind)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.stderr.write("semsim: terminated; removing the unfinished model\n")
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace) -> int:
    from semsim_pg.finetune import finetune_bi_encoder, finetune_cross_encoder

    train = finetune_bi_encoder if args.kind == "bi-encoder" else finetune_cross_encoder
    # `kill` (SIGTERM) would end Python without running cleanup: turn it into SystemExit so the
    # temporary model folder beside --out is removed, as it is for Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The trainers print their loss logs to stdout; stdout is for the result (and --json).
    with contextlib.redirect_stdout(sys.stderr):
        result = train(
            args.train,
            args.dev,
            args.base,
            args.out,
            loss=args.loss,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
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
        out.write(f"  {name:<{width}}  {before:8.2f}  {after:8.2f}  {after - before:+8.2f}\n")
    out.write(f"saved to {result.out}\n")
    hint = "SEMSIM_MODEL" if result.kind == "bi-encoder" else "SEMSIM_CROSS_ENCODER"
    out.write(f"use it with {hint}={result.out} (or pass the path wherever a model is asked for)\n")
    return 0
