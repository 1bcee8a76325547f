"""``semsim`` core commands: info, db, collections, ingest, search, similar, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from semsim_pg.errors import InvalidInput
from semsim_pg.settings import get_settings

if TYPE_CHECKING:
    from semsim_pg.store import FilterValue

__all__ = ["register"]

DEMO_COLLECTION = "semsim-demo"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("info", help="show the database, pgvector and model in use")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-model", action="store_true", help="do not load the model")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("db", help="install or upgrade semsim's tables (Alembic migrations)")
    db = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = db.add_parser("upgrade", help="install or upgrade the schema (creates the vector extension if missing)")
    q.add_argument("revision", nargs="?", default="head")
    q.set_defaults(func=cmd_db_upgrade)
    q = db.add_parser("downgrade", help="downgrade the schema ('base' removes semsim's tables and data)")
    q.add_argument("revision")
    q.set_defaults(func=cmd_db_downgrade)
    q = db.add_parser("current", help="show the installed schema revision")
    q.set_defaults(func=cmd_db_current)

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
    p.add_argument("--metric", choices=("cosine", "l2", "inner_product", "l1"), help="metric for a new collection")
    p.add_argument("--batch-size", type=int, default=512, help="documents per transaction (default 512)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("search", help="search a collection by meaning")
    p.add_argument("query", nargs="?", help="the query text")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("-k", type=int, default=10, help="how many hits (default 10)")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep documents whose metadata KEY equals VALUE (repeatable)",
    )
    p.add_argument("--min-similarity", type=float, help="drop hits below this similarity")
    p.add_argument("--ef-search", type=int, help="HNSW ef_search for this query (default SEMSIM_EF_SEARCH)")
    p.add_argument("--exact", action="store_true", help="exact scan instead of the HNSW index")
    p.add_argument(
        "--rerank",
        nargs="?",
        const="",
        metavar="MODEL",
        help="rerank with a cross-encoder (default SEMSIM_CROSS_ENCODER; a name or a directory)",
    )
    p.add_argument("--candidates", type=int, default=50, help="hits the index returns for --rerank (default 50)")
    p.add_argument("--queries", type=Path, metavar="FILE", help="one query a line; prints one JSON line per query")
    p.add_argument("--explain", action="store_true", help="print the query plan (EXPLAIN ANALYZE) instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("similar", help="documents most like a stored one (more like this)")
    p.add_argument("id", help="the document's id")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_similar)

    p = subparsers.add_parser("reconcile", help="re-encode documents whose text changed outside semsim (e.g. in psql)")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconcile)

    p = subparsers.add_parser("demo", help="ingest the sample corpus and run a few searches")
    p.add_argument("--reset", action="store_true", help="drop the demo collection first")
    p.set_defaults(func=cmd_demo)


# helpers -------------------------------------------------------------------------------------
def _store(migrate: bool | None = None) -> Any:
    from semsim_pg.store import DocumentStore

    return DocumentStore(migrate=migrate)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _parse_filters(items: Sequence[str]) -> dict[str, FilterValue] | None:
    """``key=value`` pairs. A value that reads as a JSON number, boolean or null also matches
    that JSON value, so ``year=2020`` finds 2020 stored as a number or as text."""
    if not items:
        return None
    filters: dict[str, list[Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--filter takes KEY=VALUE, got {item!r}.")
        alternatives: list[Any] = [value]
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if parsed != value and not isinstance(parsed, (dict, list, str)):
            alternatives.append(parsed)
        filters.setdefault(key, []).extend(alternatives)
    return cast("dict[str, FilterValue]", filters)


def _print_hits(hits: Sequence[Any], *, indent: str = "  ") -> None:
    if not hits:
        _out(f"{indent}(no hits)")
        return
    width = max(len(h.external_id) for h in hits)
    for rank, hit in enumerate(hits, start=1):
        text = hit.text if len(hit.text) <= 100 else hit.text[:97] + "..."
        _out(f"{indent}{rank:>2}. {hit.similarity:6.3f}  {hit.external_id:<{width}}  {text}")


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.quiet


# commands ------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from semsim_pg.db import get_engine, server_info

    settings = get_settings()
    info: dict[str, Any] = {"embedded_server": settings.embedded, "data_dir": str(settings.data_dir)}
    info.update(server_info(get_engine(settings)))
    if not args.no_model:
        from semsim_pg.encoder import get_encoder

        info["model"] = get_encoder().describe()
    else:
        info["model"] = {"name": settings.model}
    if args.json:
        _out(json.dumps(info, indent=2))
        return 0
    model = info["model"]
    rows = [
        ("database", info["database_url"] + ("  (embedded server)" if settings.embedded else "")),
        ("data dir", info["data_dir"]),
        ("PostgreSQL", info["postgresql"]),
        ("pgvector", info["pgvector"] or f"not installed ({info['pgvector_available'] or 'not available'})"),
        ("schema", f"{info['schema_revision'] or 'not installed'} (this semsim: {info['schema_head']})"),
        ("model", model["name"]),
    ]
    if "dimension" in model:
        rows += [
            ("dimension", str(model["dimension"])),
            ("max tokens", str(model["max_seq_length"])),
            ("loaded from", f"{model['loaded_from']} ({model['source']})"),
            ("device", model["device"]),
        ]
    for label, value in rows:
        _out(f"{label:<12} {value}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from semsim_pg.db import current_revision, get_engine, safe_url, upgrade

    engine = get_engine()
    upgrade(engine, args.revision)
    _out(f"semsim schema at {current_revision(engine)} on {safe_url(str(engine.url))}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from semsim_pg.db import current_revision, downgrade, get_engine, safe_url

    engine = get_engine()
    downgrade(engine, args.revision)
    _out(f"semsim schema at {current_revision(engine) or 'base (removed)'} on {safe_url(str(engine.url))}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from semsim_pg.db import current_revision, get_engine, head_revision

    current = current_revision(get_engine())
    head = head_revision()
    state = "up to date" if current == head else "run `semsim db upgrade`"
    _out(f"{current or 'not installed'} (head: {head}; {state})")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    store = _store()
    if args.drop:
        store.drop_collection(args.drop)
        _out(f"dropped collection {args.drop}")
        return 0
    collections = store.list_collections()
    if args.json:
        _out(json.dumps([c.to_dict() for c in collections], indent=2))
        return 0
    if not collections:
        _out("no collections yet: `semsim ingest FILE -c NAME` creates one")
        return 0
    _out(f"{'name':<24} {'documents':>9} {'current':>9} {'dim':>5}  {'metric':<13} model")
    for c in collections:
        _out(f"{c.name:<24} {c.documents:>9} {c.embedded:>9} {c.dimension:>5}  {c.metric:<13} {c.model_name}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from semsim_pg.inputs import check_documents, read_documents

    options = {"fmt": args.format, "id_field": args.id_field, "text_field": args.text_field}
    # Read the whole file once first: a bad line fails before anything is written.
    total = check_documents(args.file, **options)
    store = _store()
    collection = store.create_collection(args.collection, model=args.model, metric=args.metric)
    start = time.perf_counter()
    result = store.upsert(
        collection,
        read_documents(args.file, **options),
        batch_size=args.batch_size,
        progress=_progress_enabled(args),
        total=total,
    )
    elapsed = time.perf_counter() - start
    summary = {**result.to_dict(), "collection": collection.name, "seconds": round(elapsed, 2)}
    if args.json:
        _out(json.dumps(summary))
    else:
        _out(
            f"{collection.name}: {result.inserted} inserted, {result.updated} updated, {result.unchanged} unchanged, "
            f"{result.encoded} encoded ({total} documents in {elapsed:.1f} s)"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    store = _store()
    filters = _parse_filters(args.filter)
    if args.queries is not None:
        if args.query:
            raise InvalidInput("Give either a QUERY or --queries FILE, not both.")
        from semsim_pg.inputs import read_lines

        lines = list(read_lines(args.queries))
        if not lines:
            raise InvalidInput(f"{args.queries}: holds no queries.")
        results = store.search_many(
            args.collection,
            [text for _, text in lines],
            args.k,
            min_similarity=args.min_similarity,
            filter=filters,
            ef_search=args.ef_search,
        )
        for (_, query), hits in zip(lines, results, strict=True):
            _out(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}))
        return 0
    if not args.query:
        raise InvalidInput("Give a query text, e.g. semsim search 'how do I reset my password' -c NAME.")
    options = {
        "min_similarity": args.min_similarity,
        "filter": filters,
        "ef_search": args.ef_search,
        "exact": args.exact,
    }
    if args.explain:
        _out(store.explain(args.collection, args.query, args.k, **options))
        return 0
    if args.rerank is not None:
        from semsim_pg.rerank import search_and_rerank

        reranked = search_and_rerank(
            store,
            args.collection,
            args.query,
            candidates=args.candidates,
            top_k=args.k,
            reranker=args.rerank or None,
            filter=filters,
            ef_search=args.ef_search,
        )
        if args.json:
            rows = [
                {**r.hit.to_dict(), "rerank_score": r.rerank_score, "rank_before": r.original_rank} for r in reranked
            ]
            _out(json.dumps({"query": args.query, "hits": rows}))
        elif not reranked:
            _out("(no hits)")
        for rank, r in enumerate([] if args.json else reranked, start=1):
            text = r.hit.text if len(r.hit.text) <= 90 else r.hit.text[:87] + "..."
            _out(
                f"{rank:>2}. rerank {r.rerank_score:7.3f}  similarity {r.similarity:6.3f}  {r.hit.external_id}  {text}"
            )
        return 0
    hits = store.search(args.collection, args.query, args.k, **options)
    if args.json:
        _out(json.dumps({"query": args.query, "hits": [h.to_dict() for h in hits]}))
    else:
        _print_hits(hits, indent="")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    store = _store()
    hits = store.similar(args.collection, args.id, args.k, filter=_parse_filters(args.filter))
    if args.json:
        _out(json.dumps({"id": args.id, "hits": [h.to_dict() for h in hits]}))
    else:
        _print_hits(hits, indent="")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    store = _store()
    stale = store.stale_count(args.collection)
    written = store.reconcile(args.collection, batch_size=args.batch_size, progress=_progress_enabled(args))
    if args.json:
        _out(json.dumps({"collection": args.collection, "stale": stale, "encoded": written}))
    else:
        _out(f"{args.collection}: {stale} stale documents, {written} re-encoded")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from semsim_pg.db import safe_url
    from semsim_pg.inputs import read_documents, read_lines

    settings = get_settings()
    data = resources.files("semsim_pg.data")
    corpus = Path(str(data.joinpath("sample_corpus.jsonl")))
    queries = [text for _, text in read_lines(Path(str(data.joinpath("sample_queries.txt"))))]

    store = _store()
    _out(f"database: {safe_url(str(store.engine.url))}{'  (embedded server)' if settings.embedded else ''}")
    if args.reset:
        from semsim_pg.errors import CollectionNotFound

        try:
            store.drop_collection(DEMO_COLLECTION)
        except CollectionNotFound:
            pass
    collection = store.create_collection(DEMO_COLLECTION)
    encoder = store.encoder_for(collection)
    _out(f"model:    {encoder.name} ({encoder.dimension} dimensions, from {encoder.source.location})")
    documents = list(read_documents(corpus))
    result = store.upsert(collection, documents, progress=_progress_enabled(args))
    _out(
        f"ingested {corpus.name}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.encoded} encoded"
    )
    _out("")
    for query in queries:
        start = time.perf_counter()
        hits = store.search(collection, query, k=3)
        ms = (time.perf_counter() - start) * 1000
        _out(f'search "{query}"  ({ms:.1f} ms)')
        _print_hits(hits)
        _out("")
    _out('more like "animals-1" (The dog chases the cat), from stored vectors:')
    _print_hits(store.similar(collection, "animals-1", k=3))
    _out("")
    _out('search "travel problems" with --filter topic=travel:')
    _print_hits(store.search(collection, "travel problems", k=3, filter={"topic": "travel"}))
    _out("")
    _out(f"Try: semsim search 'your question' -c {DEMO_COLLECTION}")
    return 0
