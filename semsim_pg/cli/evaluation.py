"""``semsim eval sts|retrieval|faq``: measure a model before trusting it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from semsim_pg.cli.common import add_rerank_option, open_store, out, progress_enabled, rerank_arg
from semsim_pg.errors import InvalidInput

if TYPE_CHECKING:
    from semsim_pg.evaluation.sts import STSReport

__all__ = ["format_sts_report", "register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim eval`` with ``sts``, ``retrieval`` and ``faq``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate models: STS correlation, retrieval quality, FAQ matching",
        description="Evaluate models on your own data before choosing one.",
    )
    evals = parser.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)
    _add_sts(evals)
    _add_retrieval(evals)
    _add_faq(evals)


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
        pairs, models=models, cross_encoders=cross_encoders, source=str(args.file), progress=progress_enabled(args)
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


def _add_retrieval(evals: argparse._SubParsersAction[Any]) -> None:
    q: argparse.ArgumentParser = evals.add_parser(
        "retrieval", help="nDCG/MRR/recall of search through the database on a BEIR-layout data set"
    )
    q.add_argument("--corpus", required=True, type=Path, help="corpus.jsonl: {_id, title, text} per line")
    q.add_argument("--queries", required=True, type=Path, help="queries.jsonl: {_id, text} per line")
    q.add_argument("--qrels", required=True, type=Path, help="qrels TSV with header: query-id corpus-id score")
    q.add_argument("-c", "--collection", help="collection to ingest into and search (default: from the corpus path)")
    q.add_argument("--model", help="model for a new collection (default: SEMSIM_MODEL)")
    q.add_argument("--rerank", metavar="MODEL", help="rerank the candidates with this cross-encoder (name or path)")
    q.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="with --rerank: the first-stage hits the cross-encoder reorders per query (default 100); "
        "the first stage itself is scored on its top 100 either way",
    )
    q.add_argument("--exact", action="store_true", help="exact search instead of the HNSW index")
    q.add_argument(
        "--mode",
        default="semantic",
        help="also evaluate lexical (BM25) or hybrid (RRF) search, beside semantic (default: semantic only)",
    )
    q.add_argument("--ef-search", type=int, help="HNSW ef_search (default SEMSIM_EF_SEARCH)")
    q.add_argument(
        "--chunk",
        type=int,
        metavar="TOKENS",
        help="split the corpus into passages of TOKENS tokens (use a collection of its own, -c NAME)",
    )
    q.add_argument("--limit-queries", type=int, metavar="N", help="evaluate only the first N judged queries")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_run_retrieval)


def _run_retrieval(args: argparse.Namespace) -> int:
    from semsim_pg.evaluation.retrieval import evaluate_retrieval, format_report
    from semsim_pg.store.search import MODES

    if args.mode not in MODES:
        raise InvalidInput(f"Unknown --mode {args.mode!r}: use one of {', '.join(MODES)}.")

    report = evaluate_retrieval(
        open_store(),
        corpus=args.corpus,
        queries=args.queries,
        qrels=args.qrels,
        collection=args.collection,
        model=args.model,
        rerank=args.rerank,
        candidates=args.candidates,
        exact=args.exact,
        ef_search=args.ef_search,
        mode=args.mode,
        limit_queries=args.limit_queries,
        progress=progress_enabled(args),
        chunk=args.chunk,
    )
    if args.json:
        out(json.dumps(report.to_dict()))
    else:
        out(format_report(report))
    return 0


def _add_faq(evals: argparse._SubParsersAction[Any]) -> None:
    p: argparse.ArgumentParser = evals.add_parser(
        "faq",
        help="FAQ matching quality (accuracy@1/@5, MRR) and the threshold for a target precision",
        description="FAQs: .tsv/.csv with faq_id, question, answer[, category][, alternatives]. Queries: .tsv/.csv "
        "with query, faq_id (an empty faq_id marks a question no entry should answer).",
    )
    p.add_argument("--faqs", type=Path, required=True, metavar="FILE")
    p.add_argument("--queries", type=Path, required=True, metavar="FILE")
    add_rerank_option(p)
    p.add_argument("--target-precision", type=float, default=0.9, help="precision among answered (default 0.9)")
    p.add_argument("--candidates", type=int, help="phrasings fetched per query (default max(5k, 20))")
    p.add_argument("--collection", help="keep the FAQs in this collection (default: a temporary one, dropped)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run_faq)


def _run_faq(args: argparse.Namespace) -> int:
    from semsim_pg.evaluation.faq import evaluate_faq
    from semsim_pg.faq import read_faq_file, read_faq_queries

    if not 0.0 < args.target_precision <= 1.0:
        raise InvalidInput(f"--target-precision must be in (0, 1], got {args.target_precision}.")
    entries = read_faq_file(args.faqs)
    queries = read_faq_queries(args.queries, known_ids=[e.faq_id for e in entries])
    result = evaluate_faq(
        open_store(),
        entries,
        queries,
        rerank=rerank_arg(args.rerank),
        target_precision=args.target_precision,
        collection=args.collection,
        candidates=args.candidates,
        progress=progress_enabled(args),
    )
    if args.json:
        out(json.dumps(result.to_dict(), indent=2))
        return 0
    scorer = f"rerank score of {result.reranker}" if result.reranker else "cosine similarity"
    out(f"FAQ evaluation: {result.entries} entries, {result.queries} queries ({result.in_scope} with an answer)")
    out(f"model {result.model}; scores: {scorer}; {result.seconds:.1f} s")
    out("")
    out(f"accuracy@1  {result.accuracy_at_1:.3f}")
    out(f"accuracy@5  {result.accuracy_at_5:.3f}")
    out(f"MRR@10      {result.mrr_at_10:.3f}")
    out("")
    out(f"{'threshold':>9}  {'answered':>8}  {'precision':>9}")
    for p in result.thresholds:
        precision = f"{p.precision:9.3f}" if p.precision is not None else f"{'-':>9}"
        out(f"{p.threshold:9.3f}  {p.answered:8.3f}  {precision}")
    out("")
    if result.recommended is not None and result.recommended.precision is not None:
        out(
            f"recommended threshold for precision >= {result.target_precision:.2f}: "
            f"{result.recommended.threshold:.3f} (answers {result.recommended.answered:.1%} of queries, "
            f"{result.recommended.precision:.1%} of them correctly)"
        )
    else:
        out(f"no threshold reaches precision {result.target_precision:.2f} on these queries")
    return 0
