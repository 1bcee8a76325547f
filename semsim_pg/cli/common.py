"""What the command modules share: printing, the store, progress, option parsing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from semsim_pg.errors import InvalidInput
from semsim_pg.validation import visible

if TYPE_CHECKING:
    from semsim_pg.store import DocumentStore, FilterValue

__all__ = [
    "add_rerank_option",
    "open_store",
    "out",
    "parse_filters",
    "print_hits",
    "progress_enabled",
    "rerank_arg",
    "short",
]


def out(text: str = "") -> None:
    """Print a line of the command's output (stdout; logs and progress go to stderr)."""
    sys.stdout.write(text + "\n")


def open_store(migrate: bool | None = None) -> DocumentStore:
    """The store the command works on (the configured database; imported here to keep --help fast)."""
    from semsim_pg.store import DocumentStore

    return DocumentStore(migrate=migrate)


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars unless ``-q``: the CLI logs at WARNING by default, so it cannot leave the
    choice to the log level as the library does."""
    return not getattr(args, "quiet", False)


def short(text: str, width: int = 90) -> str:
    """``text`` on one line, its control characters made visible, cut to ``width`` characters."""
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_filters(items: Sequence[str]) -> dict[str, FilterValue] | None:
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


def print_hits(hits: Sequence[Any], *, indent: str = "  ") -> None:
    """One line per search hit: rank, similarity, id and the start of the text (of its best passage)."""
    if not hits:
        out(f"{indent}(no hits)")
        return
    ids = [visible(h.external_id) for h in hits]
    width = max(len(i) for i in ids)
    for rank, (hit, hit_id) in enumerate(zip(hits, ids, strict=True), start=1):
        text = hit_text(hit, 100)
        if getattr(hit, "lexical_score", None) is not None:
            # lexical or hybrid: the ranking score, then each side's rank ("-": not in its top N)
            ranks = "  ".join(
                f"{side} {'-' if r is None else r:>3}"
                for side, r in (("dense", hit.dense_rank), ("words", hit.lexical_rank))
            )
            out(f"{indent}{rank:>2}. {hit.score:7.4f}  sim {hit.similarity:6.3f}  {ranks}  {hit_id:<{width}}  {text}")
        else:
            out(f"{indent}{rank:>2}. {hit.similarity:6.3f}  {hit_id:<{width}}  {text}")


def hit_text(hit: Any, width: int) -> str:
    """The start of a hit's best passage (``[p2]`` before it when it is not the whole text) on
    one line, cut at ``width``."""
    text = str(getattr(hit, "passage_text", hit.text))
    if text != hit.text:
        text = f"[p{hit.passage}] {text}"
    return short(text, width)


def add_rerank_option(p: argparse.ArgumentParser) -> None:
    """``--rerank [MODEL]``: absent, no reranking; alone, the configured cross-encoder; with MODEL, that one."""
    p.add_argument(
        "--rerank",
        nargs="?",
        const="",
        metavar="MODEL",
        help="rerank with a cross-encoder (a directory or name; alone: SEMSIM_CROSS_ENCODER)",
    )


def rerank_arg(value: str | None) -> bool | str:
    """``--rerank``'s value as the library takes it: False, True (the configured one) or a model."""
    if value is None:
        return False
    return value or True
