"""``semsim faiss build|compare``: FAISS indexes of a collection, and how they compare with pgvector.

Handlers import their modules (and so faiss, torch, matplotlib) only when they run, so
``semsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from semsim_pg.cli.common import open_store, out, progress_enabled

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``faiss`` to the ``semsim`` parser."""
    p = subparsers.add_parser("faiss", help="build FAISS indexes of a collection and compare them with pgvector")
    faiss = p.add_subparsers(dest="faiss_command", metavar="ACTION", required=True)

    q = faiss.add_parser("build", help="stream a collection's vectors into a FAISS index saved atomically in DIR")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--index", choices=("flat", "ivfflat", "hnsw", "ivfpq"), default="hnsw", help="index type")
    q.add_argument("--nlist", type=int, help="IVF lists (default: about 4*sqrt(rows))")
    q.add_argument("--m", type=int, help="HNSW neighbours per node (default 32)")
    q.add_argument("--ef-construction", type=int, help="HNSW build beam width (default 64)")
    q.add_argument("--pq-m", type=int, help="PQ sub-quantizers, must divide the dimension (default dim/8)")
    q.add_argument("--pq-bits", type=int, help="bits per PQ code (default 8; 4 trains much faster)")
    q.add_argument("--batch-size", type=int, default=5000, help="vectors per database round trip (default 5000)")
    q.add_argument("--out", required=True, type=Path, metavar="DIR", help="index directory (replaced if it is one)")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.set_defaults(func=cmd_faiss_build)

    q = faiss.add_parser("compare", help="recall and speed: exact vs pgvector HNSW vs FAISS indexes")
    q.add_argument("-c", "--collection", required=True)
    src = q.add_mutually_exclusive_group()
    src.add_argument("--queries", type=Path, metavar="FILE", help="query texts, one a line")
    src.add_argument(
        "--sample",
        type=int,
        default=None,
        metavar="N",
        help="N random stored vectors as queries, each excluding itself (default 200)",
    )
    q.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    q.add_argument("--ef-search", default="10,20,40,80,160", help="pgvector and FAISS HNSW ef_search values")
    q.add_argument("--nprobe", default="1,4,16,64", help="IVF lists probed, for FAISS IVF indexes")
    q.add_argument("--index", action="append", default=[], type=Path, metavar="DIR", help="a FAISS index (repeatable)")
    q.add_argument(
        "--reindex",
        action="store_true",
        help="also time a rebuild of the pgvector index (REINDEX: writes wait meanwhile)",
    )
    q.add_argument(
        "--recall-floor",
        type=float,
        default=0.98,
        help="also compare each side's fastest setting with at least this recall@k (default 0.98)",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    q.add_argument("--plot", type=Path, metavar="FILE.png", help="write a recall-versus-QPS plot")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_faiss_compare)


def cmd_faiss_build(args: argparse.Namespace) -> int:
    from semsim_pg.faiss_index import build_index

    manifest = build_index(
        open_store(),
        args.collection,
        args.out,
        index_type=args.index,
        nlist=args.nlist,
        m=args.m,
        ef_construction=args.ef_construction,
        pq_m=args.pq_m,
        pq_bits=args.pq_bits,
        batch_size=args.batch_size,
        progress=progress_enabled(args),
    )
    if args.json:
        out(json.dumps({**manifest.to_dict(), "path": str(args.out)}))
    else:
        params = ", ".join(f"{k}={v}" for k, v in manifest.parameters.items()) or "no parameters"
        out(
            f"{args.out}: FAISS {manifest.index_type} ({params}) of {manifest.rows} vectors from {manifest.collection} "
            f"({manifest.model}, {manifest.metric}) built in {manifest.build_seconds:.1f} s"
        )
    return 0


def cmd_faiss_compare(args: argparse.Namespace) -> int:
    from semsim_pg.errors import InvalidInput
    from semsim_pg.faiss_index import (
        compare,
        format_table,
        load_index,
        parse_int_list,
        plot,
        rebuild_pg_index,
        summarize,
    )
    from semsim_pg.faiss_index import sample_queries as sample
    from semsim_pg.fsutil import check_output_path
    from semsim_pg.validation import check_k

    if args.plot:  # before the comparison, which may take minutes
        check_output_path(args.plot, "--plot")
    ef_values = parse_int_list(args.ef_search, "--ef-search")
    nprobe = parse_int_list(args.nprobe, "--nprobe")
    check_k(args.k, "-k")
    store = open_store()
    coll = store.get_collection(args.collection)
    indexes = [load_index(path, store=store, collection=coll) for path in args.index]
    exclude: list[str | None] | None
    if args.queries is not None:
        from semsim_pg.inputs import read_lines

        texts = [text for _, text in read_lines(args.queries)]
        if not texts:
            raise InvalidInput(f"{args.queries}: holds no queries.")
        vectors = store.encoder_for(coll).encode(texts)
        exclude = None
        source = f"{len(texts)} queries from {args.queries}"
    else:
        vectors, own = sample(store, coll, 200 if args.sample is None else args.sample, seed=args.seed)
        exclude = list(own)
        source = f"{len(own)} stored vectors (each excluding itself)"
    pg_build = rebuild_pg_index(store, coll) if args.reindex else None
    rows = compare(
        store,
        coll,
        vectors,
        exclude=exclude,
        k=args.k,
        ef_search=ef_values,
        indexes=indexes,
        nprobe=nprobe,
        pg_build_seconds=pg_build,
        progress=progress_enabled(args),
    )
    if args.plot:
        plot(rows, args.plot, k=args.k, title=f"{coll.name}: {source}")
    summary = summarize(rows, args.k, args.recall_floor)
    if args.json:
        report = {
            "collection": coll.name,
            "model": coll.model_name,
            "metric": coll.metric,
            "k": args.k,
            "queries": len(vectors),
            "query_source": source,
            "rows": [r.to_dict() for r in rows],
        }
        out(json.dumps({**report, "summary": summary}))
    else:
        out(f"{coll.name} ({coll.model_name}, {coll.metric}): {source}, k={args.k}")
        out(format_table(rows, args.k))
        for line in summary:
            out(line)
        if args.plot:
            out(f"plot: {args.plot}")
    return 0
