"""`semsim eval faq` on a FAQ-like slice of BANKING77.

BANKING77 holds customer-support questions labelled with 77 intents. Treated as an FAQ: one entry
per intent whose question is the intent's first utterance, every other utterance of the intent a
query that should find that entry. The two files are written to a temporary folder in the
`semsim eval faq` formats, then evaluated exactly as the command does (the same handler).

    SEMSIM_DATA_DIR=/tmp/me-data .venv/bin/python benchmarks/banking77_faq.py \
        [--csv ../shared/data/banking77/train.csv] [--per-intent 40] [--alternatives 4 --query-start 5]
        [--rerank MODEL] [--json] [--keep DIR]

``--alternatives N`` makes the next N utterances of each intent alternative phrasings of its entry,
which shows what alternative phrasings buy (compare with ``--alternatives 0 --query-start N+1``:
the same queries against the bare questions).

Every query of BANKING77 (~9,900) takes a couple of minutes to encode on a shared 2-core machine;
``--per-intent N`` keeps the first N queries of each intent.

``--tune DIR`` also tunes the model on the FAQ's own phrasings (questions and alternatives) and
compares accuracy@1 before and after on held-out queries. A seeded part of the judged queries
(``--dev-share``) is the dev part that picks the checkpoint and decides whether the model is
saved; the rest, which neither training nor that choice saw, is the test. The user's commands,
run one by one:

    semsim faq import faqs.tsv -c NAME
    semsim finetune bi-encoder -c NAME --faq --dev dev.tsv --text-field query --out DIR
    SEMSIM_MODEL=DIR semsim eval faq --faqs faqs.tsv --queries test.tsv

``--faqs FILE --queries FILE`` evaluate (and tune on) given files instead of BANKING77, e.g. the
shipped FAQ: ``--faqs semsim_pg/data/faq_entries.tsv --queries semsim_pg/data/faq_queries.tsv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77" / "train.csv"


def build_files(
    source: Path, folder: Path, per_intent: int | None, alternatives: int = 0, query_start: int | None = None
) -> tuple[Path, Path, int, int]:
    """Write faqs.tsv and queries.tsv for `semsim eval faq`; return their paths and sizes.

    Utterance 0 of an intent is the question, utterances 1..``alternatives`` its alternative
    phrasings; queries start after them (or at ``query_start``, to compare runs on the same queries).
    """
    first = 1 + alternatives if query_start is None else query_start
    if first < 1 + alternatives:
        raise SystemExit(f"--query-start must be at least {1 + alternatives}: a query may not be a phrasing")
    by_intent: dict[str, list[str]] = defaultdict(list)
    with source.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):  # some texts are quoted and hold newlines
            text = " ".join(row["text"].split())
            if text:
                by_intent[row["category"]].append(text)
    faqs = folder / "faqs.tsv"
    queries = folder / "queries.tsv"
    count = 0
    with faqs.open("w", encoding="utf-8", newline="") as f, queries.open("w", encoding="utf-8", newline="") as q:
        fw = csv.writer(f, delimiter="\t", lineterminator="\n")
        qw = csv.writer(q, delimiter="\t", lineterminator="\n")
        fw.writerow(["faq_id", "question", "answer", "category", "alternatives"])
        qw.writerow(["query", "faq_id"])
        for intent, texts in sorted(by_intent.items()):
            answer = f"(the answer for {intent.replace('_', ' ')})"
            phrasings = [t.replace("|", "/") for t in texts[1 : 1 + alternatives]]
            fw.writerow([intent, texts[0], answer, intent, "|".join(phrasings)])
            for text in texts[first : None if per_intent is None else first + per_intent]:
                qw.writerow([text, intent])
                count += 1
    return faqs, queries, len(by_intent), count


def semsim(*argv: str, model: str | None = None) -> str:
    """Run one ``semsim`` command as a user would (a fresh process: its own settings) and return stdout."""
    env = {**os.environ, **({"SEMSIM_MODEL": model} if model else {})}
    command = [sys.executable, "-c", "import sys; from semsim_pg.cli import main; sys.exit(main())", *argv]
    sys.stderr.write(f"$ {'SEMSIM_MODEL=' + model + ' ' if model else ''}semsim {' '.join(argv)}\n")
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(f"  ({time.perf_counter() - started:.0f} s)\n")
    if done.returncode:
        raise SystemExit(f"semsim {' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def split_queries(queries: Path, folder: Path, dev_share: float, seed: int = 0) -> tuple[Path, Path, int]:
    """A seeded ``dev_share`` of the judged queries as a dev file; the rest (and the questions
    nothing should answer) as the test file."""
    import random

    with queries.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if queries.suffix == ".tsv" else ","))
    judged = [r for r in rows if (r.get("faq_id") or "").strip()]
    random.Random(seed).shuffle(judged)
    cut = round(len(judged) * dev_share)
    dev, test = folder / "dev.tsv", folder / "test.tsv"
    for path, part in ((dev, judged[:cut]), (test, judged[cut:] + [r for r in rows if r not in judged])):
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["query", "faq_id"])
            writer.writerows([r["query"], r.get("faq_id") or ""] for r in part)
    return dev, test, cut


def tune_and_compare(
    faqs: Path, queries: Path, out: Path, collection: str, finetune: list[str], dev_share: float
) -> dict[str, object]:
    """accuracy@1 of held-out queries with the base model, then with a model tuned on the FAQ's phrasings."""
    folder = out.parent / f"{out.name}-queries"  # the split beside the model, for a later look
    folder.mkdir(parents=True, exist_ok=True)
    dev, queries, dev_count = split_queries(queries, folder, dev_share)
    before = json.loads(semsim("-q", "eval", "faq", "--faqs", str(faqs), "--queries", str(queries), "--json"))
    semsim("-q", "faq", "import", str(faqs), "-c", collection)
    started = time.perf_counter()
    argv = ["-q", "finetune", "bi-encoder", "-c", collection, "--faq", "--dev", str(dev), "--text-field", "query"]
    record = json.loads(semsim(*argv, "--out", str(out), "--overwrite", "--json", *finetune))
    seconds = time.perf_counter() - started
    after = json.loads(
        semsim("-q", "eval", "faq", "--faqs", str(faqs), "--queries", str(queries), "--json", model=str(out))
    )
    keys = ("accuracy_at_1", "accuracy_at_5", "mrr_at_10")
    return {
        "test_queries": before.get("queries"),
        "dev_queries": dev_count,
        "before": {k: before.get(k) for k in keys},
        "after": {k: after.get(k) for k in keys},
        "dev_before": record["before"],
        "dev_after": record["after"],
        "train_phrasings": record["data"].get("train_queries"),
        "dev_phrasings": record["data"].get("dev_queries"),
        "steps": record["steps"],
        "train_seconds": record["seconds"],
        "finetune_command_seconds": round(seconds, 1),
        "finetune_options": finetune,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="BANKING77 train.csv (text,category)")
    parser.add_argument("--per-intent", type=int, help="queries per intent (default: all)")
    parser.add_argument("--alternatives", type=int, default=0, help="utterances after the first that become phrasings")
    parser.add_argument("--query-start", type=int, help="index of each intent's first query (default 1 + alternatives)")
    parser.add_argument("--rerank", nargs="?", const="", metavar="MODEL", help="rerank with a cross-encoder")
    parser.add_argument("--target-precision", type=float, default=0.9)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the two files here and keep them")
    parser.add_argument("--faqs", type=Path, help="an FAQ file to use instead of BANKING77 (with --queries)")
    parser.add_argument("--queries", type=Path, help="its judged queries")
    parser.add_argument("--tune", type=Path, metavar="DIR", help="also tune on the FAQ's phrasings, save here, compare")
    parser.add_argument("--collection", default="bench-faq-tuning", help="the FAQ collection tuned on (with --tune)")
    parser.add_argument("--dev-share", type=float, default=0.5, help="share of the queries used as dev (with --tune)")
    parser.add_argument(
        "finetune", nargs=argparse.REMAINDER, help="after --: options for `semsim finetune bi-encoder` (with --tune)"
    )
    args = parser.parse_args(argv)
    finetune = [a for a in args.finetune if a != "--"]
    if args.tune and (args.faqs or args.queries):
        if not (args.faqs and args.queries):
            parser.error("--faqs and --queries go together")
        print(
            json.dumps(
                tune_and_compare(args.faqs, args.queries, args.tune, args.collection, finetune, args.dev_share),
                indent=2,
            )
        )
        return 0
    if not args.csv.is_file():
        parser.error(f"{args.csv}: no such file (pass --csv PATH to BANKING77's train.csv)")

    from semsim_pg.cli.main import build_parser

    with tempfile.TemporaryDirectory(prefix="banking77-faq-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        faqs, queries, entries, count = build_files(
            args.csv, folder, args.per_intent, args.alternatives, args.query_start
        )
        sys.stderr.write(f"{entries} entries, {count} queries in {folder}\n")
        rerank = f" --rerank {args.rerank}" if args.rerank else (" --rerank" if args.rerank == "" else "")
        sys.stderr.write(f"same as: semsim eval faq --faqs {faqs} --queries {queries}{rerank}\n")
        argv_eval = ["-q", "eval", "faq", "--faqs", str(faqs), "--queries", str(queries)]
        argv_eval += ["--target-precision", str(args.target_precision)]
        if args.rerank is not None:
            argv_eval += ["--rerank", args.rerank] if args.rerank else ["--rerank"]
        if args.json:
            argv_eval.append("--json")
        if args.tune:
            figures = tune_and_compare(faqs, queries, args.tune, args.collection, finetune, args.dev_share)
            print(json.dumps({"entries": entries, **figures}, indent=2))
            return 0
        namespace = build_parser().parse_args(argv_eval)
        start = time.perf_counter()
        code = int(namespace.func(namespace))
        sys.stderr.write(f"total {time.perf_counter() - start:.1f} s\n")
    return code


if __name__ == "__main__":
    from _entry import run

    run(main)
