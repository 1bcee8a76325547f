"""Search latency by mode (semantic, lexical, hybrid) as a collection grows: p50/p95 per size.

    .venv/bin/python benchmarks/hybrid_latency.py --file ../shared/data/corpus/flickr30k-captions.txt -n 20000,100000

Documents are caption lines; queries are further lines, each searched with k=10 in every mode,
the query vector cached (encoded once before timing), so the figures are the SQL statement
alone. Encoding 100,000 texts on a small CPU takes long and says nothing about search latency,
so only the first ``--encode`` texts are encoded and the rest reuse those vectors with a little
noise (re-normalised): the HNSW graph sees a realistic spread of vectors, the lexical side the
real texts. Quality is measured elsewhere (benchmarks/hybrid_scifact.py).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=Path("../shared/data/corpus/flickr30k-captions.txt"))
    parser.add_argument("-n", default="20000,100000", help="collection sizes, comma-separated")
    parser.add_argument("--encode", type=int, default=20000, help="texts really encoded (the rest reuse vectors)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the queries (the first warms caches)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark collections")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from semsim_pg import DocumentStore
    from semsim_pg.errors import CollectionNotFound

    sizes = [int(x) for x in args.n.split(",")]
    lines = [line.strip() for line in args.file.open(encoding="utf-8") if line.strip()]
    largest = max(sizes)
    if len(lines) < largest + args.queries:
        raise SystemExit(f"{args.file} has {len(lines)} lines; need {largest + args.queries}")
    texts, queries = lines[:largest], lines[largest : largest + args.queries]

    store = DocumentStore()
    rng = np.random.default_rng(0)
    encoded = None
    rows = []
    for n in sizes:
        name = f"bench-hybrid-{n}"
        try:
            store.drop_collection(name)
        except CollectionNotFound:
            pass
        coll = store.create_collection(name)
        encoder = store.encoder_for(coll)
        if encoded is None:
            start = time.perf_counter()
            encoded = encoder.encode(texts[: min(args.encode, largest)], show_progress_bar=True)
            print(f"encoded {len(encoded)} texts in {time.perf_counter() - start:.0f} s")
        reuse = encoded[np.arange(n) % len(encoded)]
        noisy = reuse + rng.normal(0, 0.02, reuse.shape).astype(np.float32) * (np.arange(n) >= len(encoded))[:, None]
        vectors = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        start = time.perf_counter()
        store.upsert(coll, [(str(i), t) for i, t in enumerate(texts[:n])], vectors=vectors, defer_index=True)
        load_s = time.perf_counter() - start
        for q in queries:
            encoder.encode_query(q)  # cached from here on
        for mode in ("semantic", "lexical", "hybrid"):
            times: list[float] = []
            for round_ in range(args.rounds):
                for q in queries:
                    t0 = time.perf_counter()
                    try:
                        store.search(coll, q, 10, mode=mode)
                    except Exception as exc:  # a query of stop words only in lexical mode
                        if "no searchable word" not in str(exc):
                            raise
                        continue
                    if round_ > 0:
                        times.append((time.perf_counter() - t0) * 1000)
            rows.append((n, mode, np.percentile(times, 50), np.percentile(times, 95), load_s))
        if not args.keep:
            store.drop_collection(name)

    print(f"{'documents':>10} {'mode':>9} {'p50 ms':>8} {'p95 ms':>8} {'load s':>7}")
    for n, mode, p50, p95, load_s in rows:
        print(f"{n:>10} {mode:>9} {p50:8.2f} {p95:8.2f} {load_s:7.0f}")
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
