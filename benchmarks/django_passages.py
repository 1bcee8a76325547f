"""Django passages on SciFact: what ``semantic_chunking`` buys in quality and costs in latency.

    SEMSIM_DATA_DIR=/tmp/bench-passages .venv/bin/python benchmarks/django_passages.py \
        --data /work/shared/data/scifact [--docs 1000] [--queries 300] [--chunk 256] [--rows 20000] [--json]

Loads SciFact abstracts twice into the test app: ``Article`` (one vector per abstract, what the
model reads of it: its first 256 tokens) and ``Report`` (split into passages of ``--chunk``
tokens), encodes both with ``semsim_reindex``, then runs train queries:

- nDCG@10 / recall@100 of ``semantic_search`` and ``hybrid_search`` on each model (one row per
  abstract either way: a split one is ranked by its best passage);
- p50 / p95 of ``semantic_search(k=10)`` and ``hybrid_search(k=10)`` with the query vector cached,
  at the loaded size and then over ``--rows`` rows per model (the loaded abstracts' rows and
  vectors copied, passages included, so the index holds as many vectors per row as it would).

``--docs`` keeps every abstract relevant to the chosen queries and fills up with others, so the
search stays one over distractors while encoding fits a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from semsim_pg.backends import cpu_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from django_bench import scifact_sample, setup_django  # benchmarks/ is not a package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--docs", type=int, default=1000, help="abstracts loaded (all relevant ones + others)")
    parser.add_argument("--queries", type=int, default=300, help="train queries used")
    parser.add_argument("--chunk", type=int, default=256, help="Report.semantic_chunking (tokens per passage)")
    parser.add_argument("--rows", type=int, default=20000, help="rows per model for the second latency figures")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per query")
    parser.add_argument("--latency-queries", type=int, default=30, help="queries timed per configuration")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from django_semsim.conf import reset_config
    from django_semsim.models import companion_of
    from semsim_pg.evaluation.metrics import ndcg_at_k, recall_at_k
    from tests.djangoapp.models import Article, Report

    settings.SEMSIM = {**settings.SEMSIM, "SYNC": "worker"}
    reset_config()
    Report.semantic_chunking = args.chunk  # the test app splits at 32 tokens for its tests

    queries, qrels, chosen, keep, _ = scifact_sample(args.data, args.queries, args.docs)
    doc_of: dict[tuple[str, Any], str] = {}
    encode_s: dict[str, float] = {}
    for model in (Article, Report):
        objs = model.objects.bulk_create(
            [model(title=(r.get("title") or "")[:200], body=r["text"]) for r in keep], batch_size=1000
        )
        doc_of.update({(model.__name__, o.pk): str(r["_id"]) for o, r in zip(objs, keep, strict=True)})
        started = time.perf_counter()
        call_command("semsim_reindex", model._meta.label, "--stale", verbosity=0)
        encode_s[model.__name__] = time.perf_counter() - started
    vectors = {m.__name__: companion_of(m).objects.count() for m in (Article, Report)}
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # VACUUM: flush the GIN pending lists the bulk loads left

    def run(model: Any, mode: str) -> dict[str, list[str]]:
        search = getattr(model.objects, f"{mode}_search")
        return {
            q: [doc_of[(model.__name__, pk)] for pk in search(queries[q], k=100).values_list("pk", flat=True)]
            for q in chosen
        }

    quality = {}
    for label, model in (("whole text", Article), (f"passages, chunk {args.chunk}", Report)):
        for mode in ("semantic", "hybrid"):
            result = run(model, mode)
            quality[f"{mode}, {label}"] = {
                "ndcg@10": statistics.fmean(ndcg_at_k(result[q], qrels[q], 10) for q in chosen),
                "recall@100": statistics.fmean(recall_at_k(result[q], qrels[q], 100) for q in chosen),
            }
    if not args.json:
        print(
            f"SciFact train: {len(chosen)} queries over {len(keep)} abstracts; vectors: {vectors} "
            f"(encoded in {encode_s['Article']:.0f} s / {encode_s['Report']:.0f} s)"
        )
        print(f"{'search (Django, k=100)':40} {'nDCG@10':>8} {'recall@100':>10}")
        for name, figures in quality.items():
            print(f"{name:40} {figures['ndcg@10']:8.4f} {figures['recall@100']:10.4f}", flush=True)

    def latency(model: Any, mode: str) -> dict[str, float]:
        search = getattr(model.objects, f"{mode}_search")
        times = []
        for q in chosen[: args.latency_queries]:
            for _ in range(args.repeat):
                start = time.perf_counter()
                list(search(queries[q], k=10).values_list("pk", "similarity"))
                times.append((time.perf_counter() - start) * 1000)
        times.sort()
        return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}

    def timings(rows: int) -> dict[str, dict[str, float]]:
        return {
            f"{mode}, {name}, {rows} rows": latency(model, mode)
            for name, model in (("whole text", Article), ("passages", Report))
            for mode in ("semantic", "hybrid")
        }

    timing = timings(len(keep))  # the query vectors are cached by now (the quality runs encoded them)
    if args.rows > len(keep):
        for model in (Article, Report):
            _copy_rows(model, args.rows - len(keep))
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # VACUUM: flush the GIN pending lists the bulk loads left
        timing.update(timings(args.rows))
    machine = {"cpu": cpu_info().model, "load_average": os.getloadavg()[0], "python": platform.python_version()}
    if args.json:
        print(json.dumps({"quality": quality, "latency": timing, "vectors": vectors, "machine": machine}, indent=2))
        return 0
    print(f"\n{'k=10, query vector cached':44} {'p50 ms':>8} {'p95 ms':>8}")
    for name, figures in timing.items():
        print(f"{name:44} {figures['p50_ms']:8.1f} {figures['p95_ms']:8.1f}")
    print(f"\n{machine['cpu']}, load average {machine['load_average']:.1f}")
    return 0


def _copy_rows(model: Any, extra: int) -> None:
    """``extra`` more rows of ``model``: the loaded rows' texts and vectors (every passage) copied in
    SQL, so that the companion's HNSW index holds as many vectors per row as encoding would give."""
    from django.db import connection

    from django_semsim.models import companion_of

    table = model._meta.db_table
    companion = companion_of(model)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        (loaded,) = cursor.fetchone()
        cursor.execute(
            f"CREATE TEMP TABLE copies AS SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id, s.id AS of "
            f"FROM generate_series(0, %s - 1) AS g(i) "
            f"JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM {table}) AS s ON s.n = g.i %% %s",
            [extra, loaded],
        )
        cursor.execute(
            f"INSERT INTO {table} (id, title, body, published{', views' if model.__name__ == 'Article' else ''}) "
            f"SELECT c.id, t.title, t.body, t.published{', t.views' if model.__name__ == 'Article' else ''} "
            f"FROM copies c JOIN {table} t ON t.id = c.of"
        )
        cursor.execute(
            f"INSERT INTO {companion} (source_id, model_name, passage, passage_start, passage_end, text_hash, "
            "embedding, created_at, updated_at) SELECT c.id, e.model_name, e.passage, e.passage_start, "
            f"e.passage_end, e.text_hash, e.embedding, now(), now() FROM copies c JOIN {companion} e ON e.source_id = c.of"
        )
        cursor.execute("DROP TABLE copies")


if __name__ == "__main__":
    from _entry import run

    run(main)
