"""django_semsim figures: save() overhead, non-text updates vs index size, ORM vs raw search, draining.

    SEMSIM_DATA_DIR=/tmp/bench-data .venv/bin/python benchmarks/django_bench.py [--rows 20000] [--drain 10000]

Runs on the embedded PostgreSQL (or SEMSIM_DATABASE_URL) in a database of its own, ``semsim_bench``,
recreated on each run, with the test app's models (tests/djangoapp). Vectors for the index-size and
search figures are random and written in SQL (the encoder is not what they measure); the save()
and drain figures use the real model. Timings on a shared 2-core machine vary from run to run:
each figure is the median of many repetitions, printed next to the baseline it is compared with.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH_DB = "semsim_bench"


def setup_django() -> None:
    import django
    from django.conf import settings

    from django_semsim.database import database_config

    base = database_config()
    _recreate_database(base)
    settings.configure(
        SECRET_KEY="bench",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.postgres", "django_semsim", "tests.djangoapp"],
        DATABASES={"default": {**base, "NAME": BENCH_DB}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        SEMSIM={"SYNC": "immediate", "BATCH_SIZE": 64},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _recreate_database(base: dict[str, Any]) -> None:
    import psycopg

    kwargs = {
        "dbname": base["NAME"],
        "user": base["USER"],
        "password": base["PASSWORD"] or None,
        "host": base["HOST"] or None,
        "port": base["PORT"] or None,
    }
    with psycopg.connect(**{k: v for k, v in kwargs.items() if v}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.3f} ms"


def sql(statement: str, params: list[Any] | None = None) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else cursor.rowcount


def reset() -> None:
    sql("TRUNCATE djangoapp_article, djangoapp_article_embedding RESTART IDENTITY CASCADE")


def insert_random(n: int, offset: int = 0) -> None:
    from django_semsim.conf import get_config

    cfg = get_config()
    sql(
        "INSERT INTO django_semsim_embeddingmodel (name, dimension, created_at) VALUES (%s, %s, now()) "
        "ON CONFLICT DO NOTHING",
        [cfg.model_name, cfg.dimensions],
    )
    sql(
        "WITH src AS (INSERT INTO djangoapp_article (title, body, published, views) "
        "SELECT 'synthetic ' || g, 'body', g %% 2 = 0, 0 FROM generate_series(%s, %s) g RETURNING id) "
        "INSERT INTO djangoapp_article_embedding (source_id, model_name, text_hash, embedding, created_at, updated_at) "
        "SELECT src.id, %s, NULL, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE src.id > 0)"
        "::vector(384), now(), now() FROM src",
        [offset + 1, offset + n, cfg.model_name],
    )


# 1. save() ------------------------------------------------------------------------------------------------
def bench_save(repeat: int) -> None:
    from django.db import transaction

    from django_semsim import sync
    from tests.djangoapp.models import Article

    reset()
    encoder = sync.get_model_encoder()
    encoder.encode(["warm up the model"])
    rows = [Article.objects.create(title=f"Article {i}", body="about saving") for i in range(repeat)]
    print("\n## save() overhead per row (immediate mode, real model)")

    Article.semantic_auto_update = False
    baseline = timed(lambda: [r.save() for r in rows], 1)[0] / len(rows)
    Article.semantic_auto_update = True
    unchanged = timed(lambda: [r.save() for r in rows], 1)[0] / len(rows)
    before = encoder.encoded_count

    def change_each(rows: list[Any] = rows) -> None:
        for r in rows:
            r.title = r.title + "!"
            r.save()  # autocommit: one transaction, one encode, per row

    changed = timed(change_each, 1)[0] / len(rows)
    encoded = encoder.encoded_count - before

    def change_in_one_transaction(rows: list[Any] = rows) -> None:
        with transaction.atomic():
            for r in rows:
                r.title = r.title + "?"
                r.save()

    batched = timed(change_in_one_transaction, 1)[0] / len(rows)
    one_text = statistics.median(timed(lambda: encoder.encode(["a short sentence to encode"]), 20))
    print("| case | per row | notes |\n|---|---|---|")
    print(f"| save(), signals off (plain ORM) | {baseline * 1000:.2f} ms | baseline |")
    print(f"| save(), text unchanged | {unchanged * 1000:.2f} ms | encodes 0 texts |")
    print(
        f"| save(), text changed, autocommit | {changed * 1000:.2f} ms | {encoded} texts encoded; "
        f"model alone {one_text * 1000:.1f} ms/text |"
    )
    print(f"| save(), text changed, {len(rows)} rows in one transaction | {batched * 1000:.2f} ms | one batch |")


# 2. non-text update vs index size --------------------------------------------------------------------------
def bench_update(sizes: list[int], repeat: int) -> None:
    print("\n## UPDATE of a non-text column, 100 rows per statement, vs rows in the HNSW index")
    print("| rows | companion design (this app) | vector on the source row (anti-pattern) | ratio |\n|---|---|---|---|")
    reset()
    sql("DROP TABLE IF EXISTS bench_inline")
    sql("CREATE TABLE bench_inline (id bigint PRIMARY KEY, views int NOT NULL DEFAULT 0, embedding vector(384))")
    sql("CREATE INDEX ON bench_inline USING hnsw (embedding vector_cosine_ops)")
    done = 0
    for size in sizes:
        insert_random(size - done, offset=done)
        sql(
            "INSERT INTO bench_inline (id, embedding) SELECT source_id, embedding FROM djangoapp_article_embedding "
            "WHERE source_id > %s",
            [done],
        )
        done = size
        import random

        from django.db.models import F

        from tests.djangoapp.models import Article

        rng = random.Random(size)

        def orm_update(rng: random.Random = rng, size: int = size) -> None:
            ids = rng.sample(range(1, size + 1), 100)
            Article.objects.filter(pk__in=ids).update(views=F("views") + 1)

        def inline_update(rng: random.Random = rng, size: int = size) -> None:
            ids = rng.sample(range(1, size + 1), 100)
            sql("UPDATE bench_inline SET views = views + 1 WHERE id = ANY(%s)", [ids])

        a, b = timed(orm_update, repeat), timed(inline_update, repeat)
        ratio = statistics.median(b) / statistics.median(a)
        print(f"| {size:,} | {ms(a)} | {ms(b)} | {ratio:.1f}x |")


# 3. ORM semantic_search vs the same SQL -----------------------------------------------------------------------
def bench_search(rows: int, repeat: int) -> None:
    import numpy as np
    from django.db import connection, transaction

    from tests.djangoapp.models import Article

    print(f"\n## semantic_search() at {rows:,} rows, k=10 (HNSW, ef_search 40), median of {repeat}")
    have = Article.objects.count()
    if have < rows:
        insert_random(rows - have, offset=sql("SELECT coalesce(max(id), 0) FROM djangoapp_article")[0][0])
    sql("ANALYZE djangoapp_article, djangoapp_article_embedding")
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal(384).astype(np.float32) for _ in range(repeat)]
    qs_iter = iter(queries * 3)

    def orm() -> None:
        list(Article.objects.semantic_search(next(qs_iter), k=10))

    def orm_filtered() -> None:
        list(Article.objects.filter(published=True).semantic_search(next(qs_iter), k=10))

    from semsim_pg.sql import vector_literal

    raw_sql = str(Article.objects.semantic_search(queries[0], k=10).query)  # shape only, for the plan
    literal_sql = (
        "SELECT a.*, e.embedding <=> %s::vector(384) AS distance FROM djangoapp_article a "
        "JOIN djangoapp_article_embedding e ON e.source_id = a.id AND e.model_name = %s "
        "WHERE e.embedding IS NOT NULL ORDER BY e.embedding <=> %s::vector(384) LIMIT 10"
    )
    raw_iter = iter(queries)

    def raw() -> None:
        v = vector_literal(next(raw_iter))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('hnsw.ef_search', '40', true), "
                "set_config('hnsw.iterative_scan', 'strict_order', true)"
            )
            cursor.execute(literal_sql, [v, "all-MiniLM-L6-v2", v])
            cursor.fetchall()

    raw_one_iter = iter(queries)

    def raw_no_settings() -> None:
        v = vector_literal(next(raw_one_iter))
        with connection.cursor() as cursor:
            cursor.execute(literal_sql, [v, "all-MiniLM-L6-v2", v])
            cursor.fetchall()

    warm = vector_literal(queries[0])
    for _ in range(5):  # warm the buffer cache
        with connection.cursor() as cursor:
            cursor.execute(literal_sql, [warm, "all-MiniLM-L6-v2", warm])
    results = {
        "ORM semantic_search() (set_config + SELECT, model instances)": timed(orm, repeat),
        "ORM, filter(published=True) first": timed(orm_filtered, repeat),
        "same SQL through the cursor, with the same set_config": timed(raw, repeat),
        "same SQL through the cursor, one statement, no settings": timed(raw_no_settings, repeat),
    }
    plan = Article.objects.semantic_search(queries[0], k=10).explain(analyze=True)
    server = [line for line in plan.splitlines() if "Execution Time" in line]
    print("| path | median |\n|---|---|")
    for name, values in results.items():
        print(f"| {name} | {ms(values)} |")
    print(f"| server side, EXPLAIN ANALYZE | {server[0].split(':')[1].strip() if server else '?'} |")
    print(f"\n(plan uses the HNSW index: {'hnsw' in plan}; ORM SQL has {len(raw_sql)} characters)")


# 4. draining stale rows -------------------------------------------------------------------------------------
def bench_drain(n: int, corpus: Path | None) -> None:
    from django_semsim import sync
    from tests.djangoapp.models import Article

    reset()
    if corpus is not None:
        texts = [line.strip() for line in corpus.read_text().splitlines() if line.strip()][:n]
    else:
        words = "order delivery password account refund invoice garden recipe travel passport dog cat".split()
        texts = [f"Question {i} about {words[i % len(words)]} and {words[(i * 7) % len(words)]}" for i in range(n)]
    Article.objects.bulk_create([Article(title=t, body=None) for t in texts], batch_size=2000)
    encoder = sync.get_model_encoder()
    encoder.encode(["warm up"])
    start = time.perf_counter()
    result = sync.drain(Article, batch_size=256)
    total = time.perf_counter() - start
    enc_start = time.perf_counter()
    encoder.encode(texts[:512], batch_size=256)
    enc_rate = 512 / (time.perf_counter() - enc_start)
    print(f"\n## Draining {n:,} stale rows (bulk_create, then one drain; batch 256; real model, CPU)")
    print("| rows | total | rows/s | encoder alone | share of time in the encoder |\n|---|---|---|---|---|")
    print(
        f"| {len(result.written):,} | {total:.1f} s | {len(result.written) / total:.0f} | {enc_rate:.0f} texts/s | "
        f"{(n / enc_rate) / total:.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows for the search figure")
    parser.add_argument("--sizes", default="1000,5000,20000", help="index sizes for the update figure")
    parser.add_argument("--drain", type=int, default=10_000, help="stale rows to drain")
    parser.add_argument("--saves", type=int, default=50, help="rows saved per save() case")
    parser.add_argument("--repeat", type=int, default=50, help="repetitions per timing")
    parser.add_argument("--corpus", type=Path, default=None, help="text file, one sentence a line, for the drain")
    parser.add_argument("--only", default="save,update,search,drain", help="which figures")
    args = parser.parse_args()
    setup_django()
    only = set(args.only.split(","))
    if "save" in only:
        bench_save(args.saves)
    if "update" in only:
        bench_update([int(s) for s in args.sizes.split(",")], args.repeat)
    if "search" in only:
        bench_search(args.rows, args.repeat)
    if "drain" in only:
        bench_drain(args.drain, args.corpus)


if __name__ == "__main__":
    main()
