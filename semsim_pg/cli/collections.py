"""``semsim collections``, ``ingest``, ``reconcile`` and ``reembed``: what a collection holds and how it
stays current."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from semsim_pg.chunking import DEFAULT_CHUNK_TOKENS
from semsim_pg.cli.common import open_store, out, progress_enabled
from semsim_pg.errors import InvalidInput
from semsim_pg.settings import BACKENDS
from semsim_pg.sql import METRIC_NAMES
from semsim_pg.validation import visible

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``collections``, ``ingest``, ``reconcile`` and ``reembed`` to the ``semsim`` parser."""
    p = subparsers.add_parser("collections", help="list collections (or drop one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--drop", metavar="NAME", help="drop this collection with its documents and index")
    p.set_defaults(func=cmd_collections)

    p = subparsers.add_parser("ingest", help="add or update documents from a .jsonl, .csv, .tsv or .txt file")
    p.add_argument("file", type=Path)
    p.add_argument("-c", "--collection", required=True, help="collection name (created if missing)")
    p.add_argument("--format", choices=("jsonl", "csv", "tsv", "txt"), help="file format (default: from the extension)")
    p.add_argument("--id-field", help="column or key holding the id (default: id or _id, else the line number)")
    p.add_argument("--text-field", default="text", help="column or key holding the text (default: text)")
    p.add_argument("--model", help="model for a new collection (default: SEMSIM_MODEL)")
    p.add_argument("--metric", choices=METRIC_NAMES, help="metric for a new collection")
    p.add_argument(
        "--language",
        metavar="CONFIG",
        help="text search configuration of a new collection's lexical search (english, simple, italian, ...; "
        "default SEMSIM_TEXT_SEARCH_CONFIG or english)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        nargs="?",
        const=DEFAULT_CHUNK_TOKENS,
        metavar="TOKENS",
        help="split long texts into passages of at most TOKENS tokens of the model (16 to what it reads; "
        f"alone: {DEFAULT_CHUNK_TOKENS}), at sentence starts where possible; search returns each document once, by "
        "its best passage. Kept by the collection: later ingests split alike. Set only while the collection is empty",
    )
    p.add_argument(
        "--chunk-overlap",
        type=int,
        metavar="TOKENS",
        help="tokens consecutive passages share (default: an eighth of --chunk, at most 32)",
    )
    p.add_argument("--batch-size", type=int, default=512, help="documents per transaction (default 512)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("reconcile", help="re-encode documents whose text changed outside semsim (e.g. in psql)")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = subparsers.add_parser(
        "reembed", help="move a collection to another model without downtime, or re-encode it with one backend"
    )
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("--model", help="the new model (name or directory)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="encode with this backend; without --model, re-encode only the vectors another backend made "
        "(for bit-identical vectors: those of every backend are comparable already)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="documents encoded per batch (default 256)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_reembed)


def cmd_collections(args: argparse.Namespace) -> int:
    store = open_store()
    if args.drop:
        store.drop_collection(args.drop)
        out(f"dropped collection {visible(args.drop)}")
        return 0
    collections = store.list_collections()
    if args.json:
        out(json.dumps([c.to_dict() for c in collections], indent=2))
        return 0
    if not collections:
        out("no collections yet: `semsim ingest FILE -c NAME` creates one")
        return 0
    out(
        f"{'name':<24} {'documents':>9} {'current':>9} {'dim':>5}  {'metric':<13} {'index':<8} {'chunk':>5}  "
        "model (backends)"
    )
    from semsim_pg.loading import model_folder_missing

    missing = [c.name for c in collections if model_folder_missing(c.model_name)]
    for c in collections:
        made_by = ", ".join(f"{backend} {n}" for backend, n in (c.backends or {}).items())
        chunk = "-" if c.chunk_size is None else str(c.chunk_size)
        out(
            f"{visible(c.name):<24} {c.documents:>9} {c.embedded:>9} {c.dimension:>5}  {c.metric:<13} {c.index or '':<8} "
            f"{chunk:>5}  {c.model_name}"
            + (f" ({made_by})" if made_by else "")
            + (" [folder missing]" if c.name in missing else "")
        )
    if missing:
        out(
            f"a model folder is missing ({', '.join(map(visible, missing))}): restore it, or `semsim reembed -c NAME --model MODEL`; "
            "until then their searches and ingests fail"
        )
    if any(c.index in ("missing", "invalid") for c in collections):
        out("an index is missing: the next ingest rebuilds it, or `semsim index rebuild -c NAME` now")
    _report_leftovers(store, collections)
    return 0


def _report_leftovers(store: Any, collections: list[Any]) -> None:
    """Name the indexes interrupted rebuilds left beside the collections' own (every insert
    writes to them, searches may use them)."""
    from semsim_pg.db import connect
    from semsim_pg.store.indexes import leftover_index

    with connect(store.engine) as conn:
        leftovers = [(c.name, name) for c in collections if (name := leftover_index(conn, c)) is not None]
    for coll, name in leftovers:
        out(
            f"{visible(coll)}: an index rebuild is running or was interrupted, leaving the index {name}: "
            f"`semsim index check -c {visible(coll)}` drops it once no rebuild runs"
        )


def cmd_ingest(args: argparse.Namespace) -> int:
    from semsim_pg.inputs import check_documents, read_documents

    options = {"fmt": args.format, "id_field": args.id_field, "text_field": args.text_field}
    # Read the whole file once first: a bad line fails before anything is written.
    total = check_documents(args.file, **options)
    store = open_store()
    collection = store.create_collection(
        args.collection,
        model=args.model,
        metric=args.metric,
        text_search_config=args.language,
        chunk=args.chunk,
        chunk_overlap=args.chunk_overlap,
    )
    start = time.perf_counter()
    result = store.upsert(
        collection,
        read_documents(args.file, **options),
        batch_size=args.batch_size,
        progress=progress_enabled(args),
        total=total,
    )
    elapsed = time.perf_counter() - start
    summary = {**result.to_dict(), "collection": collection.name, "seconds": round(elapsed, 2)}
    if args.json:
        out(json.dumps(summary))
    else:
        out(
            f"{collection.name}: {result.inserted} inserted, {result.updated} updated, {result.unchanged} unchanged, "
            f"{result.encoded} encoded ({total} documents in {elapsed:.1f} s)"
        )
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    store = open_store()
    stale = store.stale_count(args.collection)
    written = store.reconcile(args.collection, batch_size=args.batch_size, progress=progress_enabled(args))
    if args.json:
        out(json.dumps({"collection": args.collection, "stale": stale, "encoded": written}))
    else:
        out(f"{args.collection}: {stale} stale documents, {written} re-encoded")
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from semsim_pg.reembed import reembed

    if args.model is None and args.backend is None:
        raise InvalidInput("semsim reembed needs --model (move to another model) or --backend (re-encode with one).")
    result = reembed(
        open_store(),
        args.collection,
        args.model,
        backend=args.backend,
        batch_size=args.batch_size,
        progress=progress_enabled(args),
    )
    if args.json:
        out(json.dumps(result.to_dict()))
    else:
        out(result.summary())
    return 0
