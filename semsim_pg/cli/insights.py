"""``semsim stats``, ``semsim log prune`` and ``semsim faq unanswered|promote``: what the query
log tells (see :mod:`semsim_pg.insights`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from semsim_pg.cli.common import open_store, out, progress_enabled, short
from semsim_pg.validation import visible

__all__ = ["register", "register_faq"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim stats`` and ``semsim log`` to the ``semsim`` parser."""
    p = subparsers.add_parser(
        "stats",
        help="query log figures: volume, latency, answer rate, top-1 scores, drift",
        description="Figures of the queries logged for a collection (SEMSIM_QUERY_LOG=1 turns the log on): "
        "count, latency p50/p95, FAQ answer rate, the top-1 score histogram, a per-day series, and the drift "
        "of the top-1 score distribution against the window before (PSI, KS test).",
    )
    p.add_argument("-c", "--collection", required=True)
    p.add_argument("--since", default="7d", help="window: a length of time (12h, 7d, 2w) or a date (default 7d)")
    p.add_argument("--baseline", help="length of the baseline window before --since (default: as long as the window)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the histogram and daily series to this PNG")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_stats)

    p = subparsers.add_parser("log", help="the query log: prune old rows")
    log = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    q = log.add_parser("prune", help="delete logged queries older than a length of time")
    q.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12w")
    q.add_argument("-c", "--collection", help="only this collection's rows (default: all)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_log_prune)


def register_faq(faq: argparse._SubParsersAction[Any]) -> None:
    """Add ``unanswered`` and ``promote`` to ``semsim faq``."""
    q = faq.add_parser(
        "unanswered",
        help="unanswered questions from the query log, grouped by meaning, biggest group first",
    )
    q.add_argument("-c", "--collection", required=True)
    _group_options(q)
    q.add_argument("--limit", type=int, default=20, help="groups to show (default 20)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_faq_unanswered)

    q = faq.add_parser(
        "promote",
        help="turn a group of unanswered questions into an FAQ entry or a phrasing of one",
        description="GROUP is an id from `semsim faq unanswered`. With a new --id and --answer it becomes an "
        "entry (question: the group's representative, or --question); with the id of an existing entry it "
        "becomes an alternative phrasing of it (--question to word it). Its questions leave the list.",
    )
    q.add_argument("group", metavar="GROUP")
    q.add_argument("-c", "--collection", required=True)
    q.add_argument("--id", required=True, dest="faq_id", help="a new FAQ id, or an existing one to add a phrasing to")
    q.add_argument("--answer", help="the answer of a new entry")
    q.add_argument("--question", help="the question or phrasing to add (default: the group's representative)")
    q.add_argument("--category")
    _group_options(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_faq_promote)


def _group_options(q: argparse.ArgumentParser) -> None:
    from semsim_pg.insights.unanswered import DEFAULT_MAX_DISTANCE

    q.add_argument("--since", default="30d", help="window: a length of time or a date (default 30d)")
    q.add_argument("--below", type=float, help="also count queries whose top-1 score was below this (plain searches)")
    q.add_argument(
        "--max-distance",
        type=float,
        default=DEFAULT_MAX_DISTANCE,
        help=f"cosine distance within which questions group (default {DEFAULT_MAX_DISTANCE})",
    )


def cmd_stats(args: argparse.Namespace) -> int:
    from semsim_pg.fsutil import check_output_path
    from semsim_pg.insights import parse_duration, parse_since, plot_stats, query_stats

    if args.plot:
        check_output_path(args.plot, "--plot")
    start = parse_since(args.since)
    baseline = parse_duration(args.baseline, "--baseline") if args.baseline else None
    store = open_store()
    threshold = store.settings.query_log_drift_threshold
    stats = query_stats(
        store.engine,
        args.collection,
        start,
        baseline=baseline,
        threshold=threshold,
        require_collection=lambda: store.get_collection(args.collection),
    )
    if args.plot:
        plot_stats(stats, args.plot)
    if args.json:
        data = stats.to_dict()
        if args.plot:
            data["plot"] = str(args.plot)
        out(json.dumps(data, indent=2))
        return 0
    w = stats.window

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    out(f"{stats.collection}: {w.queries} queries since {w.start:%Y-%m-%d %H:%M} UTC")
    out(f"  latency p50 {ms(w.latency_p50_ms)}, p95 {ms(w.latency_p95_ms)}")
    out(f"  FAQ questions {w.faq_questions}, answer rate {rate(w.answer_rate)}")
    if w.mean_top_score is not None:
        out(f"  mean top-1 score {w.mean_top_score:.3f}")
    out("  top-1 score histogram:")
    peak = max(stats.histogram_counts, default=0) or 1
    for low, high, count in zip(stats.histogram_edges, stats.histogram_edges[1:], stats.histogram_counts, strict=False):
        if count:
            out(f"    {low:5.2f}-{high:5.2f} {count:>7} {'#' * max(1, round(40 * count / peak))}")
    out("  per day:")
    for d in stats.days:
        score = "-" if d.mean_top_score is None else f"{d.mean_top_score:.3f}"
        out(
            f"    {d.day}  {d.queries:>7} queries  p95 {ms(d.latency_p95_ms):>10}  answered {rate(d.answer_rate):>6}  top-1 {score}"
        )
    out(f"  {stats.drift.message}")
    if args.plot:
        out(f"  plot: {args.plot}")
    return 0


def cmd_log_prune(args: argparse.Namespace) -> int:
    from semsim_pg.insights import parse_duration, prune_older_than

    parse_duration(args.older_than, "--older-than")  # refused before the database is opened
    store = open_store()
    pruned = prune_older_than(
        store.engine, args.older_than, collection=args.collection, progress=progress_enabled(args)
    )
    out(json.dumps(pruned.to_dict()) if args.json else pruned.summary())
    return 0


def _groups(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from semsim_pg.faq import FAQMatcher
    from semsim_pg.insights import parse_since, unanswered_groups

    start = parse_since(args.since)
    store = open_store()
    matcher = FAQMatcher(store, args.collection)
    groups = unanswered_groups(
        store.engine,
        args.collection,
        start,
        below=args.below,
        max_distance=args.max_distance,
        require_collection=lambda: store.get_collection(args.collection),
    )
    return matcher, groups


def cmd_faq_unanswered(args: argparse.Namespace) -> int:
    from semsim_pg.errors import CollectionNotFound
    from semsim_pg.insights import nearest_faq_entries

    matcher, groups = _groups(args)
    shown = groups[: max(args.limit, 0)]
    for group in shown:
        try:
            group.nearest = nearest_faq_entries(matcher, group)
        except CollectionNotFound:
            group.nearest = []
    if args.json:
        out(json.dumps([g.to_dict() for g in shown], indent=2))
        return 0
    if not groups:
        out(f"{args.collection}: no unanswered questions since {args.since}")
        return 0
    total = sum(g.size for g in groups)
    out(f"{args.collection}: {total} unanswered questions since {args.since} in {len(groups)} groups")
    for group in shown:
        text = group.representative.text or f"(text not logged, hash {group.representative.query_hash[:12]})"
        out(f"[{group.id}] {group.size} asked, {len(group.questions)} distinct: {short(text, 80)}")
        for q in group.examples:
            if q is not group.representative:
                out(f"    {q.times:>5}x  {short(q.text or q.query_hash[:12], 80)}")
        for n in group.nearest:
            out(f"    nearest: {n.score:.3f}  [{visible(n.faq_id)}] {short(n.question, 60)}")
    if len(groups) > len(shown):
        out(f"... {len(groups) - len(shown)} more groups (--limit)")
    out("promote one: semsim faq promote GROUP -c NAME --id NEW_ID --answer TEXT (or --id EXISTING_ID for a phrasing)")
    return 0


def cmd_faq_promote(args: argparse.Namespace) -> int:
    from semsim_pg.errors import AlreadyResolved
    from semsim_pg.insights import find_group, promote_group

    matcher, groups = _groups(args)
    group = find_group(groups, args.group)
    if group is None:
        raise AlreadyResolved(
            f"No unanswered group {args.group!r} in {args.collection!r} since {args.since}: it was promoted "
            "already, or the id is wrong; `semsim faq unanswered` lists the groups left."
        )
    entry = promote_group(
        matcher, group, faq_id=args.faq_id, answer=args.answer, question=args.question, category=args.category
    )
    if args.json:
        out(json.dumps({"group": group.id, "resolved": group.size, "entry": entry.to_dict()}))
    else:
        out(
            f"group {group.id} ({group.size} questions) -> FAQ entry {visible(entry.faq_id)}: {short(entry.question, 70)}"
        )
        if entry.promoted:  # a phrasing: kept by `faq import` without --replace, saved by `faq export`
            out(
                f"  promoted phrasings of {visible(entry.faq_id)}: {len(entry.promoted)}; `semsim faq export` saves them to a file"
            )
    return 0
