"""``semsim faq`` (import, ask, list) and ``semsim eval faq``.

``add_eval_faq_parser(eval_subparsers)`` is called by the ``semsim eval`` group's module, so the
FAQ evaluation lives beside the rest of the FAQ commands but appears under ``eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from semsim_pg.errors import InvalidInput

__all__ = ["add_eval_faq_parser", "register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim faq`` and its actions to the ``semsim`` parser."""
    p = subparsers.add_parser("faq", help="FAQ matching: import FAQs, ask questions")
    faq = p.add_subparsers(dest="faq_command", metavar="ACTION", required=True)

    q = faq.add_parser(
        "import",
        help="add or update FAQ entries from a .tsv/.csv file",
        description="Columns: faq_id, question, answer[, category][, alternatives separated by '|']. "
        "The whole file is checked first: a malformed line imports nothing.",
    )
    q.add_argument("file", type=Path)
    q.add_argument("-c", "--collection", required=True, help="collection name (created if missing)")
    q.add_argument("--replace", action="store_true", help="also remove entries that are not in the file")
    q.add_argument("--model", help="model for a new collection (default: SEMSIM_MODEL)")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_faq_import)

    q = faq.add_parser("ask", help="find the FAQ entries that answer a question")
    q.add_argument("question", nargs="?", help="the question (omit with --interactive)")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("-k", type=int, default=3, help="how many entries to show (default 3)")
    _add_rerank(q)
    q.add_argument("--threshold", type=float, help="confidence threshold (default: SEMSIM_FAQ_THRESHOLD or built in)")
    q.add_argument("--category", action="append", help="only entries of this category (repeatable)")
    q.add_argument("-i", "--interactive", action="store_true", help="read questions from stdin, one a line, until EOF")
    q.add_argument("--json", action="store_true", help="print JSON (one line per question)")
    q.set_defaults(func=cmd_faq_ask)

    q = faq.add_parser("list", help="list the FAQ entries of a collection")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_faq_list)


def add_eval_faq_parser(eval_subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``faq`` to the ``semsim eval`` group (called by that group's module)."""
    p: argparse.ArgumentParser = eval_subparsers.add_parser(
        "faq",
        help="FAQ matching quality (accuracy@1/@5, MRR) and the threshold for a target precision",
        description="FAQs: .tsv/.csv with faq_id, question, answer[, category][, alternatives]. Queries: .tsv/.csv "
        "with query, faq_id (an empty faq_id marks a question no entry should answer).",
    )
    p.add_argument("--faqs", type=Path, required=True, metavar="FILE")
    p.add_argument("--queries", type=Path, required=True, metavar="FILE")
    _add_rerank(p)
    p.add_argument("--target-precision", type=float, default=0.9, help="precision among answered (default 0.9)")
    p.add_argument("--candidates", type=int, help="phrasings fetched per query (default max(5k, 20))")
    p.add_argument("--collection", help="keep the FAQs in this collection (default: a temporary one, dropped)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval_faq)
    return p


def _add_rerank(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerank",
        nargs="?",
        const="",
        metavar="MODEL",
        help="rerank with a cross-encoder (a directory or name; alone: SEMSIM_CROSS_ENCODER)",
    )


def _rerank_arg(value: str | None) -> bool | str:
    if value is None:
        return False
    return value or True


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _store() -> Any:
    from semsim_pg.store import DocumentStore

    return DocumentStore()


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# commands ------------------------------------------------------------------------------------
def cmd_faq_import(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher, read_faq_file

    entries = read_faq_file(args.file)  # everything checked before anything is written
    matcher = FAQMatcher(_store(), args.collection, model=args.model)
    result = matcher.load(entries, replace=args.replace, progress=not args.quiet)
    summary = {**result.to_dict(), "collection": args.collection}
    if args.json:
        _out(json.dumps(summary))
    else:
        _out(
            f"{args.collection}: {result.entries} entries ({result.phrasings} phrasings): {result.inserted} inserted, "
            f"{result.updated} updated, {result.unchanged} unchanged, {result.encoded} encoded, "
            f"{result.removed} removed"
        )
    return 0


def cmd_faq_ask(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher

    if args.interactive and args.question:
        raise InvalidInput("Give either a QUESTION or --interactive, not both.")
    if not args.interactive and not args.question:
        raise InvalidInput("Give a question, e.g. semsim faq ask 'how do I return an item' -c NAME, or --interactive.")
    matcher = FAQMatcher(_store(), args.collection)
    rerank = _rerank_arg(args.rerank)
    category = args.category or None

    def ask(question: str) -> None:
        answer = matcher.answer(question, args.threshold, k=args.k, rerank=rerank, category=category)
        if args.json:
            _out(json.dumps(answer.to_dict()))
            return
        if answer.answered and answer.entry is not None:
            _out(
                f"answer ({answer.score:.3f} >= {answer.threshold:.3f}): [{answer.entry.faq_id}] {answer.entry.question}"
            )
            _out(f"  {answer.entry.answer}")
        else:
            _out(f"no answer: {answer.reason}; suggest contacting support")
        for rank, match in enumerate(answer.matches, start=1):
            scores = f"{match.score:6.3f}"
            if match.rerank_score is not None and match.similarity is not None:
                scores += f" (similarity {match.similarity:.3f})"
            via = "" if match.matched_kind == "question" else f'  via "{_short(match.matched_text, 50)}"'
            _out(f"  {rank:>2}. {scores}  {match.entry.faq_id:<20} {_short(match.entry.question, 60)}{via}")

    if not args.interactive:
        ask(args.question)
        return 0
    prompt = sys.stdin.isatty() and not args.json
    while True:
        if prompt:
            sys.stderr.write("question> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            ask(line.strip())
            sys.stdout.flush()
    return 0


def cmd_faq_list(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher

    entries = FAQMatcher(_store(), args.collection).entries()
    if args.json:
        _out(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        _out(f"{args.collection}: no FAQ entries")
    for e in entries:
        extra = f" (+{len(e.alternatives)} phrasings)" if e.alternatives else ""
        _out(f"{e.faq_id:<24} {e.category or '-':<12} {_short(e.question, 70)}{extra}")
    return 0


def cmd_eval_faq(args: argparse.Namespace) -> int:
    from semsim_pg.evaluation.faq import evaluate_faq
    from semsim_pg.faq import read_faq_file, read_faq_queries

    if not 0.0 < args.target_precision <= 1.0:
        raise InvalidInput(f"--target-precision must be in (0, 1], got {args.target_precision}.")
    entries = read_faq_file(args.faqs)
    queries = read_faq_queries(args.queries, known_ids=[e.faq_id for e in entries])
    result = evaluate_faq(
        _store(),
        entries,
        queries,
        rerank=_rerank_arg(args.rerank),
        target_precision=args.target_precision,
        collection=args.collection,
        candidates=args.candidates,
        progress=not args.quiet,
    )
    if args.json:
        _out(json.dumps(result.to_dict(), indent=2))
        return 0
    scorer = f"rerank score of {result.reranker}" if result.reranker else "cosine similarity"
    _out(f"FAQ evaluation: {result.entries} entries, {result.queries} queries ({result.in_scope} with an answer)")
    _out(f"model {result.model}; scores: {scorer}; {result.seconds:.1f} s")
    _out("")
    _out(f"accuracy@1  {result.accuracy_at_1:.3f}")
    _out(f"accuracy@5  {result.accuracy_at_5:.3f}")
    _out(f"MRR@10      {result.mrr_at_10:.3f}")
    _out("")
    _out(f"{'threshold':>9}  {'answered':>8}  {'precision':>9}")
    for p in result.thresholds:
        precision = f"{p.precision:9.3f}" if p.precision is not None else f"{'-':>9}"
        _out(f"{p.threshold:9.3f}  {p.answered:8.3f}  {precision}")
    _out("")
    if result.recommended is not None and result.recommended.precision is not None:
        _out(
            f"recommended threshold for precision >= {result.target_precision:.2f}: "
            f"{result.recommended.threshold:.3f} (answers {result.recommended.answered:.1%} of queries, "
            f"{result.recommended.precision:.1%} of them correctly)"
        )
    else:
        _out(f"no threshold reaches precision {result.target_precision:.2f} on these queries")
    return 0
