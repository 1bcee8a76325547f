"""Search insights: what people asked, what the FAQ could not answer, whether scores drift.

Off by default: ``SEMSIM_QUERY_LOG=1`` (``SEMSIM['QUERY_LOG'] = True`` in Django) makes
:meth:`DocumentStore.search <semsim_pg.store.DocumentStore.search>` and
:meth:`FAQMatcher.answer <semsim_pg.faq.FAQMatcher.answer>` log each query into
``semsim.query_log`` (:mod:`~semsim_pg.insights.log`, buffered, off the request path).
:mod:`~semsim_pg.insights.stats` turns the log into figures and a drift verdict,
:mod:`~semsim_pg.insights.unanswered` groups the unanswered questions and promotes a group into
the FAQ, and :func:`prune` keeps the log to a retention window.
"""

from semsim_pg.insights.log import KIND_FAQ, KIND_SEARCH, LoggedQuery, flush, log_query, not_logged, query_hash
from semsim_pg.insights.periods import parse_duration, parse_since
from semsim_pg.insights.prune import Pruned, prune, prune_older_than
from semsim_pg.insights.stats import DayFigures, Drift, QueryStats, WindowFigures, plot_stats, query_stats
from semsim_pg.insights.unanswered import (
    NearEntry,
    UnansweredGroup,
    UnansweredQuestion,
    find_group,
    nearest_faq_entries,
    promote_group,
    resolve_group,
    unanswered_groups,
)

__all__ = [
    "KIND_FAQ",
    "KIND_SEARCH",
    "DayFigures",
    "Drift",
    "LoggedQuery",
    "NearEntry",
    "Pruned",
    "QueryStats",
    "UnansweredGroup",
    "UnansweredQuestion",
    "WindowFigures",
    "find_group",
    "flush",
    "log_query",
    "nearest_faq_entries",
    "not_logged",
    "parse_duration",
    "parse_since",
    "plot_stats",
    "promote_group",
    "prune",
    "prune_older_than",
    "query_hash",
    "query_stats",
    "resolve_group",
    "unanswered_groups",
]
