"""``semsim demo``: ingest the sample corpus and run a few searches."""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path
from typing import Any

from semsim_pg.cli.common import open_store, out, print_hits, progress_enabled
from semsim_pg.settings import get_settings

DEMO_COLLECTION = "semsim-demo"

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to the ``semsim`` parser."""
    p = subparsers.add_parser("demo", help="ingest the sample corpus and run a few searches")
    p.add_argument("--reset", action="store_true", help="drop the demo collection first")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from semsim_pg.db import safe_url
    from semsim_pg.inputs import read_documents, read_lines

    settings = get_settings()
    data = resources.files("semsim_pg.data")
    corpus = Path(str(data.joinpath("sample_corpus.jsonl")))
    queries = [text for _, text in read_lines(Path(str(data.joinpath("sample_queries.txt"))))]

    store = open_store()
    out(f"database: {safe_url(str(store.engine.url))}{'  (embedded server)' if settings.embedded else ''}")
    if args.reset:
        from semsim_pg.errors import CollectionNotFound

        try:
            store.drop_collection(DEMO_COLLECTION)
        except CollectionNotFound:
            pass
    collection = store.create_collection(DEMO_COLLECTION)
    encoder = store.encoder_for(collection)
    out(f"model:    {encoder.name} ({encoder.dimension} dimensions, from {encoder.source.location})")
    documents = list(read_documents(corpus))
    result = store.upsert(collection, documents, progress=progress_enabled(args))
    out(
        f"ingested {corpus.name}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.encoded} encoded"
    )
    out("")
    for query in queries:
        start = time.perf_counter()
        hits = store.search(collection, query, k=3)
        ms = (time.perf_counter() - start) * 1000
        out(f'search "{query}"  ({ms:.1f} ms)')
        print_hits(hits)
        out("")
    out('more like "animals-1" (The dog chases the cat), from stored vectors:')
    print_hits(store.similar(collection, "animals-1", k=3))
    out("")
    out('search "travel problems" with --filter topic=travel:')
    print_hits(store.search(collection, "travel problems", k=3, filter={"topic": "travel"}))
    out("")
    out(f"Try: semsim search 'your question' -c {DEMO_COLLECTION}")
    return 0
