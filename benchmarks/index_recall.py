"""Recall@10 of the HNSW index against exact search, and its search latency, per ef_search.

Builds one collection per data set from ``../shared/data`` (the first N texts of each), then
measures, on the same collection and in the same run:

- recall@k of the index against an exact scan on stored vectors (``semsim index check``'s
  measure: each sampled vector searched with its own document left out);
- search latency p50/p95 with a given vector (no encoding), the ef_search values interleaved
  query by query so that a busy machine slows them alike.

    SEMSIM_DATA_DIR=/tmp/bench .venv/bin/python benchmarks/index_recall.py --ef-search 40,100

Runs on the configured database (SEMSIM_DATABASE_URL, or the embedded server in SEMSIM_DATA_DIR).
This is the script behind the README's "Index defaults" table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

DATA = Path("../shared/data")  # relative to the project root, like the other benchmarks (--data)


def scifact(data: Path, n: int) -> Iterator[tuple[str, str]]:
    with (data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for _, line in zip(range(n), f, strict=False):
            row = json.loads(line)
            yield str(row["_id"]), f"{row['title']}. {row['text']}".strip()


def banking77(data: Path, n: int) -> Iterator[tuple[str, str]]:
    with (data / "banking77" / "train.csv").open(encoding="utf-8", newline="") as f:
        for i, row in zip(range(n), csv.DictReader(f), strict=False):
            yield str(i), row["text"]


def tatoeba(data: Path, n: int) -> Iterator[tuple[str, str]]:
    with (data / "corpus" / "tatoeba-en-sentences.txt").open(encoding="utf-8") as f:
        lines = (line.strip() for line in f)
        for i, text in zip(range(n), (t for t in lines if t), strict=False):
            yield str(i), text


SETS = {"scifact": scifact, "banking77": banking77, "tatoeba": tatoeba}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--sets", default="banking77:10003,tatoeba:10000,scifact:5183", help="name:N,...")
    parser.add_argument("--ef-search", default="40,100", help="ef_search values to compare")
    parser.add_argument("--sample", type=int, default=300, help="stored vectors searched for recall")
    parser.add_argument("--queries", type=int, default=200, help="searches timed per ef_search")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from semsim_pg import DocumentStore, queries
    from semsim_pg.errors import CollectionNotFound
    from semsim_pg.sql import to_array

    store = DocumentStore()
    ef_values = [int(x) for x in args.ef_search.split(",")]
    results = []
    for spec in args.sets.split(","):
        name, n = spec.split(":")
        cname = f"bench-recall-{name}"
        try:
            coll = store.get_collection(cname)
        except CollectionNotFound:
            coll = store.create_collection(cname)
        if store.count(coll) < int(n):
            started = time.perf_counter()
            store.upsert(coll, SETS[name](args.data, int(n)), progress=True)
            print(f"{name}: ingested {store.count(coll)} in {time.perf_counter() - started:.0f} s", flush=True)
        coll = store.get_collection(cname)
        with store.engine.connect() as conn:
            rows = conn.execute(queries.sample_embeddings(coll.id, coll.model_name, args.queries)).all()
        vectors = [to_array(r[1]) for r in rows]
        recall = {ef: store.check_index(coll, sample=args.sample, k=args.k, ef_search=ef).recall for ef in ef_values}
        times: dict[int, list[float]] = {ef: [] for ef in ef_values}
        for v in vectors:
            for ef in ef_values:
                t = time.perf_counter()
                store.search(coll, v, args.k, ef_search=ef)
                times[ef].append((time.perf_counter() - t) * 1000)
        for ef in ef_values:
            ts = sorted(times[ef])
            row = {
                "set": name,
                "docs": store.count(coll),
                "ef_search": ef,
                "recall": recall[ef],
                "p50_ms": statistics.median(ts),
                "p95_ms": ts[int(0.95 * (len(ts) - 1))],
            }
            results.append(row)
            print(
                f"{name:10} {row['docs']:6} ef_search={ef:4}  recall@{args.k} {row['recall']:.3f}  "
                f"p50 {row['p50_ms']:.2f} ms  p95 {row['p95_ms']:.2f} ms",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
