"""pgvector HNSW against FAISS (flat, HNSW, IVF-flat, IVF-PQ) on one collection, side by side.

Builds each FAISS index from the collection (streamed out of PostgreSQL), optionally times a
rebuild of the pgvector index, then measures recall@k against the exact search, p50/p95 latency
and queries per second on the same queries, and prints a table, a JSON file and a plot.

Run it on a collection ingested beforehand, e.g. 50,000 short sentences::

    head -50000 ../shared/data/corpus/tatoeba-en-sentences.txt > /tmp/s50k.txt
    SEMSIM_DATA_DIR=/tmp/bench semsim ingest /tmp/s50k.txt -c tatoeba50k
    SEMSIM_DATA_DIR=/tmp/bench python benchmarks/faiss_compare.py -c tatoeba50k --out /tmp/bench/faiss \\
        --sample 500 --reindex --plot /tmp/bench/faiss-compare.png

The pgvector rows split their latency: ``p50 ms`` is ``DocumentStore.search`` with the vector
given, as an application calls it, ``server`` PostgreSQL's execution time of the same statement
(EXPLAIN ANALYZE), ``client`` the rest (round trip, driver, Python). A summary then sets each
pgvector HNSW row against FAISS HNSW at the same ef_search (the issue's bar: within 5x, with
recall@10 >= 0.98). For the query path alone, ``--indexes hnsw`` skips the other FAISS builds::

    SEMSIM_DATA_DIR=/tmp/bench python benchmarks/faiss_compare.py -c tatoeba20k --out /tmp/bench/f20k \
        --indexes hnsw --sample 300 --ef-search 40,64,100 --json /tmp/bench/f20k.json

``--runs 3`` measures three times in a row and lists each run's summary at the end: on a shared
machine the load drifts between runs, the ratios within one run are what compare.

Never run by the test suite: on two shared cores it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from semsim_pg.backends import cpu_info
from semsim_pg.faiss_index import (
    build_index,
    compare,
    format_table,
    load_index,
    parse_int_list,
    plot,
    rebuild_pg_index,
    sample_queries,
    summarize,
)
from semsim_pg.store import DocumentStore

# (directory name, build options): m and ef_construction of the FAISS HNSW match pgvector's
# defaults (16, 64) so the two graphs are built alike.
BUILDS: dict[str, dict[str, int | str]] = {
    "flat": {"index_type": "flat"},
    "hnsw": {"index_type": "hnsw", "m": 16, "ef_construction": 64},
    "ivfflat": {"index_type": "ivfflat"},
    # 256 lists keep k-means training to a ~16k-vector sample: 8-bit PQ on 2 shared cores takes minutes.
    "ivfpq": {"index_type": "ivfpq", "nlist": 256, "pq_m": 48, "pq_bits": 8},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--collection", required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the FAISS indexes")
    parser.add_argument("--indexes", default=",".join(BUILDS), help=f"which of {', '.join(BUILDS)}")
    parser.add_argument("--sample", type=int, default=500, help="stored vectors used as queries")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--ef-search", default="10,20,40,80,160")
    parser.add_argument("--nprobe", default="1,4,16,64")
    parser.add_argument("--reuse", action="store_true", help="load indexes already in --out instead of rebuilding")
    parser.add_argument("--reindex", action="store_true", help="time a rebuild of the pgvector HNSW index")
    parser.add_argument(
        "--recall-floor", type=float, default=0.98, help="also compare the fastest settings with at least this recall"
    )
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--no-server-time", action="store_true", help="skip the EXPLAIN ANALYZE pass")
    parser.add_argument(
        "--runs", type=int, default=1, help="measure this many times in a row (a shared machine drifts); one table each"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    store = DocumentStore()
    coll = store.get_collection(args.collection)
    args.out.mkdir(parents=True, exist_ok=True)
    indexes = []
    for name in [n.strip() for n in args.indexes.split(",") if n.strip()]:
        path = args.out / name
        if not (args.reuse and (path / "manifest.json").exists()):
            manifest = build_index(store, coll, path, progress=True, **BUILDS[name])  # type: ignore[arg-type]
            print(f"built {name}: {manifest.build_seconds:.1f} s, parameters {manifest.parameters}", flush=True)
        indexes.append(load_index(path, store=store, collection=coll))
    pg_build = None
    if args.reindex:
        pg_build = rebuild_pg_index(store, coll)
        print(f"pgvector REINDEX: {pg_build:.1f} s", flush=True)
    vectors, own = sample_queries(store, coll, args.sample)
    runs: list[list[dict[str, object]]] = []
    summaries: list[str] = []
    for run in range(1, args.runs + 1):
        start = time.perf_counter()
        rows = compare(
            store,
            coll,
            vectors,
            exclude=own,
            k=args.k,
            ef_search=parse_int_list(args.ef_search, "--ef-search"),
            nprobe=parse_int_list(args.nprobe, "--nprobe"),
            indexes=indexes,
            pg_build_seconds=pg_build,
            progress=True,
            server_time=not args.no_server_time,
        )
        print(
            f"\n{coll.name} (run {run} of {args.runs}): {store.count(coll)} documents, model {coll.model_name}, "
            f"{coll.metric}; {len(own)} stored vectors as queries (each excluding itself), k={args.k}; "
            f"measured in {time.perf_counter() - start:.0f} s\n"
        )
        print(format_table(rows, args.k))
        load = f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        print(f"\nCPU: {cpu_info().model}; {load}")
        summary = summarize(rows, args.k, args.recall_floor)
        if summary:
            print("\n" + "\n".join(summary))
            summaries += [f"run {run} ({load}): {line}" for line in summary]
        runs.append([r.to_dict() for r in rows])
    if args.runs > 1 and summaries:
        print("\nevery run:\n" + "\n".join(summaries))
    if args.json:
        args.json.write_text(json.dumps(runs[0] if args.runs == 1 else runs, indent=2))
    if args.plot:
        plot(rows, args.plot, k=args.k, title=f"{coll.name}: {len(own)} queries, k={args.k}")
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
