"""``semsim faq import|export|ask|list``: load FAQ entries into a collection, save them to a file,
and ask the collection questions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from semsim_pg.cli.common import add_rerank_option, open_store, out, progress_enabled, rerank_arg, short
from semsim_pg.errors import InvalidInput
from semsim_pg.validation import visible

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim faq`` and its actions to the ``semsim`` parser."""
    p = subparsers.add_parser("faq", help="FAQ matching: import FAQs, ask questions")
    faq = p.add_subparsers(dest="faq_command", metavar="ACTION", required=True)

    q = faq.add_parser(
        "import",
        help="add or update FAQ entries from a .tsv/.csv file",
        description="Columns: faq_id, question, answer[, category][, alternatives separated by '|'][, published "
        "(true/false; a row marked false, a Django FAQ draft, is refused: a collection has no drafts)]. "
        "Cells guarded against spreadsheet formulas (a leading ') are read unguarded. "
        "The whole file is checked first: a malformed line imports nothing. An entry in the file replaces "
        "the stored one's question, answer and phrasings, but keeps the phrasings `semsim faq promote` "
        "added that the file does not list (save them to a file with `semsim faq export`).",
    )
    q.add_argument("file", type=Path)
    q.add_argument("-c", "--collection", required=True, help="collection name (created if missing)")
    q.add_argument(
        "--replace",
        action="store_true",
        help="make the collection hold exactly the file: also remove the entries, and the promoted phrasings, "
        "that it does not list",
    )
    q.add_argument("--model", help="model for a new collection (default: SEMSIM_MODEL)")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_faq_import)

    q = faq.add_parser(
        "export",
        help="write a collection's FAQ entries to a .tsv/.csv file that `faq import` reads",
        description="Every entry with all its alternative phrasings, those `semsim faq promote` added too, in the "
        "format `semsim faq import` reads: importing the file back changes and encodes nothing. Written "
        "atomically; an existing file is refused unless --overwrite.",
    )
    q.add_argument("file", type=Path, help="the .tsv or .csv file to write")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_faq_export)

    q = faq.add_parser("ask", help="find the FAQ entries that answer a question")
    q.add_argument("question", nargs="?", help="the question (omit with --interactive)")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("-k", type=int, default=3, help="how many entries to show (default 3)")
    add_rerank_option(q)
    q.add_argument("--threshold", type=float, help="confidence threshold (default: SEMSIM_FAQ_THRESHOLD or built in)")
    q.add_argument("--category", action="append", help="only entries of this category (repeatable)")
    q.add_argument("-i", "--interactive", action="store_true", help="read questions from stdin, one a line, until EOF")
    q.add_argument("--json", action="store_true", help="print JSON (one line per question)")
    q.set_defaults(func=cmd_faq_ask)

    q = faq.add_parser("list", help="list the FAQ entries of a collection")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_faq_list)

    from semsim_pg.cli.insights import register_faq

    register_faq(faq)  # unanswered, promote: the query log's view of the FAQ


def cmd_faq_import(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher, kept_promoted_note, read_faq_file

    entries = read_faq_file(args.file)  # everything checked before anything is written
    matcher = FAQMatcher(open_store(), args.collection, model=args.model)
    result = matcher.load(entries, replace=args.replace, progress=progress_enabled(args))
    summary = {**result.to_dict(), "collection": args.collection}
    if args.json:
        out(json.dumps(summary))
    else:
        out(
            f"{args.collection}: {result.entries} entries ({result.phrasings} phrasings): {result.inserted} inserted, "
            f"{result.updated} updated, {result.unchanged} unchanged, {result.encoded} encoded, "
            f"{result.removed} removed" + kept_promoted_note(result.kept_promoted, "`semsim faq export`")
        )
    return 0


def cmd_faq_export(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher, write_faq_file
    from semsim_pg.fsutil import check_output_path

    check_output_path(args.file, "FILE")  # before the database is asked anything
    entries = FAQMatcher(open_store(), args.collection).entries()
    if not entries:
        raise InvalidInput(f"{args.collection!r} holds no FAQ entries: nothing to export.")
    write_faq_file(args.file, entries, overwrite=args.overwrite)
    phrasings = sum(len(entry.phrasings()) for entry in entries)
    if args.json:
        out(
            json.dumps(
                {"collection": args.collection, "file": str(args.file), "entries": len(entries), "phrasings": phrasings}
            )
        )
    else:
        promoted = sum(len(entry.promoted) for entry in entries)
        note = f", {promoted} of them added by promotion" if promoted else ""
        out(f"{args.collection}: {len(entries)} entries ({phrasings} phrasings{note}) written to {args.file}")
    return 0


def cmd_faq_ask(args: argparse.Namespace) -> int:
    from semsim_pg.faq import FAQMatcher

    if args.interactive and args.question:
        raise InvalidInput("Give either a QUESTION or --interactive, not both.")
    if not args.interactive and not args.question:
        raise InvalidInput("Give a question, e.g. semsim faq ask 'how do I return an item' -c NAME, or --interactive.")
    matcher = FAQMatcher(open_store(), args.collection)
    rerank = rerank_arg(args.rerank)
    category = args.category or None

    def ask(question: str) -> None:
        answer = matcher.answer(question, args.threshold, k=args.k, rerank=rerank, category=category)
        if args.json:
            out(json.dumps(answer.to_dict()))
            return
        if answer.answered and answer.entry is not None:
            out(
                f"answer ({answer.score:.3f} >= {answer.threshold:.3f}): [{visible(answer.entry.faq_id)}] "
                f"{visible(answer.entry.question)}"
            )
            out(f"  {visible(answer.entry.answer, lines=True)}")
        else:
            out(f"no answer: {answer.reason}; suggest contacting support")
        for rank, match in enumerate(answer.matches, start=1):
            scores = f"{match.score:6.3f}"
            if match.rerank_score is not None and match.similarity is not None:
                scores += f" (similarity {match.similarity:.3f})"
            via = "" if match.matched_kind == "question" else f'  via "{short(match.matched_text, 50)}"'
            out(f"  {rank:>2}. {scores}  {visible(match.entry.faq_id):<20} {short(match.entry.question, 60)}{via}")

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

    entries = FAQMatcher(open_store(), args.collection).entries()
    if args.json:
        out(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        out(f"{args.collection}: no FAQ entries")
    for e in entries:
        promoted = f", {len(e.promoted)} promoted" if e.promoted else ""
        extra = f" (+{len(e.alternatives)} phrasings{promoted})" if e.alternatives else ""
        out(f"{visible(e.faq_id):<24} {visible(e.category or '-'):<12} {short(e.question, 70)}{extra}")
    return 0
