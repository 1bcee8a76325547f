"""Django hybrid_search() on SciFact: quality of each side and of the fusion, and what a GIN index buys.

    SEMSIM_DATA_DIR=/tmp/bench-data .venv/bin/python benchmarks/django_hybrid.py --data ../shared/data/scifact \
        [--docs 2000] [--queries 300] [--json]

Loads SciFact abstracts into the test app's ``Article`` (title, body) in a database of its own
(``semsim_bench``, recreated), encodes them with ``semsim_reindex``, then runs train queries:

- nDCG@10 / recall@100 of ``semantic_search``, ``hybrid_search`` (RRF), its lexical side alone
  (``weights=(0, 1)``: BM25) and Django's stock ``SearchRank`` (``ts_rank``, normalisation 1, over
  an any-word ``SearchQuery``) on the same tsvectors, so BM25 and ts_rank are compared inside Django;
- hybrid p50 / p95 over ``--rows`` rows with the words computed per row (no index, then
  ``GinIndex(SearchVector("title", "body", config="english"))``) and stored (``Paper``: a generated
  tsvector column with a GIN index).

``--docs`` keeps every abstract relevant to the chosen queries and fills up with others, so the
collection stays a search over distractors while encoding fits a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from django_bench import scifact_sample, setup_django  # benchmarks/ is not a package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=2000, help="abstracts loaded (all relevant ones + others)")
    parser.add_argument("--queries", type=int, default=300, help="train queries used")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per query for the latency figures")
    parser.add_argument(
        "--rows",
        type=int,
        default=20000,
        help="rows for the latency figures (the other abstracts, repeated, not encoded)",
    )
    parser.add_argument("--latency-queries", type=int, default=30, help="queries timed per configuration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings
    from django.contrib.postgres.indexes import GinIndex
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
    from django.core.management import call_command
    from django.db import connection

    from django_semsim.models import companion_of
    from semsim_pg.evaluation.metrics import ndcg_at_k, recall_at_k
    from tests.djangoapp.models import Article, Paper

    settings.SEMSIM = {**settings.SEMSIM, "SYNC": "worker"}
    from django_semsim.conf import reset_config

    reset_config()

    queries, qrels, chosen, keep, records = scifact_sample(args.data, args.queries, args.docs)
    objs = Article.objects.bulk_create(
        [Article(title=(r.get("title") or "")[:200], body=r["text"]) for r in keep], batch_size=1000
    )
    doc_of = {a.pk: str(r["_id"]) for a, r in zip(objs, keep, strict=True)}
    started = time.perf_counter()
    call_command("semsim_reindex", "--stale", verbosity=1)
    encode_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    def run(search: Any) -> dict[str, list[str]]:
        return {q: [doc_of[pk] for pk in search(queries[q])] for q in chosen}

    def any_word(text: str) -> SearchQuery:
        # Django's stock ranking over the same words as ours: an OR of each lexeme (to_tsquery syntax)
        with connection.cursor() as cursor:
            cursor.execute("SELECT array_to_string(tsvector_to_array(to_tsvector('english', %s)), ' | ')", [text])
            words = cursor.fetchone()[0]
        return SearchQuery(words or "''", search_type="raw", config="english")

    vector = SearchVector("title", "body", config="english")
    runs = {
        "semantic (HNSW)": run(lambda t: Article.objects.semantic_search(t, k=100).values_list("pk", flat=True)),
        "lexical: BM25 (hybrid_search weights=(0, 1))": run(
            lambda t: (
                Article.objects.hybrid_search(t, k=100, weights=(0.0, 1.0))
                .filter(lexical_rank__isnull=False)
                .values_list("pk", flat=True)
            )
        ),
        "lexical: SearchRank (ts_rank, normalisation 1)": run(
            lambda t: (
                Article.objects.annotate(v=vector, rank=SearchRank(vector, any_word(t), normalization=1))
                .filter(v=any_word(t))
                .order_by("-rank", "pk")
                .values_list("pk", flat=True)[:100]
            )
        ),
        "hybrid (RRF 60, 100 per side)": run(
            lambda t: Article.objects.hybrid_search(t, k=100).values_list("pk", flat=True)
        ),
    }
    quality = {
        name: {
            "ndcg@10": statistics.fmean(ndcg_at_k(result[q], qrels[q], 10) for q in chosen),
            "recall@100": statistics.fmean(recall_at_k(result[q], qrels[q], 100) for q in chosen),
        }
        for name, result in runs.items()
    }

    if not args.json:
        print(f"SciFact train: {len(chosen)} queries over {len(objs)} abstracts (encoded in {encode_s:.0f} s)")
        print(f"{'search':52} {'nDCG@10':>8} {'recall@100':>10}")
        for name, figures in quality.items():
            print(f"{name:52} {figures['ndcg@10']:8.3f} {figures['recall@100']:10.3f}", flush=True)

    def latency(model: Any, queries_timed: int) -> dict[str, float]:
        times = []
        for q in chosen[:queries_timed]:
            for _ in range(args.repeat):
                start = time.perf_counter()
                list(model.objects.hybrid_search(queries[q], k=10).values_list("pk", flat=True))
                times.append((time.perf_counter() - start) * 1000)
        times.sort()
        return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}

    # Latency on a larger table: the other abstracts, repeated, without vectors (the lexical side
    # reads the words of every matching row; the dense side is the HNSW index either way). Paper
    # holds the same rows with its words stored (a generated tsvector column, GIN-indexed) and
    # the same vectors, copied.
    filler = [r for r in records if r not in keep] or records
    extra = max(0, args.rows - len(objs))
    texts = [(a.title, a.body or "") for a in objs] + [
        ((filler[i % len(filler)].get("title") or "")[:200], filler[i % len(filler)]["text"]) for i in range(extra)
    ]
    Article.objects.bulk_create([Article(title=t, body=b) for t, b in texts[len(objs) :]], batch_size=2000)
    papers = Paper.objects.bulk_create([Paper(title=t, abstract=b) for t, b in texts], batch_size=2000)
    vectors = {v.source_id: v for v in companion_of(Article).objects.filter(source__in=[a.pk for a in objs])}
    companion_of(Paper).objects.bulk_create(
        [
            companion_of(Paper)(source=p, model_id=v.model_id, text_hash=v.text_hash, embedding=v.embedding)
            for p, a in zip(papers, objs, strict=False)
            if (v := vectors.get(a.pk)) is not None
        ],
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    # the query vectors are cached by now (the runs above encoded every query): this times SQL
    # without an index every word's count reads every row: a few queries are enough to see it
    (index,) = [i for i in Article._meta.indexes if isinstance(i, GinIndex)]  # the test app declares the recipe
    with connection.schema_editor() as editor:
        editor.remove_index(Article, index)
    timing = {"words computed, no GIN index": latency(Article, min(5, args.latency_queries))}
    with connection.schema_editor() as editor:
        editor.add_index(Article, index)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE djangoapp_article")
    timing["words computed, GinIndex(SearchVector(...))"] = latency(Article, args.latency_queries)
    timing["words stored (GeneratedField), GIN index"] = latency(Paper, args.latency_queries)
    with connection.cursor() as cursor:
        sql, params = Article.objects.hybrid_search(queries[chosen[0]], k=10).query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    result = {
        "docs": len(objs),
        "rows": len(objs) + extra,
        "queries": len(chosen),
        "encode_seconds": encode_s,
        "quality": quality,
        "hybrid_latency": timing,
        "gin_used": index.name in plan,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    heading = f"hybrid_search(k=10) over {result['rows']} rows, query vector cached"
    print(f"\n{heading:52} {'p50 ms':>8} {'p95 ms':>10}")
    for name, figures in timing.items():
        print(f"{name:52} {figures['p50_ms']:8.1f} {figures['p95_ms']:10.1f}")
    print(f"\nthe plan uses the GIN index: {result['gin_used']}")
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
