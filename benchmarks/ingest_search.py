"""Ingest and search benchmark for the core DocumentStore.

Ingests the first N lines of a text file, once per encoder backend, and prints per backend the
encoder-only rate (the same texts, the same batches, the model alone), the end-to-end ingest rate
(text in, hashed, encoded, COPY'd, upserted, indexed) and their ratio; then, on the first
backend's collection: the database write rate (vectors given), search latency p50/p95 (query
embedding cold, cached, and a vector passed directly) and recall@10 of the HNSW index against an
exact scan.

    .venv/bin/python benchmarks/ingest_search.py --file ../shared/data/corpus/tatoeba-en-sentences.txt \\
        -n 20000 --backends auto,torch

Runs on the configured database (SEMSIM_DATABASE_URL, or the embedded server in SEMSIM_DATA_DIR).
Machines here are shared: compare rows of one run and quote ratios (PERFORMANCE.md); the CPU
model and the load average are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def encode_only(encoder, texts: list[str], batch_size: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Texts per second of the model alone, in the batches the ingest hands it, and the cores it
    kept busy meanwhile (this process's CPU time over wall time: near the core count means no core
    is left for PostgreSQL's share of an ingest, which then adds to the wall time)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch_size):
        encoder.encode(texts[i : i + batch_size], show_progress_bar=False)
    wall = time.perf_counter() - start
    return len(texts) / wall, (time.process_time() - cpu_start) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=Path("../shared/data/corpus/tatoeba-en-sentences.txt"))
    parser.add_argument("-n", type=int, default=20000, help="documents to ingest")
    parser.add_argument("--queries", type=int, default=200, help="queries (lines after the ingested ones)")
    parser.add_argument("--backends", default="auto,torch", help="encoder backends to ingest with, comma-separated")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per ingest batch")
    parser.add_argument(
        "--defer-index",
        choices=("default", "yes", "no"),
        default="default",
        help="drop the index for the load and build it at the end (default: semsim's choice)",
    )
    parser.add_argument(
        "--encode-sample",
        type=int,
        default=5000,
        help="texts (spread over the N) for the encoder-only rate, measured before and after the ingest; 0: all N",
    )
    parser.add_argument("--ingest-only", action="store_true", help="skip the write-only and search measures")
    parser.add_argument("--ef-search", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark collections")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--plot", type=Path, help="also draw the search latency distributions to this PNG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from semsim_pg import Document, DocumentStore, Encoder
    from semsim_pg.backends import cpu_info
    from semsim_pg.errors import CollectionNotFound

    lines = [line.strip() for line in args.file.open(encoding="utf-8") if line.strip()]
    if len(lines) < args.n + args.queries:
        sys.exit(f"{args.file} has {len(lines)} lines; need n + queries = {args.n + args.queries}")
    texts, queries = lines[: args.n], lines[args.n : args.n + args.queries]
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    defer = {"default": None, "yes": True, "no": False}[args.defer_index]

    store = DocumentStore()
    names = [f"bench-ingest-{b}" for b in backends] + ["bench-write"]
    for name in names:
        try:
            store.drop_collection(name)
        except CollectionNotFound:
            pass
    figures: dict[str, float] = {}
    ingest_rows: list[tuple[str, float, float, float, float]] = []
    load_before = os.getloadavg()[0]

    # 1. per backend: the model alone, then end to end (text in, hashed, encoded, COPY'd, indexed)
    for backend, name in zip(backends, names, strict=False):
        encoder = Encoder(backend=backend).load()
        encoder.encode(["warm up"] * 8)
        label = backend if backend == encoder.backend_name else f"{backend} ({encoder.backend_name})"
        sample = texts[:: max(1, len(texts) // args.encode_sample)] if args.encode_sample else texts
        encode_before, cores_before = encode_only(encoder, sample, args.batch_size)
        backend_store = DocumentStore(encoder=encoder)
        coll = backend_store.create_collection(name)
        start = time.perf_counter()
        result = backend_store.upsert(
            coll, docs, batch_size=args.batch_size, progress=True, total=len(docs), defer_index=defer
        )
        ingest_rate = len(docs) / (time.perf_counter() - start)
        assert result.inserted == len(docs) and result.encoded == len(docs)
        # the model alone again: on a shared machine the load drifts; the ratio uses the mean
        encode_after, cores_after = encode_only(encoder, sample, args.batch_size)
        encode_rate = (encode_before + encode_after) / 2
        encoder_cores = (cores_before + cores_after) / 2
        ingest_rows.append((label, encode_before, encode_after, ingest_rate, encoder_cores))
        figures[f"{backend}_encoder_cores"] = encoder_cores
        figures[f"{backend}_encode_per_s"] = encode_rate
        figures[f"{backend}_ingest_per_s"] = ingest_rate
        figures[f"{backend}_ingest_over_encode"] = ingest_rate / encode_rate
    load_after = os.getloadavg()[0]

    cpu = cpu_info()
    print(f"\nsemsim ingest benchmark: {args.n} documents from {args.file.name}, batches of {args.batch_size}")
    print(
        f"CPU: {cpu.model}, {os.cpu_count()} cores; SEMSIM_THREADS={os.environ.get('SEMSIM_THREADS', 'unset')}; "
        f"defer index: {args.defer_index}; load average {load_before:.1f} before, {load_after:.1f} after\n"
    )
    print("encoder only: the model alone on the same texts in the same batches, before / after the ingest;")
    print("model's cores: CPU time over wall time while it encodes (what is left for PostgreSQL's share)")
    print(
        f"| {'backend':<22} | {'encoder only (docs/s)':>21} | {'model cores':>11} "
        f"| {'end to end (docs/s)':>19} | {'ratio':>5} |"
    )
    print(f"|{'-' * 24}|{'-' * 23}|{'-' * 13}|{'-' * 21}|{'-' * 7}|")
    for label, before, after, ingest_rate, cores in ingest_rows:
        ratio = ingest_rate / ((before + after) / 2)
        print(
            f"| {label:<22} | {f'{before:.0f} / {after:.0f}':>21} | {cores:>11.2f} "
            f"| {ingest_rate:>19.0f} | {ratio:>5.2f} |"
        )
    if args.ingest_only:
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        if not args.keep:
            for name in names[: len(backends)]:
                store.drop_collection(name)
        return 0
    coll = store.get_collection(names[0])
    encoder = store.encoder_for(coll)

    # 3. the database alone: the same vectors into a second collection (COPY + upsert + HNSW insert)
    with store.engine.connect() as conn:
        import sqlalchemy as sa

        rows = conn.execute(
            sa.text(
                "SELECT d.external_id, e.embedding::text FROM semsim.documents d"
                " JOIN semsim.embeddings e ON e.document_id = d.id WHERE d.collection_id = :c ORDER BY d.id"
            ),
            {"c": coll.id},
        ).all()
    vectors = np.array([json.loads(v) for _, v in rows], dtype=np.float32)
    by_id = {d.external_id: d for d in docs}
    ordered = [by_id[i] for i, _ in rows]
    store.create_collection(names[-1])
    start = time.perf_counter()
    store.upsert(names[-1], ordered, vectors=vectors, batch_size=args.batch_size, progress=False, defer_index=defer)
    figures["db_write_per_s"] = len(ordered) / (time.perf_counter() - start)

    # 4. search latency
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE semsim.documents; ANALYZE semsim.embeddings"))
    encoder.clear_cache()

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        out = []
        for q in queries:
            t = time.perf_counter()
            fn(q)
            out.append((time.perf_counter() - t) * 1000)
        return out

    cold = timed(lambda q: store.search(coll, q, k=10, ef_search=args.ef_search))
    warm = timed(lambda q: store.search(coll, q, k=10, ef_search=args.ef_search))
    qvecs = {q: encoder.encode_query(q) for q in queries}
    sql_only = timed(lambda q: store.search(coll, qvecs[q], k=10, ef_search=args.ef_search))
    filtered = timed(lambda q: store.search(coll, qvecs[q], k=10, ef_search=args.ef_search, filter={"x": 1}))

    # 5. recall@10 of the index against an exact scan
    recalls = []
    for q in queries:
        approx = {h.external_id for h in store.search(coll, qvecs[q], k=10, ef_search=args.ef_search)}
        exact = {h.external_id for h in store.search(coll, qvecs[q], k=10, exact=True)}
        recalls.append(len(approx & exact) / 10)
    exact_ms = timed(lambda q: store.search(coll, qvecs[q], k=10, exact=True))

    figures.update(
        {
            "search_cold_p50_ms": percentile(cold, 50),
            "search_cold_p95_ms": percentile(cold, 95),
            "search_cached_p50_ms": percentile(warm, 50),
            "search_cached_p95_ms": percentile(warm, 95),
            "search_vector_p50_ms": percentile(sql_only, 50),
            "search_vector_p95_ms": percentile(sql_only, 95),
            "search_filtered_none_p50_ms": percentile(filtered, 50),
            "exact_scan_p50_ms": percentile(exact_ms, 50),
            "recall_at_10": statistics.mean(recalls),
        }
    )

    print(
        f"\nsearch: {len(queries)} queries on {names[0]}, model {encoder.name} ({encoder.backend_name}), ef_search {args.ef_search}\n"
    )
    print(f"| {'measure':<52} | {'value':>10} |")
    print(f"|{'-' * 54}|{'-' * 12}|")
    rows_out = [
        ("database write rate (rows/s, COPY + upsert + HNSW)", figures["db_write_per_s"], "{:.0f}"),
        ("search p50, query not cached (ms)", figures["search_cold_p50_ms"], "{:.2f}"),
        ("search p95, query not cached (ms)", figures["search_cold_p95_ms"], "{:.2f}"),
        ("search p50, query embedding cached (ms)", figures["search_cached_p50_ms"], "{:.2f}"),
        ("search p95, query embedding cached (ms)", figures["search_cached_p95_ms"], "{:.2f}"),
        ("search p50, vector given (ms)", figures["search_vector_p50_ms"], "{:.2f}"),
        ("search p95, vector given (ms)", figures["search_vector_p95_ms"], "{:.2f}"),
        ("search p50, filter matching nothing (ms)", figures["search_filtered_none_p50_ms"], "{:.2f}"),
        ("exact scan p50, no index (ms)", figures["exact_scan_p50_ms"], "{:.2f}"),
        ("recall@10, HNSW vs exact", figures["recall_at_10"], "{:.3f}"),
    ]
    for label, value, fmt in rows_out:
        print(f"| {label:<52} | {fmt.format(value):>10} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        series = {"not cached": cold, "cached": warm, "vector given": sql_only, "exact scan": exact_ms}
        ax.boxplot(list(series.values()), showfliers=False)
        ax.set_xticks(range(1, len(series) + 1), list(series))
        ax.set_yscale("log")
        ax.set_ylabel("ms per search (log scale)")
        ax.set_title(f"semsim search latency, {args.n} documents, k=10, ef_search {args.ef_search}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    if not args.keep:
        for name in names:
            store.drop_collection(name)
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
