"""``semsim search`` and ``semsim similar``: search a collection by meaning."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsim_pg.cli.common import hit_text, open_store, out, parse_filters, print_hits
from semsim_pg.errors import InvalidInput, InvalidQuery
from semsim_pg.validation import check_k, visible

if TYPE_CHECKING:
    from semsim_pg.rerank import RerankedHit
    from semsim_pg.store import DocumentStore, SearchHit

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``search`` and ``similar`` to the ``semsim`` parser."""
    p = subparsers.add_parser("search", help="search a collection by meaning, by words, or both")
    p.add_argument("query", nargs="?", help="the query text")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument(
        "--mode",
        help="semantic (by meaning, default), lexical (BM25 over the words) or hybrid (both, fused by rank)",
    )
    p.add_argument("--hybrid", action="store_true", help="same as --mode hybrid")
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
        help="rerank with a cross-encoder (default SEMSIM_CROSS_ENCODER; a name or a directory); 'auto': only "
        "when the configured one's fine-tuning record shows a gain on this collection",
    )
    p.add_argument(
        "--candidates",
        type=int,
        help="hits the first stage returns for --rerank (default 50); hits per side of a hybrid search (default 100)",
    )
    p.add_argument(
        "--queries",
        type=Path,
        metavar="FILE",
        help="one query a line, searched as one batch; prints one JSON line per query",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the query plan (EXPLAIN ANALYZE) instead of the hits (JSON with --json or --queries)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("similar", help="documents most like a stored one (more like this)")
    p.add_argument("id", help="the document's id")
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_similar)


def cmd_search(args: argparse.Namespace) -> int:
    mode = _mode(args)
    if args.explain and args.rerank is not None:
        # EXPLAIN shows one SQL statement; the cross-encoder runs after it, in Python.
        raise InvalidInput(
            "--explain shows the SQL plan and --rerank runs after the SQL: drop --rerank to see the plan of "
            "its first stage (the same search with -k CANDIDATES)."
        )
    texts = _query_texts(args)
    store = open_store()
    options: dict[str, Any] = {
        "mode": mode,
        "min_similarity": args.min_similarity,
        "filter": parse_filters(args.filter),
        "ef_search": args.ef_search,
        "exact": args.exact,
    }
    as_lines = args.json or args.queries is not None
    if args.explain:
        for text in texts:
            plan = store.explain(args.collection, text, args.k, candidates=args.candidates, **options)
            out(json.dumps({"query": text, "plan": plan.splitlines()}) if as_lines else plan)
        return 0
    from semsim_pg.rerank import DEFAULT_CANDIDATES, get_reranker

    reranker = _reranker(args)
    model = None
    if reranker is None:
        k, options["candidates"] = args.k, args.candidates
    else:
        # The first stage returns the candidates; --candidates is their number, not each
        # hybrid side's (which then defaults from it).
        k = DEFAULT_CANDIDATES if args.candidates is None else args.candidates
        check_k(k, "--candidates")
        check_k(args.k, "-k")
        model = get_reranker(reranker or None).load()  # a model that cannot load fails before any search
    if args.queries is not None:
        results = _search_lines(store, args.collection, texts, k, options)
    else:
        results = [store.search(args.collection, texts[0], k, **options)]
    for text, hits in zip(texts, results, strict=True):
        if isinstance(hits, InvalidQuery):
            out(json.dumps({"query": text, "error": str(hits)}))
        elif model is None and as_lines:
            out(json.dumps({"query": text, "hits": [h.to_dict() for h in hits]}))
        elif model is None:
            print_hits(hits, indent="")
        else:
            _print_reranked(text, model.rerank(text, hits, top_k=args.k), as_lines)
    failed = sum(isinstance(hits, InvalidQuery) for hits in results)
    if failed:
        sys.stderr.write(
            f"semsim: {failed} of {len(texts)} queries could not be searched (their lines hold the error)\n"
        )
        return 1
    return 0


def _search_lines(
    store: DocumentStore, collection: str, texts: list[str], k: int, options: dict[str, Any]
) -> list[list[SearchHit] | InvalidQuery]:
    """The hits of each line of ``--queries``, one batch; a line that cannot be searched (only stop
    words in lexical mode) gets its error instead and the others are still answered."""
    try:
        return list(store.search_many(collection, texts, k, **options))
    except InvalidQuery:
        pass  # one bad line refuses the batch: search the lines one by one (the model stays loaded)
    results: list[list[SearchHit] | InvalidQuery] = []
    for text in texts:
        try:
            results.append(store.search(collection, text, k, **options))
        except InvalidQuery as error:
            results.append(error)
    if all(isinstance(r, InvalidQuery) for r in results) and len({str(r) for r in results}) == 1 and len(texts) > 1:
        raise results[0]  # type: ignore[misc]  # the same error for every line: the options, not a line
    return results


def _print_reranked(text: str, reranked: list[RerankedHit[SearchHit]], as_lines: bool) -> None:
    """Reranked hits: ``score`` is what their order follows (the cross-encoder's score, or its blend
    with the first stage's for a tuned reranker); ``rank_before`` counts from 1, as the ranks of
    the first stage's sides do."""
    if as_lines:
        rows = [{**r.to_dict(), "rank_before": r.original_rank + 1, "first_stage_score": r.hit.score} for r in reranked]
        for row in rows:
            del row["original_rank"]
        out(json.dumps({"query": text, "hits": rows}))
        return
    if not reranked:
        out("(no hits)")
    for rank, r in enumerate(reranked, start=1):
        score = r.rerank_score if r.score is None else r.score
        similarity = "   n/a" if r.similarity is None else f"{r.similarity:6.3f}"
        out(
            f"{rank:>2}. score {score:7.3f}  rerank {r.rerank_score:7.3f}  similarity {similarity}  "
            f"was {r.original_rank + 1:>3}  {visible(r.hit.external_id)}  {hit_text(r.hit, 80)}"
        )


def _mode(args: argparse.Namespace) -> str:
    """The search mode from ``--mode`` and ``--hybrid``, which must agree."""
    from semsim_pg.store.search import MODES

    if args.hybrid and args.mode not in (None, "hybrid"):
        raise InvalidInput(f"--hybrid means --mode hybrid: give --hybrid or --mode {args.mode}, not both.")
    mode = str(args.mode or ("hybrid" if args.hybrid else "semantic"))
    if mode not in MODES:
        raise InvalidInput(f"Unknown --mode {mode!r}: use one of {', '.join(MODES)}.")
    return mode


def _query_texts(args: argparse.Namespace) -> list[str]:
    """The query, or the lines of ``--queries FILE``."""
    if args.queries is None:
        if not args.query:
            raise InvalidInput("Give a query text, e.g. semsim search 'how do I reset my password' -c NAME.")
        return [args.query]
    if args.query:
        raise InvalidInput("Give either a QUERY or --queries FILE, not both.")
    from semsim_pg.inputs import read_lines

    texts = [text for _, text in read_lines(args.queries)]
    if not texts:
        raise InvalidInput(f"{args.queries}: holds no queries.")
    return texts


def _reranker(args: argparse.Namespace) -> str | None:
    """The cross-encoder ``--rerank`` asks for ('' the configured one), None for no rerank;
    ``auto`` decided once from the collection's fine-tuning record, the reason on stderr."""
    if args.rerank != "auto":
        return str(args.rerank) if args.rerank is not None else None
    from semsim_pg.finetune.records import decide_rerank

    decision = decide_rerank(args.collection)
    sys.stderr.write(f"semsim: {decision.reason}\n")
    return decision.model if decision.use else None


def cmd_similar(args: argparse.Namespace) -> int:
    store = open_store()
    hits = store.similar(args.collection, args.id, args.k, filter=parse_filters(args.filter))
    if args.json:
        out(json.dumps({"id": args.id, "hits": [h.to_dict() for h in hits]}))
    else:
        print_hits(hits, indent="")
    return 0
