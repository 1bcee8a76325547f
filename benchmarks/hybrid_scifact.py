"""Semantic, lexical and hybrid search on SciFact (BEIR layout): nDCG@10, recall@100, latency.

    .venv/bin/python benchmarks/hybrid_scifact.py --data ../shared/data/scifact
    .venv/bin/python benchmarks/hybrid_scifact.py --data ../shared/data/scifact --rankers   # + ts_rank variants
    .venv/bin/python benchmarks/hybrid_scifact.py --no-exact --chunk 64,128,200,256         # + passages

Ingests the corpus once into a collection (a second run encodes nothing; point SEMSIM_DATA_DIR at
a lasting folder), then runs every train query through ``DocumentStore.search`` in each mode:
semantic with the HNSW index, semantic exact, lexical (BM25), hybrid (RRF). Queries are split in
two halves by a hash of their id: the fusion's constant, weights and candidate count are tuned on
the first half (in Python, from the two sides' rankings) and reported on the second, so the
tuned figure is not fitted to what it reports. ``--rankers`` also compares lexical rankings in
plain SQL on the same tsvectors: ts_rank and ts_rank_cd with normalisation options, and BM25
with real term frequencies (an unnest per document) against the product's one-count-per-word BM25.
``--chunk`` also ingests the corpus split into passages of each size (one collection per size,
``<collection>_c<size>``) and runs semantic and hybrid search there (each document once, by its
best passage); a chunk size is to be chosen on the dev half's nDCG@10, the test half confirms it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np


def split(query_ids: list[str]) -> tuple[list[str], list[str]]:
    dev = [q for q in query_ids if int(hashlib.sha1(q.encode()).hexdigest(), 16) % 2 == 0]
    dev_set = set(dev)
    return dev, [q for q in query_ids if q not in dev_set]


def rrf(dense: list[str], lexical: list[str], k: int, weights: tuple[float, float], n: int) -> list[str]:
    scores: dict[str, float] = {}
    for weight, ranking in zip(weights, (dense, lexical), strict=True):
        for rank, doc in enumerate(ranking[:n], 1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return sorted(scores, key=lambda doc: -scores[doc])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--qrels", default="qrels/train.tsv")
    parser.add_argument("-c", "--collection", default="scifact")
    parser.add_argument("--candidates", type=int, default=100, help="hits per side of the hybrid fusion")
    parser.add_argument("--rankers", action="store_true", help="also compare ts_rank / ts_rank_cd / BM25 in SQL")
    parser.add_argument("--limit", type=int, help="only the first N queries (a quick look)")
    parser.add_argument(
        "--chunk", default="", help="comma-separated passage sizes in tokens (e.g. 64,128,200,256): + passages"
    )
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    parser.add_argument(
        "--passages-only", action="store_true", help="only the --chunk collections (e.g. one process per size)"
    )
    parser.add_argument(
        "--no-exact", action="store_true", help="skip the exact scan (slow on a shared CPU; HNSW's cost known already)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from semsim_pg import DocumentStore
    from semsim_pg.evaluation.metrics import ndcg_at_k, recall_at_k
    from semsim_pg.evaluation.retrieval import read_corpus, read_qrels, read_queries

    store = DocumentStore()
    coll = store.create_collection(args.collection)
    # Always: a run stopped halfway is completed, documents stored already encode nothing.
    store.upsert(coll, read_corpus(args.data / "corpus.jsonl"), progress=True)
    queries = read_queries(args.data / "queries.jsonl")
    qrels = read_qrels(args.data / args.qrels)
    query_ids = sorted(qrels)[: args.limit]
    dev, test = split(query_ids)
    encoder = store.encoder_for(coll)
    for qid in query_ids:  # the query vectors cached (LRU), so latencies are the search alone
        encoder.encode_query(queries[qid])

    runs: dict[str, dict[str, list[str]]] = {}
    latency: dict[str, list[float]] = {}
    modes: list[tuple[str, dict[str, Any]]] = [
        ("semantic (HNSW)", {"mode": "semantic"}),
        ("semantic (exact)", {"mode": "semantic", "exact": True}),
        ("lexical (BM25)", {"mode": "lexical"}),
        ("hybrid (RRF k=60)", {"mode": "hybrid", "candidates": args.candidates}),
    ]
    if args.no_exact:
        modes = [(name, options) for name, options in modes if not options.get("exact")]
    if args.passages_only:
        modes = []
    searches = [(name, coll, options) for name, options in modes]
    for size in [int(x) for x in args.chunk.split(",") if x.strip()]:
        passages = store.create_collection(f"{args.collection}_c{size}", chunk=size)
        # Always: a run stopped halfway is completed, documents stored already encode nothing.
        started = time.perf_counter()
        result = store.upsert(passages, read_corpus(args.data / "corpus.jsonl"), progress=True)
        print(f"chunk {size}: {result.encoded} encoded in {time.perf_counter() - started:.0f} s", flush=True)
        searches += [
            (f"semantic + passages (chunk {size})", passages, {"mode": "semantic"}),
            (f"hybrid + passages (chunk {size})", passages, {"mode": "hybrid", "candidates": args.candidates}),
        ]
    for name, collection, options in searches:
        runs[name], latency[name] = {}, []
        for qid in query_ids:
            start = time.perf_counter()
            hits = store.search(collection, queries[qid], 100, **options)
            latency[name].append((time.perf_counter() - start) * 1000)
            runs[name][qid] = [h.external_id for h in hits]

    def scores(run: dict[str, list[str]], ids: list[str]) -> tuple[float, float]:
        return (
            float(np.mean([ndcg_at_k(run[q], qrels[q], 10) for q in ids])),
            float(np.mean([recall_at_k(run[q], qrels[q], 100) for q in ids])),
        )

    # Fusion settings tuned on the first half, reported on the second.
    if not args.passages_only:
        best: tuple[float, int, tuple[float, float], int] | None = None
        for k in (10, 30, 60, 100):
            for weights in ((1.0, 1.0), (1.0, 0.7), (0.7, 1.0), (1.0, 1.5), (1.5, 1.0)):
                for n in (50, 100):
                    run = {q: rrf(runs["semantic (HNSW)"][q], runs["lexical (BM25)"][q], k, weights, n) for q in dev}
                    value = scores(run, dev)[0]
                    if best is None or value > best[0]:
                        best = (value, k, weights, n)
        assert best is not None
        _, tuned_k, tuned_w, tuned_n = best
        tuned_name = f"hybrid tuned (k={tuned_k}, w={tuned_w[0]}/{tuned_w[1]}, N={tuned_n})"
        runs[tuned_name] = {
            q: rrf(runs["semantic (HNSW)"][q], runs["lexical (BM25)"][q], tuned_k, tuned_w, tuned_n) for q in query_ids
        }

    if args.rankers:
        compare_rankers(store, coll, queries, query_ids, runs, latency)

    print(
        f"SciFact train queries: {len(query_ids)} (dev half {len(dev)}, test half {len(test)}), {store.count(coll)} documents"
    )
    print(
        f"{'ranking':44s} {'nDCG@10':>8s} {'R@100':>7s} {'nDCG dev':>9s} {'nDCG test':>9s} {'p50 ms':>7s} {'p95 ms':>7s}"
    )
    table = []
    for name, run in runs.items():
        ndcg, recall = scores(run, query_ids)
        times = latency.get(name)
        p50 = f"{np.percentile(times, 50):7.1f}" if times else f"{'-':>7s}"
        p95 = f"{np.percentile(times, 95):7.1f}" if times else f"{'-':>7s}"
        print(
            f"{name:44s} {ndcg:8.4f} {recall:7.4f} {scores(run, dev)[0]:9.4f} {scores(run, test)[0]:9.4f} {p50} {p95}"
        )
        table.append(
            {
                "ranking": name,
                "ndcg@10": ndcg,
                "recall@100": recall,
                "ndcg@10_dev": scores(run, dev)[0],
                "ndcg@10_test": scores(run, test)[0],
                "p50_ms": float(np.percentile(times, 50)) if times else None,
                "p95_ms": float(np.percentile(times, 95)) if times else None,
            }
        )
    if args.json:
        args.json.write_text(json.dumps({"queries": len(query_ids), "rows": table}, indent=2))
    return 0


def compare_rankers(
    store: Any, coll: Any, queries: dict[str, str], query_ids: list[str], runs: dict[str, Any], latency: dict[str, Any]
) -> None:
    """Lexical rankings in plain SQL over the collection's tsvectors (any of the words matches)."""
    import sqlalchemy as sa

    match = (
        "FROM semsim.documents d, (SELECT semsim.any_words_query(c.text_search_config, :q) AS q"
        " FROM semsim.collections c WHERE c.id = :cid) x WHERE d.collection_id = :cid AND d.tsv @@ x.q"
    )
    variants = {f"ts_rank norm={n}": f"ts_rank(d.tsv, x.q, {n})" for n in (0, 1, 2, 8)}
    variants |= {f"ts_rank_cd norm={n}": f"ts_rank_cd(d.tsv, x.q, {n})" for n in (0, 1, 4)}
    statements = {
        name: f"SELECT d.external_id {match} ORDER BY {rank} DESC, d.id LIMIT 100" for name, rank in variants.items()
    }
    # BM25 with each word's real count in the document (its positions), from exact statistics
    # gathered once (ts_stat reads every document: fine for a benchmark, not for a query).
    statements["BM25 real tf (k1=1.2, b=0.75)"] = f"""
        WITH x AS (SELECT semsim.any_words_query(c.text_search_config, :q) AS q,
                          to_tsvector(c.text_search_config, :q) AS v FROM semsim.collections c WHERE c.id = :cid),
        qt AS (SELECT t.word AS lexeme, ln(1 + (s.n - t.ndoc + 0.5) / (t.ndoc + 0.5)) AS idf
               FROM x, bench_terms t, bench_stats s WHERE t.word = ANY(tsvector_to_array(x.v)))
        SELECT d.external_id {match.replace("semsim.any_words_query(c.text_search_config, :q) AS q FROM semsim.collections c WHERE c.id = :cid) x", "q FROM x) x")}
        ORDER BY (SELECT sum(qt.idf * array_length(u.positions, 1) * 2.2 / (array_length(u.positions, 1)
                  + 1.2 * (0.25 + 0.75 * length(d.tsv) / (SELECT avgdl FROM bench_stats))))
                  FROM unnest(d.tsv) u JOIN qt ON qt.lexeme = u.lexeme) DESC, d.id LIMIT 100"""
    with store.engine.connect() as conn:
        documents = f"SELECT tsv FROM semsim.documents WHERE collection_id = {int(coll.id)}"
        conn.execute(sa.text(f"CREATE TEMP TABLE bench_terms AS SELECT word, ndoc FROM ts_stat('{documents}')"))
        conn.execute(sa.text("CREATE INDEX ON bench_terms (word)"))
        conn.execute(
            sa.text(
                f"CREATE TEMP TABLE bench_stats AS SELECT count(*)::float8 AS n, avg(length(tsv))::float8 AS avgdl FROM ({documents}) s"
            )
        )
        conn.commit()
        for name, statement in statements.items():
            runs[name], latency[name] = {}, []
            for qid in query_ids:
                start = time.perf_counter()
                ids = conn.execute(sa.text(statement), {"q": queries[qid], "cid": coll.id}).scalars().all()
                latency[name].append((time.perf_counter() - start) * 1000)
                runs[name][qid] = list(ids)
            conn.rollback()
        conn.execute(sa.text("DROP TABLE bench_terms, bench_stats"))
        conn.commit()


if __name__ == "__main__":
    from _entry import run

    run(main)
