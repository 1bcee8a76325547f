"""FAQ matching: find the FAQ entry a customer's question means, or say that none does.

* :mod:`semsim_pg.faq.ranking`: pure logic shared with the Django FAQ manager (one result per
  entry, best phrasing wins; the threshold and the "no answer" decision).
* :mod:`semsim_pg.faq.matcher`: :class:`FAQMatcher`, over a core collection.
* :mod:`semsim_pg.faq.files`: reading FAQ and query files, writing FAQ files.

Measuring a FAQ (accuracy, MRR, the threshold for a target precision) is
:func:`semsim_pg.evaluation.faq.evaluate_faq`, beside the other evaluations.
"""

from __future__ import annotations

from semsim_pg.faq.files import (
    FAQ_COLUMNS,
    PUBLISHED_COLUMN,
    FAQQuery,
    check_alternatives,
    guard_cell,
    kept_promoted_note,
    parse_published,
    read_faq_file,
    read_faq_queries,
    read_rows,
    unguard_cell,
    write_faq_file,
)
from semsim_pg.faq.matcher import FAQLoadResult, FAQMatcher
from semsim_pg.faq.ranking import (
    ALTERNATIVES_SEPARATOR,
    DEFAULT_RERANK_THRESHOLD,
    DEFAULT_THRESHOLD,
    KIND_ALTERNATIVE,
    KIND_QUESTION,
    MIN_CANDIDATES,
    SEARCH_FACTOR,
    Answer,
    FAQEntry,
    FAQMatch,
    best_per_entry,
    decide,
    rank_entries,
    resolve_threshold,
)

# The Django app imported the reader under its former private name; kept until it moves over.
_read_rows = read_rows

__all__ = [
    "ALTERNATIVES_SEPARATOR",
    "DEFAULT_RERANK_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "FAQ_COLUMNS",
    "KIND_ALTERNATIVE",
    "KIND_QUESTION",
    "MIN_CANDIDATES",
    "PUBLISHED_COLUMN",
    "SEARCH_FACTOR",
    "Answer",
    "FAQEntry",
    "FAQLoadResult",
    "FAQMatch",
    "FAQMatcher",
    "FAQQuery",
    "best_per_entry",
    "check_alternatives",
    "decide",
    "guard_cell",
    "kept_promoted_note",
    "parse_published",
    "rank_entries",
    "read_faq_file",
    "read_faq_queries",
    "read_rows",
    "resolve_threshold",
    "unguard_cell",
    "write_faq_file",
]
