"""``semsim index``: the state and live recall of a collection's HNSW index, and rebuilding it."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from semsim_pg.cli.common import open_store, out

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("index", help="check or rebuild a collection's HNSW index")
    actions = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    q = actions.add_parser("check", help="the index's state and its recall@k against exact search, on stored vectors")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--sample", type=int, default=200, help="stored vectors searched (default 200)")
    q.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
    q.add_argument("--ef-search", type=int, help="hnsw.ef_search to measure (default: SEMSIM_EF_SEARCH)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_index_check)
    q = actions.add_parser(
        "rebuild",
        help="build the index afresh (optionally with other graph parameters); the old one answers searches until then",
    )
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--m", type=int, help="HNSW m (links per node) for this and later builds")
    q.add_argument("--ef-construction", type=int, help="HNSW ef_construction for this and later builds")
    q.set_defaults(func=cmd_index_rebuild)


def cmd_index_check(args: argparse.Namespace) -> int:
    """Exit status 0 when the index is valid and reaches the recall target, else 3."""
    from semsim_pg.db import connect
    from semsim_pg.store.indexes import drop_leftover_index, leftover_index

    store = open_store()
    coll = store.get_collection(args.collection)
    # an interrupted rebuild's second index (every insert writes to it) is dropped here, unless a
    # rebuild runs now: a check is what a cron job runs, and it never builds
    dropped = drop_leftover_index(store.engine, coll)
    with connect(store.engine) as conn:
        left = leftover_index(conn, coll)
    check = store.check_index(coll, sample=args.sample, k=args.k, ef_search=args.ef_search)
    out(json.dumps(check.to_dict(), indent=2) if args.json else check.summary())
    if not args.json and dropped:
        out(f"dropped the index {dropped} an interrupted rebuild left behind")
    if not args.json and left:
        out(
            f"the index {left} of a rebuild of {coll.name} is still there: a rebuild runs now (or another "
            "index build holds the lock); check again later"
        )
    return 0 if check.ok else 3


def cmd_index_rebuild(args: argparse.Namespace) -> int:
    store = open_store()
    start = time.perf_counter()
    store.build_index(args.collection, rebuild=True, m=args.m, ef_construction=args.ef_construction)
    coll = store.get_collection(args.collection)
    out(
        f"rebuilt the index of {coll.name} (m {coll.hnsw_m}, ef_construction {coll.hnsw_ef_construction}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
