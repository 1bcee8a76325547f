"""``semsim eval``: measure a model before trusting it.

``sts`` is here; ``retrieval`` and ``faq`` are contributed by their own modules
(``semsim_pg.cli.faiss`` and ``semsim_pg.cli.faq``) and appear when those provide them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from semsim_pg.evaluation.sts import STSReport

__all__ = ["format_sts_report", "register"]

logger = logging.getLogger(__name__)

# (module, function): each adds one subcommand to `semsim eval`.
_CONTRIBUTED = (
    ("semsim_pg.cli.faiss", "add_eval_retrieval_parser"),
    ("semsim_pg.cli.faq", "add_eval_faq_parser"),
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim eval`` with ``sts`` and whichever contributed subcommands exist."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate models: STS correlation, retrieval quality",
        description="Evaluate models on your own data before choosing one.",
    )
    evals = parser.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)
    _add_sts(evals)
    for module, function in _CONTRIBUTED:
        try:
            add = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            # Not written yet in this checkout: the subcommand is simply absent.
            logger.debug("%s.%s not available; `semsim eval` goes without it", module, function)
            continue
        add(evals)


def _add_sts(evals: argparse._SubParsersAction[Any]) -> None:
    sub = evals.add_parser(
        "sts",
        help="correlation of model similarities with human scores (STS pairs)",
        description="Score sentence pairs with each model and correlate with human scores: Pearson and Spearman "
        "x100 for cosine, Euclidean, Manhattan and dot-product similarity (and each cross-encoder's own score), "
        "side by side. FILE is CSV or TSV, with or without a header: sentence1, sentence2, score on any range.",
    )
    sub.add_argument("file", metavar="FILE", help="STS pairs, .csv or .tsv")
    sub.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M",
        help="bi-encoder name or directory; repeat to compare (default: the configured model)",
    )
    sub.add_argument(
        "--cross-encoder",
        action="append",
        nargs="?",
        const="",
        default=[],
        metavar="PATH",
        help="a cross-encoder directory to score the same pairs; repeat to compare; without PATH, the "
        "configured one (SEMSIM_CROSS_ENCODER)",
    )
    sub.add_argument(
        "--top-errors",
        type=int,
        default=5,
        metavar="N",
        help="list the N pairs each model gets most wrong, gold and predicted on 0-1 (default 5; 0 for none)",
    )
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.set_defaults(func=_run_sts)


def _run_sts(args: argparse.Namespace) -> int:
    from semsim_pg.errors import InvalidInput
    from semsim_pg.evaluation.files import read_sts_pairs
    from semsim_pg.evaluation.sts import evaluate_sts
    from semsim_pg.settings import get_settings

    if args.top_errors < 0:
        raise InvalidInput(f"--top-errors must be 0 or more; received {args.top_errors}.")
    pairs = read_sts_pairs(args.file)
    settings = get_settings()
    models = args.model or [settings.model]
    cross_encoders = [path or settings.cross_encoder for path in args.cross_encoder]
    report = evaluate_sts(
        pairs, models=models, cross_encoders=cross_encoders, source=str(args.file), progress=not args.quiet
    )
    if args.json:
        json.dump(report.to_dict(top_errors=args.top_errors), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        format_sts_report(report, sys.stdout, top_errors=args.top_errors)
    return 0


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_sts_report(report: STSReport, out: TextIO, *, top_errors: int = 5) -> None:
    """The side-by-side table, then each model's largest errors."""
    low, high = report.gold_range
    out.write(f"STS: {report.source} — {len(report.pairs)} pairs, gold scale {low:g} to {high:g}\n\n")
    columns = [
        name
        for name in ("cosine", "euclidean", "manhattan", "dot", "score")
        if any(name in r.spearman for r in report.results)
    ]
    width = max(24, *(len(_clip(r.name, 48)) for r in report.results))
    block = " ".join(f"{c[:9]:>9}" for c in columns)
    out.write(f"{'':<{width}}  {'Spearman x100':^{len(block)}}  |  {'Pearson x100':^{len(block)}}\n")
    out.write(f"{'model':<{width}}  {block}  |  {block}  {'seconds':>8}\n")
    for r in report.results:

        def cells(values: dict[str, float]) -> str:
            return " ".join(f"{values[c]:9.2f}" if c in values else f"{'-':>9}" for c in columns)

        out.write(f"{_clip(r.name, 48):<{width}}  {cells(r.spearman)}  |  {cells(r.pearson)}  {r.seconds:8.1f}\n")
    if top_errors <= 0:
        return
    for r in report.results:
        what = "cosine" if r.kind == "bi-encoder" else "score"
        out.write(f"\nLargest errors of {r.name} ({what}; gold and predicted rescaled to 0-1):\n")
        out.write(f"{'line':>6} {'gold':>5} {'pred':>5}  sentence1 | sentence2\n")
        for e in report.top_errors(r, top_errors):
            out.write(
                f"{e.line:>6} {e.gold:5.2f} {e.predicted:5.2f}  {_clip(e.sentence1, 60)} | {_clip(e.sentence2, 60)}\n"
            )
