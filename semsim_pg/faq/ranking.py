"""Ranking FAQ phrasings: pure logic shared by the core matcher and the Django FAQ manager.

An entry has a question, an answer and optional alternative phrasings; each phrasing is searched
like the question, and an entry is reported once, with the score of its best phrasing
(:func:`rank_entries`, :func:`best_per_entry`). An answer is given only when that score clears a
confidence threshold (:func:`decide`, :func:`resolve_threshold`), so a site can turn "no answer"
into "please contact support" instead of showing a wrong entry. Nothing here touches a database:
callers bring their own candidate rows.

Scores: without a reranker an entry's score is the bi-encoder's cosine similarity; with one it is
the cross-encoder's score, on another scale, so each has its own default threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from semsim_pg.errors import InvalidInput, InvalidQuery
from semsim_pg.settings import get_settings
from semsim_pg.validation import check_k

if TYPE_CHECKING:
    from semsim_pg.rerank import Reranker

__all__ = [
    "ALTERNATIVES_SEPARATOR",
    "DEFAULT_RERANK_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "KIND_ALTERNATIVE",
    "KIND_QUESTION",
    "MIN_CANDIDATES",
    "SEARCH_FACTOR",
    "Answer",
    "FAQEntry",
    "FAQMatch",
    "best_per_entry",
    "decide",
    "rank_entries",
    "resolve_threshold",
]

E = TypeVar("E")
C = TypeVar("C")

#: Default confidence threshold on the bi-encoder's cosine similarity (all-MiniLM-L6-v2), chosen
#: with `semsim eval faq` on the shipped FAQ set (semsim_pg/data/faq_*.tsv): the lowest value at
#: which 90% of answered questions got the right entry. Override per call, or with the
#: ``faq_threshold`` setting (SEMSIM_FAQ_THRESHOLD); measure your own FAQ with `semsim eval faq`.
DEFAULT_THRESHOLD = 0.55
#: Default threshold on a cross-encoder's score (a sigmoid output in 0..1 for one-label models).
DEFAULT_RERANK_THRESHOLD = 0.5
#: Phrasings fetched per wanted entry: an entry with several phrasings near the question takes
#: several of the nearest hits, and k distinct entries must survive the collapse.
SEARCH_FACTOR = 5
MIN_CANDIDATES = 20

KIND_QUESTION = "question"
KIND_ALTERNATIVE = "alternative"
ALTERNATIVES_SEPARATOR = "|"


@dataclass(frozen=True)
class FAQEntry:
    """One FAQ entry. ``alternatives`` are other phrasings of the question that also match;
    ``promoted`` names those of them that promoting unanswered questions added (a file import
    without ``replace`` keeps them when the file does not list them)."""

    faq_id: str
    question: str
    answer: str
    category: str | None = None
    alternatives: tuple[str, ...] = ()
    promoted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("faq_id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(f"An FAQ entry needs a non-empty {name}, got {value!r} (entry {self.faq_id!r}).")
        if self.category is not None and not isinstance(self.category, str):
            raise InvalidInput(f"FAQ {self.faq_id!r}: category must be a text or None, got {self.category!r}.")
        alternatives = (self.alternatives,) if isinstance(self.alternatives, str) else tuple(self.alternatives)
        for alternative in alternatives:
            if not isinstance(alternative, str):
                raise InvalidInput(f"FAQ {self.faq_id!r}: alternative phrasings must be texts, got {alternative!r}.")
        object.__setattr__(self, "alternatives", tuple(a.strip() for a in alternatives if a.strip()))
        object.__setattr__(self, "category", self.category.strip() or None if self.category else None)
        promoted = (self.promoted,) if isinstance(self.promoted, str) else tuple(self.promoted)
        known = {a.casefold() for a in self.alternatives}
        for text in promoted:
            if not isinstance(text, str) or text.strip().casefold() not in known:
                raise InvalidInput(
                    f"FAQ {self.faq_id!r}: promoted phrasing {text!r} is not one of its alternatives; "
                    "list it in the alternatives too."
                )
        object.__setattr__(self, "promoted", tuple(dict.fromkeys(t.strip() for t in promoted)))

    def phrasings(self) -> list[tuple[str, str]]:
        """(kind, text) for the question and each distinct alternative, question first."""
        seen = {self.question.strip().casefold()}
        result = [(KIND_QUESTION, self.question)]
        for alternative in self.alternatives:
            folded = alternative.casefold()
            if folded not in seen:
                seen.add(folded)
                result.append((KIND_ALTERNATIVE, alternative))
        return result

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["alternatives"] = list(self.alternatives)
        data["promoted"] = list(self.promoted)
        return data


@dataclass(frozen=True)
class FAQMatch(Generic[E]):
    """An entry found for a question. ``score`` ranks and is compared with the threshold: the
    cross-encoder's ``rerank_score`` when reranked, else the bi-encoder's ``similarity``."""

    entry: E
    score: float
    similarity: float | None
    rerank_score: float | None
    #: the phrasing that matched best, and whether it is the question or an alternative
    matched_text: str
    matched_kind: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": _entry_dict(self.entry),
            "score": self.score,
            "similarity": self.similarity,
            "rerank_score": self.rerank_score,
            "matched_text": self.matched_text,
            "matched_kind": self.matched_kind,
        }


@dataclass(frozen=True)
class Answer(Generic[E]):
    """The outcome of asking: ``entry`` and ``score`` when ``answered``; otherwise ``entry`` is None
    (a "no answer" the site can turn into "please contact support") and ``matches`` still shows
    what came closest and how close."""

    question: str
    entry: E | None
    score: float | None
    answered: bool
    threshold: float
    matches: tuple[FAQMatch[E], ...] = ()

    def __bool__(self) -> bool:
        return self.answered

    @property
    def best(self) -> FAQMatch[E] | None:
        return self.matches[0] if self.matches else None

    @property
    def reason(self) -> str:
        if self.answered:
            return "answered"
        if not self.matches:
            return "no FAQ entries to match"
        return f"best score {self.score:.3f} is below the threshold {self.threshold:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answered": self.answered,
            "entry": None if self.entry is None else _entry_dict(self.entry),
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
            "matches": [m.to_dict() for m in self.matches],
        }


def _entry_dict(entry: Any) -> Any:
    to_dict = getattr(entry, "to_dict", None)
    return to_dict() if callable(to_dict) else str(entry)


# pure logic shared with Django -----------------------------------------------------------------
def best_per_entry(
    candidates: Iterable[C],
    *,
    key: Callable[[C], Hashable],
    score: Callable[[C], float],
    k: int | None = None,
) -> list[C]:
    """Keep each entry's best-scoring candidate, best first; at most ``k``. Ties keep input order."""
    best: dict[Hashable, tuple[float, int, C]] = {}
    for position, candidate in enumerate(candidates):
        entry_key = key(candidate)
        value = float(score(candidate))
        held = best.get(entry_key)
        if held is None or value > held[0]:
            best[entry_key] = (value, position, candidate)
    ranked = sorted(best.values(), key=lambda item: (-item[0], item[1]))
    if k is not None:
        ranked = ranked[:k]
    return [candidate for _, _, candidate in ranked]


def rank_entries(
    question: str,
    candidates: Sequence[C],
    *,
    entry_of: Callable[[C], E],
    key_of: Callable[[E], Hashable],
    text_of: Callable[[C], str],
    similarity_of: Callable[[C], float],
    kind_of: Callable[[C], str] | None = None,
    k: int = 3,
    reranker: Reranker | None = None,
) -> list[FAQMatch[E]]:
    """Phrasing-level candidates (best bi-encoder match first) to at most ``k`` entries, each once.

    With a ``reranker`` the cross-encoder reads (question, phrasing) for every candidate and its
    score decides. The Django manager calls this with its own rows; :class:`FAQMatcher` with
    core search hits.
    """
    check_k(k)
    kind = kind_of or (lambda _: KIND_QUESTION)
    scored: list[tuple[C, float | None, float]] = []  # (candidate, rerank score, score)
    if reranker is not None and candidates:
        for item in reranker.rerank(question, candidates, top_k=None, text_of=text_of, similarity_of=similarity_of):
            # The order and the threshold follow the blended score (the reranker's record's weight).
            scored.append((item.hit, item.rerank_score, item.rerank_score if item.score is None else item.score))
    else:
        scored = [(c, None, float(similarity_of(c))) for c in candidates]
    kept = best_per_entry(scored, key=lambda item: key_of(entry_of(item[0])), score=lambda item: item[2], k=k)
    return [
        FAQMatch(
            entry=entry_of(c),
            score=score,
            similarity=float(similarity_of(c)),
            rerank_score=rerank_score,
            matched_text=text_of(c),
            matched_kind=kind(c),
        )
        for c, rerank_score, score in kept
    ]


def decide(question: str, matches: Sequence[FAQMatch[E]], threshold: float) -> Answer[E]:
    """Answer with the best match when its score reaches ``threshold``; otherwise "no answer"."""
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise InvalidQuery(f"The threshold must be a number, got {threshold!r}.")
    best = matches[0] if matches else None
    answered = best is not None and best.score >= threshold
    return Answer(
        question=question,
        entry=best.entry if answered and best is not None else None,
        score=best.score if best is not None else None,
        answered=answered,
        threshold=float(threshold),
        matches=tuple(matches),
    )


def resolve_threshold(threshold: float | None = None, *, reranked: bool = False) -> float:
    """The threshold to use: the per-call one, else the setting, else the module default.

    Settings (:class:`~semsim_pg.settings.Settings`, read from ``SEMSIM_FAQ_THRESHOLD`` and
    ``SEMSIM_FAQ_RERANK_THRESHOLD`` like every other setting): ``faq_threshold`` for bi-encoder
    similarity, ``faq_rerank_threshold`` for cross-encoder scores.
    """
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InvalidQuery(f"The threshold must be a number, got {threshold!r}.")
        return float(threshold)
    settings = get_settings()
    configured = settings.faq_rerank_threshold if reranked else settings.faq_threshold
    if configured is None:
        return DEFAULT_RERANK_THRESHOLD if reranked else DEFAULT_THRESHOLD
    return float(configured)
