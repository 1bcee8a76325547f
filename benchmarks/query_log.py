"""What logging a search costs the search: the query log's request-path overhead.

Three numbers, in microseconds (p50 and p95 over many calls):
- ``log_search``: the call DocumentStore.search makes after its hits are in (build the record,
  put it on the writer's queue), measured alone;
- ``search off`` / ``search on``: whole ``DocumentStore.search`` calls (a cached query vector,
  so the model's time does not drown the difference) with the log off and on, interleaved.
The writer thread's own work (hashing, the batched INSERT) happens off the request path and is
reported as rows written per second of wall time.

    SEMSIM_DATA_DIR=/tmp/me-data .venv/bin/python benchmarks/query_log.py [--calls 2000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p95_us": round(ordered[int(0.95 * (len(ordered) - 1))] * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from semsim_pg import insights
    from semsim_pg.insights.log import log_search
    from semsim_pg.settings import get_settings
    from semsim_pg.store import DocumentStore, SearchHit

    settings = get_settings()
    name = f"bench_log_{uuid.uuid4().hex[:8]}"
    off = DocumentStore(settings=settings.replace(query_log=False))
    on = DocumentStore(settings=settings.replace(query_log=True))
    off.create_collection(name)
    off.upsert(name, [(f"d{i}", f"document number {i} about topic {i % 17}") for i in range(500)], progress=False)
    coll = off.get_collection(name)
    vector = off.query_vector(coll, "a question about topic 3")
    hits = [SearchHit(f"d{i}", "text", {}, 0.5, 0.5) for i in range(10)]

    alone = []
    for _ in range(args.calls):
        start = time.perf_counter()
        log_search(on.settings, on.engine, coll, "a question about topic 3", vector, hits, 10, "semantic", start)
        alone.append(time.perf_counter() - start)
    insights.flush(timeout=60)

    search_off, search_on = [], []
    for _ in range(max(200, args.calls // 5)):
        for store, samples in ((off, search_off), (on, search_on)):
            start = time.perf_counter()
            store.search(coll, "a question about topic 3", k=10)
            samples.append(time.perf_counter() - start)
    started = time.perf_counter()
    insights.flush(timeout=60)
    drained = time.perf_counter() - started

    result = {
        "log_search": percentiles(alone),
        "search_off": percentiles(search_off),
        "search_on": percentiles(search_on),
        "overhead_p50_us": round((statistics.median(search_on) - statistics.median(search_off)) * 1e6, 1),
        "rows_logged": len(alone) + len(search_on),
        "final_flush_s": round(drained, 3),
    }
    off.drop_collection(name)
    insights.prune(on.engine, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), collection=name, progress=False)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'':<12}{'p50 (us)':>10}{'p95 (us)':>10}")
    for key in ("log_search", "search_off", "search_on"):
        print(f"{key:<12}{result[key]['p50_us']:>10}{result[key]['p95_us']:>10}")
    print(f"search on - off, p50: {result['overhead_p50_us']} us; {result['rows_logged']} rows logged")


if __name__ == "__main__":
    from _entry import run

    run(main)
