"""django_semsim figures: save() overhead, non-text updates vs index size, ORM vs raw search, draining.

    SEMSIM_DATA_DIR=/tmp/bench-data .venv/bin/python benchmarks/django_bench.py [--rows 20000] [--drain 10000] \
        [--corpus ../shared/data/corpus/tatoeba-en-sentences.txt] [--only save,update,search,ratio,drain]

    # the ORM/cursor ratio alone, in one run (--reuse keeps the encoded rows of the previous run)
    SEMSIM_DATA_DIR=/tmp/bench-data .venv/bin/python benchmarks/django_bench.py --only ratio --rows 20000 \
        --corpus ../shared/data/corpus/tatoeba-en-sentences.txt [--reuse] [--json] [--profile]

Runs on the embedded PostgreSQL (or SEMSIM_DATABASE_URL) in a database of its own, ``semsim_bench``,
recreated on each run, with the test app's models (tests/djangoapp). Vectors for the index-size and
search figures are random and written in SQL (the encoder is not what they measure); the save()
and drain figures use the real model. ``ratio`` (ORM against the same SQL through a cursor) uses
the first ``--rows`` sentences of ``--corpus`` with their real vectors; ``drain`` compares lanes
(1: one batch at a time, 2: the pipelined drain) and backends with the encoder alone, in one run. Timings on a shared 2-core machine vary from run to run:
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


def setup_django(recreate: bool = True) -> None:
    import django
    from django.conf import settings

    from django_semsim.database import database_config

    base = database_config()
    _recreate_database(base, keep=not recreate)
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


def _recreate_database(base: dict[str, Any], keep: bool = False) -> None:
    import psycopg

    kwargs = {
        "dbname": base["NAME"],
        "user": base["USER"],
        "password": base["PASSWORD"] or None,
        "host": base["HOST"] or None,
        "port": base["PORT"] or None,
    }
    with psycopg.connect(**{k: v for k, v in kwargs.items() if v}, autocommit=True) as conn:
        if keep and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            return
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
def bench_drain(n: int, corpus: Path | None, backends: list[str], lanes: list[int], batch: int) -> None:
    """Drain ``n`` stale rows per (backend, lanes), side by side with the encoder alone on the same texts."""
    from django_semsim import sync
    from semsim_pg import Encoder
    from semsim_pg.backends import cpu_info
    from tests.djangoapp.models import Article

    reset()
    if corpus is not None:
        texts = [line.strip()[:200] for line in corpus.read_text().splitlines() if line.strip()][:n]
    else:
        words = "order delivery password account refund invoice garden recipe travel passport dog cat".split()
        texts = [f"Question {i} about {words[i % len(words)]} and {words[(i * 7) % len(words)]}" for i in range(n)]
    Article.objects.bulk_create([Article(title=t, body=None) for t in texts], batch_size=2000)
    semantic_texts = [a.semantic_text() for a in Article.objects.order_by("pk")]
    rows: list[tuple[str, int, float, float]] = []
    load = [os.getloadavg()[0]]
    for backend in backends:
        encoder = Encoder(backend=backend).load()
        encoder.encode(["warm up"] * 8)
        start = time.perf_counter()
        for i in range(0, len(semantic_texts), batch):  # the drain's claims, in the model's own batches
            encoder.encode(semantic_texts[i : i + batch])
        encode_rate = len(semantic_texts) / (time.perf_counter() - start)
        for count in lanes:
            sql("TRUNCATE djangoapp_article_embedding")  # every row stale again
            sync.DRAIN_LANES = count
            start = time.perf_counter()
            result = sync.drain(Article, batch_size=batch, encoder=encoder)
            total = time.perf_counter() - start
            assert len(result.written) == n, (len(result.written), n)
            rows.append((encoder.backend_name, count, n / total, encode_rate))
            load.append(os.getloadavg()[0])
    print(
        f"\n## Draining {n:,} stale rows (batch {batch}; real model, CPU: {cpu_info().model}, {os.cpu_count()} cores)"
    )
    print(f"load average {min(load):.1f} to {max(load):.1f} during the run; the report's baseline was 47 rows/s")
    print("| backend | lanes | rows/s | encoder alone (texts/s) | drain / encoder | vs 47 rows/s |")
    print("|---|---|---|---|---|---|")
    for backend, count, rate, encode_rate in rows:
        print(f"| {backend} | {count} | {rate:.0f} | {encode_rate:.0f} | {rate / encode_rate:.2f} | {rate / 47:.2f}x |")


# 5. ORM against the same SQL through a cursor, real sentences -----------------------------------------------
def scifact_sample(
    data: Path, n_queries: int, n_docs: int
) -> tuple[dict[str, str], dict[str, Any], list[str], list[Any]]:
    """(queries, qrels, chosen, kept) of SciFact's train split: the first ``n_queries`` train
    queries with judgements, every abstract relevant to them, then other abstracts (shuffled,
    seed 0) up to ``n_docs``: a search over distractors that fits a shared CPU."""
    import json
    import random

    from semsim_pg.evaluation.retrieval import read_qrels, read_queries

    queries = read_queries(data / "queries.jsonl")
    qrels = read_qrels(data / "qrels/train.tsv")
    chosen = sorted(q for q in qrels if q in queries)[:n_queries]
    wanted = {doc for q in chosen for doc in qrels[q]}
    records = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(records)
    kept = [r for r in records if str(r["_id"]) in wanted]
    kept += [r for r in records if str(r["_id"]) not in wanted][: max(0, n_docs - len(kept))]
    return queries, qrels, chosen, kept, records


def _built(queryset: Any) -> Any:
    """``queryset`` with its Query built (reading ``.query`` does it): Django compiles it when it runs."""
    queryset.query  # noqa: B018 - read for its effect, not in an assert (python -O drops those)
    return queryset


def load_sentences(rows: int, corpus: Path, queries: int, reuse: bool) -> list[str]:
    """The first ``rows`` sentences of ``corpus`` as Articles (every other one published) with their real
    vectors; the next ``queries`` sentences are returned as queries. ``reuse``: keep the rows of an
    earlier run when they are these very sentences (encoding 20,000 of them takes minutes)."""
    from django_semsim.conf import get_config
    from django_semsim.encoding import get_model_encoder
    from semsim_pg.sql import vector_literal
    from tests.djangoapp.models import Article

    lines = [line.strip()[:200] for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts, query_texts = lines[:rows], lines[rows : rows + queries]
    if reuse and _holds(texts):
        print(f"\n(reusing the {rows:,} encoded rows of an earlier run)")
        return query_texts
    reset()
    Article.objects.bulk_create(
        [Article(title=t, body=None, published=i % 2 == 0) for i, t in enumerate(texts)], batch_size=5000
    )
    objects = list(Article.objects.order_by("pk"))
    encoder = get_model_encoder()
    start = time.perf_counter()
    vectors = encoder.encode([o.semantic_text() for o in objects], batch_size=256)
    print(f"\n(encoded {rows:,} rows in {time.perf_counter() - start:.0f} s with {encoder.backend_name})")
    cfg = get_config()
    sql(
        "INSERT INTO django_semsim_embeddingmodel (name, dimension, created_at) VALUES (%s, %s, now()) "
        "ON CONFLICT DO NOTHING",
        [cfg.model_name, cfg.dimensions],
    )
    for i in range(0, len(objects), 2000):
        chunk = objects[i : i + 2000]
        sql(
            "INSERT INTO djangoapp_article_embedding (source_id, model_name, text_hash, embedding, created_at, "
            "updated_at) SELECT s, %s, h, e::vector, now(), now() FROM unnest(%s::bigint[], %s::text[], %s::text[]) "
            "AS v(s, h, e)",
            [
                cfg.model_name,
                [o.pk for o in chunk],
                [o.semantic_text_hash() for o in chunk],
                [vector_literal(v) for v in vectors[i : i + 2000]],
            ],
        )
    sql("ANALYZE djangoapp_article, djangoapp_article_embedding")
    return query_texts


def _holds(texts: list[str]) -> bool:
    """Whether the benchmark database already holds ``texts`` as Articles, each with a current vector."""
    from tests.djangoapp.models import Article

    try:
        rows = list(Article.objects.order_by("pk").values_list("title", "published"))
    except Exception:
        return False
    vectors = sql("SELECT count(*) FROM djangoapp_article_embedding")[0][0]
    return rows == [(t, i % 2 == 0) for i, t in enumerate(texts)] and vectors == len(texts)


def bench_orm_ratio(
    rows: int, corpus: Path, queries: int, *, profile: bool, reuse: bool, as_json: bool
) -> dict[str, Any]:
    """p50 of ``semantic_search(vector, k=10)`` evaluated against its own SQL through ``connection.cursor()``.

    ``rows`` Tatoeba sentences with their real vectors (encoded once, outside the timing); the
    query vectors are encoded beforehand, so neither side encodes. The cursor runs the statement
    the ORM sends for that very query (``.query.sql_with_params()``, built beforehand: its time is
    the database's and psycopg's alone). The two paths alternate query by query (ABBA...), on the
    same connection, and the ratio of their medians is the figure; it is measured for the plain
    search, a filtered one (``filter(published=True)``, half the rows), the plain one copied by
    ``.all()`` (still a recipe) and the plain one with its ``.query`` read first, which Django then
    builds and compiles each time (the path without the compiled cache)."""
    import cProfile
    import json
    import pstats

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_semsim import prepared
    from django_semsim.encoding import get_model_encoder
    from semsim_pg.backends import cpu_info
    from tests.djangoapp.models import Article

    query_texts = load_sentences(rows, corpus, queries, reuse)
    encoder = get_model_encoder()
    query_vectors = [encoder.encode_query(q) for q in query_texts]
    cases: dict[str, tuple[str, Callable[[Any], Any]]] = {
        "plain": ("Article.objects.semantic_search(vector, k=10)", lambda v: Article.objects.semantic_search(v, k=10)),
        "filtered": (
            "Article.objects.filter(published=True).semantic_search(vector, k=10)",
            lambda v: Article.objects.filter(published=True).semantic_search(v, k=10),
        ),
        # all(), as generic views call it: a copy that stays a recipe
        "all": (
            "Article.objects.semantic_search(vector, k=10).all()",
            lambda v: Article.objects.semantic_search(v, k=10).all(),
        ),
        # its Query read first: built and compiled by Django for every search (the path without the cache)
        "built": (
            "the plain search with its .query read first",
            lambda v: _built(Article.objects.semantic_search(v, k=10)),
        ),
    }

    def cursor(statement: tuple[str, tuple[Any, ...]]) -> None:
        with connection.cursor() as c:
            c.execute(*statement)
            c.fetchall()

    load = [os.getloadavg()[0]]
    figures: dict[str, Any] = {
        "rows": rows,
        "queries": len(query_vectors),
        "k": 10,
        "cpu": cpu_info().model,
        "cores": os.cpu_count(),
        "cases": {},
    }
    for name, (label, search) in cases.items():

        def orm(vector: Any, search: Callable[[Any], Any] = search) -> None:
            list(search(vector))

        statements = [search(v).query.sql_with_params() for v in query_vectors]
        for v, statement in zip(query_vectors[:20], statements[:20], strict=True):  # warm caches and the connection
            orm(v)
            cursor(statement)
        with CaptureQueriesContext(connection) as captured:
            orm(query_vectors[0])
        same_sql = captured.captured_queries[-1]["sql"] == _mogrify(*statements[0])
        orm_times: list[float] = []
        cursor_times: list[float] = []
        # this process's CPU time per search: what the ORM adds, whatever the load does to wall time
        orm_cpu: list[float] = []
        cursor_cpu: list[float] = []
        for i, (v, statement) in enumerate(zip(query_vectors, statements, strict=True)):
            pair = [
                (orm_times, orm_cpu, lambda v=v: orm(v)),
                (cursor_times, cursor_cpu, lambda s=statement: cursor(s)),
            ]
            for out, cpu, fn in pair if i % 2 == 0 else reversed(pair):
                t, c = time.perf_counter(), time.process_time()
                fn()
                out.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        load.append(os.getloadavg()[0])
        figures["cases"][name] = {
            "orm": label,
            "statements_per_search": len(captured),
            "same_sql": same_sql,
            "orm_p50_ms": statistics.median(orm_times) * 1000,
            "orm_p95_ms": _p95(orm_times) * 1000,
            "cursor_p50_ms": statistics.median(cursor_times) * 1000,
            "cursor_p95_ms": _p95(cursor_times) * 1000,
            "ratio": statistics.median(orm_times) / statistics.median(cursor_times),
            # each search over the cursor run next to it (same moment of the machine's load)
            "paired_ratio": statistics.median(o / c for o, c in zip(orm_times, cursor_times, strict=True)),
            "orm_client_cpu_ms": statistics.median(orm_cpu) * 1000,
            "cursor_client_cpu_ms": statistics.median(cursor_cpu) * 1000,
        }
    figures["load_average"] = [min(load), max(load)]
    figures["compiled_searches"] = prepared.cache_info()
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"\n## ORM vs the same SQL through a cursor: {rows:,} Tatoeba rows, k=10, {len(query_vectors)} queries each"
        )
        print(
            f"CPU: {figures['cpu']} ({figures['cores']} cores); load average {min(load):.1f} to {max(load):.1f} during the run"
        )
        print(
            "| search | statements | ORM p50 | ORM p95 | cursor p50 | cursor p95 | client CPU p50, ORM / cursor "
            "| median of paired ratios | ratio ORM / cursor (target <= 1.3) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for case in figures["cases"].values():
            print(
                f"| `{case['orm']}` | {case['statements_per_search']} | {case['orm_p50_ms']:.3f} ms | "
                f"{case['orm_p95_ms']:.3f} ms | {case['cursor_p50_ms']:.3f} ms | {case['cursor_p95_ms']:.3f} ms | "
                f"{case['orm_client_cpu_ms']:.3f} / {case['cursor_client_cpu_ms']:.3f} ms | {case['paired_ratio']:.2f} | "
                f"**{case['ratio']:.2f}** |"
            )
        if not all(case["same_sql"] for case in figures["cases"].values()):
            print("WARNING: the cursor's SQL is not the SQL the ORM sent")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for v in query_vectors:
            list(Article.objects.semantic_search(v, k=10))
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr if as_json else sys.stdout).sort_stats("tottime").print_stats(20)
    return figures


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def _mogrify(statement: str, params: Any) -> str:
    """The statement as psycopg sends it with its parameters (what CaptureQueriesContext records)."""
    from django.db import connection

    with connection.cursor() as c:
        return str(c.mogrify(statement, params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows for the search figure")
    parser.add_argument("--sizes", default="1000,5000,20000", help="index sizes for the update figure")
    parser.add_argument("--drain", type=int, default=10_000, help="stale rows to drain")
    parser.add_argument("--saves", type=int, default=50, help="rows saved per save() case")
    parser.add_argument("--repeat", type=int, default=50, help="repetitions per timing")
    parser.add_argument("--corpus", type=Path, default=None, help="text file, one sentence a line, for the drain")
    parser.add_argument("--only", default="save,update,search,drain", help="which figures")
    parser.add_argument("--drain-backends", default="auto,torch", help="encoder backends for the drain figure")
    parser.add_argument("--drain-lanes", default="1,2", help="lanes (batches in hand at once) for the drain figure")
    parser.add_argument("--drain-batch", type=int, default=256, help="batch size of the drain")
    parser.add_argument("--ratio-queries", type=int, default=300, help="queries for the ORM/cursor ratio")
    parser.add_argument("--profile", action="store_true", help="cProfile the ORM path of the ratio figure")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="ratio: keep the database of an earlier run when it holds the same sentences (no re-encoding)",
    )
    parser.add_argument("--json", action="store_true", help="ratio: print the figures as JSON instead of a table")
    args = parser.parse_args()
    setup_django(recreate=not (args.reuse and set(args.only.split(",")) == {"ratio"}))
    only = set(args.only.split(","))
    if "save" in only:
        bench_save(args.saves)
    if "update" in only:
        bench_update([int(s) for s in args.sizes.split(",")], args.repeat)
    if "search" in only:
        bench_search(args.rows, args.repeat)
    if "ratio" in only:
        if args.corpus is None:
            sys.exit("the ratio figure needs --corpus (e.g. ../shared/data/corpus/tatoeba-en-sentences.txt)")
        bench_orm_ratio(
            args.rows, args.corpus, args.ratio_queries, profile=args.profile, reuse=args.reuse, as_json=args.json
        )
    if "drain" in only:
        bench_drain(
            args.drain,
            args.corpus,
            [b for b in args.drain_backends.split(",") if b],
            [int(x) for x in args.drain_lanes.split(",")],
            args.drain_batch,
        )


if __name__ == "__main__":
    from _entry import run

    run(main)
