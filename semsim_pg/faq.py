"""FAQ matching: find the FAQ entry a customer's question means, or say that none does.

An entry has a question, an answer and optional alternative phrasings; each phrasing is searched
like the question, and an entry is reported once, with the score of its best phrasing. An answer
is given only when that score clears a confidence threshold, so a site can turn "no answer" into
"please contact support" instead of showing a wrong entry.

Two layers:

* Pure logic shared with the Django FAQ manager, which brings its own candidate rows:
  :func:`rank_entries` (optional rerank, one result per entry, best phrasing wins),
  :func:`decide` (threshold, "no answer"), :func:`resolve_threshold`, :class:`FAQMatch`,
  :class:`Answer`. These never touch a database.
* :class:`FAQMatcher`, over a core collection (one document per phrasing), plus reading FAQ and
  query files and :func:`evaluate_faq`, which measures accuracy@1/@5 and MRR and picks the
  threshold that reaches a target precision.

Scores: without a reranker an entry's score is the bi-encoder's cosine similarity; with one it is
the cross-encoder's score, on another scale, so each has its own default threshold.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import sqlalchemy as sa

from semsim_pg.encoder import text_hash
from semsim_pg.errors import ConfigurationError, InputFileError, InvalidInput, InvalidQuery
from semsim_pg.settings import get_settings
from semsim_pg.store import MAX_K, Document

if TYPE_CHECKING:
    from semsim_pg.rerank import Reranker
    from semsim_pg.store import Collection, DocumentStore, SearchHit, UpsertResult

__all__ = [
    "DEFAULT_RERANK_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "Answer",
    "FAQEntry",
    "FAQEvaluation",
    "FAQLoadResult",
    "FAQMatch",
    "FAQMatcher",
    "FAQQuery",
    "ThresholdPoint",
    "best_per_entry",
    "decide",
    "evaluate_faq",
    "rank_entries",
    "read_faq_file",
    "read_faq_queries",
    "recommend_threshold",
    "resolve_threshold",
    "threshold_sweep",
]

logger = logging.getLogger(__name__)

E = TypeVar("E")
C = TypeVar("C")

#: Default confidence threshold on the bi-encoder's cosine similarity (all-MiniLM-L6-v2), chosen
#: with `semsim eval faq` on the shipped FAQ set (semsim_pg/data/faq_*.tsv): the lowest value at
#: which 90% of answered questions got the right entry. Override per call, or with
#: SEMSIM_FAQ_THRESHOLD; measure your own FAQ with `semsim eval faq`.
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

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# entries, matches, answers ------------------------------------------------------------------
@dataclass(frozen=True)
class FAQEntry:
    """One FAQ entry. ``alternatives`` are other phrasings of the question that also match."""

    faq_id: str
    question: str
    answer: str
    category: str | None = None
    alternatives: tuple[str, ...] = ()

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
    _check_k(k)
    kind = kind_of or (lambda _: KIND_QUESTION)
    scored: list[tuple[C, float | None, float]] = []  # (candidate, rerank score, score)
    if reranker is not None and candidates:
        for item in reranker.rerank(question, candidates, top_k=None, text_of=text_of, similarity_of=similarity_of):
            scored.append((item.hit, item.rerank_score, item.rerank_score))
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

    Settings: ``faq_threshold`` / ``SEMSIM_FAQ_THRESHOLD`` for bi-encoder similarity and
    ``faq_rerank_threshold`` / ``SEMSIM_FAQ_RERANK_THRESHOLD`` for cross-encoder scores.
    """
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InvalidQuery(f"The threshold must be a number, got {threshold!r}.")
        return float(threshold)
    name = "faq_rerank_threshold" if reranked else "faq_threshold"
    configured = getattr(get_settings(), name, None)
    if configured is None:
        raw = os.environ.get(f"SEMSIM_{name.upper()}", "").strip()
        if raw:
            try:
                configured = float(raw)
            except ValueError:
                raise ConfigurationError(f"SEMSIM_{name.upper()} must be a number, got {raw!r}.") from None
    if configured is None:
        return DEFAULT_RERANK_THRESHOLD if reranked else DEFAULT_THRESHOLD
    return float(configured)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")


# the core matcher ---------------------------------------------------------------------------
@dataclass
class FAQLoadResult:
    """What :meth:`FAQMatcher.load` did: the upsert's counts plus phrasings removed."""

    entries: int = 0
    phrasings: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    encoded: int = 0
    removed: int = 0

    @classmethod
    def from_upsert(cls, entries: int, phrasings: int, upsert: UpsertResult, removed: int) -> FAQLoadResult:
        return cls(entries, phrasings, upsert.inserted, upsert.updated, upsert.unchanged, upsert.encoded, removed)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _document_id(faq_id: str, kind: str, text: str) -> str:
    # The question keeps a fixed id (an edit re-encodes it in place); an alternative is named by
    # its text, so reordering alternatives encodes nothing and a changed one replaces the old.
    return f"{faq_id}#q" if kind == KIND_QUESTION else f"{faq_id}#alt-{text_hash(text)[:16]}"


def _documents(entry: FAQEntry) -> list[Document]:
    # Every phrasing carries the whole entry, so a hit turns into an FAQEntry without a query.
    base = {
        "faq_id": entry.faq_id,
        "question": entry.question,
        "answer": entry.answer,
        "category": entry.category,
        "alternatives": list(entry.alternatives),
    }
    return [
        Document(_document_id(entry.faq_id, kind, text), text, {**base, "kind": kind})
        for kind, text in entry.phrasings()
    ]


def _entry_from_metadata(metadata: dict[str, Any]) -> FAQEntry:
    return FAQEntry(
        faq_id=str(metadata["faq_id"]),
        question=str(metadata["question"]),
        answer=str(metadata["answer"]),
        category=metadata.get("category"),
        alternatives=tuple(metadata.get("alternatives") or ()),
    )


class FAQMatcher:
    """FAQ matching over a core collection: one document per question or alternative phrasing.

    ``threshold`` and ``reranker`` set this matcher's defaults; each call can override them.
    """

    def __init__(
        self,
        store: DocumentStore,
        collection: str,
        *,
        threshold: float | None = None,
        reranker: Reranker | str | None = None,
        model: str | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.threshold = threshold
        self.reranker = reranker
        self.model = model

    # loading ----------------------------------------------------------------------------------
    def load(
        self, entries: Iterable[FAQEntry], *, replace: bool = False, progress: bool | None = None
    ) -> FAQLoadResult:
        """Add or update entries. Unchanged phrasings are not re-encoded (the store compares text
        hashes); phrasings an entry no longer has are removed. ``replace`` also removes entries
        that are not in ``entries``, so the collection ends up holding exactly them."""
        entries = list(entries)
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, FAQEntry):
                raise InvalidInput(f"Item #{i} is a {type(entry).__name__}, not an FAQEntry.")
            if entry.faq_id in seen:
                raise InvalidInput(
                    f"FAQ id {entry.faq_id!r} appears twice (items #{seen[entry.faq_id]} and #{i}): ids must be unique."
                )
            seen[entry.faq_id] = i
        documents = [doc for entry in entries for doc in _documents(entry)]
        collection = self.store.create_collection(self.collection, model=self.model)
        wanted = {doc.external_id for doc in documents}
        stale = [
            external_id
            for external_id, faq_id in self._stored_ids(collection)
            if external_id not in wanted and (replace or faq_id in seen)
        ]
        upserted = self.store.upsert(collection, documents, progress=progress, total=len(documents))
        removed = self.store.delete(collection, stale) if stale else 0
        result = FAQLoadResult.from_upsert(len(entries), len(documents), upserted, removed)
        logger.info("loaded %d FAQ entries into %s: %s", len(entries), collection.name, result.to_dict())
        return result

    def remove(self, faq_ids: Iterable[str]) -> int:
        """Remove entries (all their phrasings); returns how many phrasings went."""
        collection = self.store.get_collection(self.collection)
        ids = set(faq_ids)
        stale = [external_id for external_id, faq_id in self._stored_ids(collection) if faq_id in ids]
        return self.store.delete(collection, stale) if stale else 0

    def _stored_ids(self, collection: Collection) -> list[tuple[str, str | None]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT external_id, metadata->>'faq_id' FROM semsim.documents WHERE collection_id = :cid"),
                {"cid": collection.id},
            ).all()
        return [(str(row[0]), row[1]) for row in rows]

    def entries(self) -> list[FAQEntry]:
        """Every entry in the collection, by id."""
        collection = self.store.get_collection(self.collection)
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT DISTINCT ON (metadata->>'faq_id') metadata FROM semsim.documents"
                    " WHERE collection_id = :cid AND metadata ? 'faq_id'"
                    " ORDER BY metadata->>'faq_id', external_id"
                ),
                {"cid": collection.id},
            ).scalars()
            return [_entry_from_metadata(metadata) for metadata in rows]

    # matching ---------------------------------------------------------------------------------
    def _reranker(self, rerank: bool | str | Reranker | None) -> Reranker | None:
        from semsim_pg.rerank import Reranker, get_reranker

        if rerank is None or rerank is False:
            return None
        if isinstance(rerank, Reranker):
            return rerank
        if isinstance(rerank, str):
            return get_reranker(rerank)
        if isinstance(self.reranker, Reranker):
            return self.reranker
        return get_reranker(self.reranker)

    def _rank(
        self, question: str, hits: Sequence[SearchHit], k: int, reranker: Reranker | None
    ) -> list[FAQMatch[FAQEntry]]:
        return rank_entries(
            question,
            hits,
            entry_of=lambda hit: _entry_from_metadata(hit.metadata),
            key_of=lambda entry: entry.faq_id,
            text_of=lambda hit: hit.text,
            similarity_of=lambda hit: hit.similarity,
            kind_of=lambda hit: str(hit.metadata.get("kind", KIND_QUESTION)),
            k=k,
            reranker=reranker,
        )

    def match(
        self,
        question: str,
        k: int = 3,
        *,
        rerank: bool | str | Reranker = False,
        category: str | Sequence[str] | None = None,
        candidates: int | None = None,
    ) -> list[FAQMatch[FAQEntry]]:
        """The ``k`` best entries for ``question``, each once with its best phrasing's score.

        ``rerank`` True uses this matcher's (or the configured) cross-encoder; a name or path or
        a :class:`Reranker` names one. ``candidates``: phrasings fetched from the index (default
        ``max(k * 5, 20)``; more are fetched when fewer than k distinct entries come back).
        """
        return self.match_many([question], k, rerank=rerank, category=category, candidates=candidates)[0]

    def match_many(
        self,
        questions: Sequence[str],
        k: int = 3,
        *,
        rerank: bool | str | Reranker = False,
        category: str | Sequence[str] | None = None,
        candidates: int | None = None,
    ) -> list[list[FAQMatch[FAQEntry]]]:
        """:meth:`match` for many questions: encoded in one batch, searched on one connection."""
        _check_k(k)
        for i, question in enumerate(questions):
            if not isinstance(question, str) or not question.strip():
                raise InvalidQuery(f"Question #{i + 1} is empty: give a text with at least one word.")
        if candidates is not None and (
            isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1
        ):
            raise InvalidQuery(f"candidates must be a whole number of at least 1, got {candidates!r}.")
        reranker = self._reranker(rerank)
        if reranker is not None:
            reranker.load()  # a cross-encoder that cannot load fails before any search work
        collection = self.store.get_collection(self.collection)
        wanted = min(MAX_K, candidates or max(k * SEARCH_FACTOR, MIN_CANDIDATES))
        filters = (
            None if category is None else {"category": [category] if isinstance(category, str) else list(category)}
        )
        all_hits = self.store.search_many(collection, list(questions), k=wanted, filter=filters)
        results = []
        for question, hits in zip(questions, all_hits, strict=True):
            size = wanted
            # Many phrasings of a few entries can crowd the candidates: widen until k entries
            # survive or the collection has no more.
            while len({h.metadata.get("faq_id") for h in hits}) < k and len(hits) == size and size < MAX_K:
                size = min(MAX_K, size * 4)
                hits = self.store.search(collection, question, k=size, filter=filters)
            results.append(self._rank(question, hits, k, reranker))
        return results

    def answer(
        self,
        question: str,
        threshold: float | None = None,
        *,
        k: int = 3,
        rerank: bool | str | Reranker = False,
        category: str | Sequence[str] | None = None,
    ) -> Answer[FAQEntry]:
        """The best entry when its score clears the threshold, else a "no answer" result.

        ``threshold`` None: this matcher's, else the setting, else the default for the score
        in use (bi-encoder similarity, or the cross-encoder's score when reranking).
        """
        reranker = self._reranker(rerank)
        limit = resolve_threshold(threshold if threshold is not None else self.threshold, reranked=reranker is not None)
        matches = self.match(question, k, rerank=reranker or False, category=category)
        return decide(question, matches, limit)


# files ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FAQQuery:
    """An evaluation query and the entry that answers it (None: no entry should answer it)."""

    query: str
    faq_id: str | None
    line: int = 0


def _delimiter(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    raise InputFileError(f"{path}: cannot tell the format from the extension {path.suffix!r}; name it .tsv or .csv.")


def _read_rows(
    path: str | Path, required: Sequence[str], optional: Sequence[str]
) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, row) for each non-blank row, columns named case-insensitively; errors name the line."""
    path = Path(path)
    delimiter = _delimiter(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file.")
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise InputFileError(f"{path}: is empty; expected a header line ({', '.join(required)}).")
                columns = [name.strip().lower() for name in header]
                missing = [name for name in required if name not in columns]
                if missing:
                    raise InputFileError(
                        f"{path}, line 1: the header ({', '.join(header)}) lacks {', '.join(missing)}; "
                        f"expected {', '.join(required)}[, {', '.join(optional)}]."
                    )
                known = set(required) | set(optional)
                unknown = [name for name in columns if name not in known]
                if unknown:
                    raise InputFileError(
                        f"{path}, line 1: unknown column(s) {', '.join(unknown)}; expected {', '.join(required)}"
                        f"[, {', '.join(optional)}]."
                    )
                for values in reader:
                    line = reader.line_num
                    if not any(value.strip() for value in values):
                        continue
                    if len(values) != len(columns):
                        raise InputFileError(
                            f"{path}, line {line}: {len(values)} fields, but the header has {len(columns)} "
                            f"({', '.join(header)}). Check for a missing or extra {'tab' if delimiter == chr(9) else 'comma'}"
                            " or an unclosed quote."
                        )
                    yield line, {name: value.strip() for name, value in zip(columns, values, strict=True)}
            except csv.Error as exc:
                raise InputFileError(f"{path}, line {reader.line_num}: malformed {kind} ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it: {exc.strerror}.") from None


def read_faq_file(path: str | Path) -> list[FAQEntry]:
    """Entries from a .tsv/.csv with header ``faq_id, question, answer[, category][, alternatives]``
    (alternatives separated by "|"). The whole file is read and checked before anything is returned,
    so a caller that loads the result imports nothing from a malformed file."""
    entries: list[FAQEntry] = []
    lines: dict[str, int] = {}
    for line, row in _read_rows(path, ("faq_id", "question", "answer"), ("category", "alternatives")):
        for name in ("faq_id", "question", "answer"):
            if not row[name]:
                raise InputFileError(f"{path}, line {line}: the {name} is empty.")
        faq_id = row["faq_id"]
        if faq_id in lines:
            raise InputFileError(
                f"{path}, line {line}: faq_id {faq_id!r} appears again (first on line {lines[faq_id]}); ids must be "
                "unique: put other phrasings in the alternatives column instead."
            )
        lines[faq_id] = line
        alternatives = tuple(a.strip() for a in row.get("alternatives", "").split(ALTERNATIVES_SEPARATOR) if a.strip())
        entries.append(FAQEntry(faq_id, row["question"], row["answer"], row.get("category") or None, alternatives))
    if not entries:
        raise InputFileError(f"{path}: holds no FAQ entries, only a header.")
    return entries


def read_faq_queries(path: str | Path, known_ids: Iterable[str] | None = None) -> list[FAQQuery]:
    """Evaluation queries from a .tsv/.csv with header ``query, faq_id``. An empty faq_id marks a
    question no entry should answer (it counts against precision when one is answered)."""
    known = None if known_ids is None else set(known_ids)
    queries: list[FAQQuery] = []
    for line, row in _read_rows(path, ("query", "faq_id"), ()):
        if not row["query"]:
            raise InputFileError(f"{path}, line {line}: the query is empty.")
        faq_id = row["faq_id"] or None
        if faq_id is not None and known is not None and faq_id not in known:
            raise InputFileError(
                f"{path}, line {line}: faq_id {faq_id!r} is not in the FAQ file. Fix the id, or leave it empty "
                "for a question that no entry should answer."
            )
        queries.append(FAQQuery(row["query"], faq_id, line))
    if not queries:
        raise InputFileError(f"{path}: holds no queries, only a header.")
    return queries


# evaluation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThresholdPoint:
    threshold: float
    #: share of all queries answered (top score >= threshold)
    answered: float
    #: share of answered queries whose top entry is right (None when none is answered)
    precision: float | None
    answered_count: int
    correct_count: int


def threshold_sweep(
    top_scores: Sequence[float], top_correct: Sequence[bool], thresholds: Iterable[float]
) -> list[ThresholdPoint]:
    """For each threshold: how many queries would be answered and how many of those correctly."""
    scores = np.asarray(top_scores, dtype=np.float64)
    correct = np.asarray(top_correct, dtype=bool)
    if scores.shape != correct.shape:
        raise InvalidInput(f"{scores.size} scores but {correct.size} correctness flags.")
    total = max(scores.size, 1)
    points = []
    for threshold in thresholds:
        answered = scores >= threshold
        n = int(answered.sum())
        right = int((answered & correct).sum())
        points.append(ThresholdPoint(round(float(threshold), 6), n / total, right / n if n else None, n, right))
    return points


def recommend_threshold(points: Sequence[ThresholdPoint], target_precision: float) -> float | None:
    """The lowest threshold whose precision among answered queries reaches the target (None: none does)."""
    reaching = [p.threshold for p in points if p.precision is not None and p.precision >= target_precision]
    return min(reaching) if reaching else None


def _grids(scores: Sequence[float]) -> tuple[list[float], list[float]]:
    """A coarse grid to print and a fine one to recommend from, over the scores' scale."""
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if low >= 0.0 and high <= 1.0:
        return [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)], [round(x, 3) for x in np.arange(0.0, 1.0001, 0.005)]
    return [float(x) for x in np.linspace(low, high, 21)], [float(x) for x in np.linspace(low, high, 401)]


@dataclass
class FAQEvaluation:
    """`semsim eval faq`'s result. Accuracy and MRR count queries that have an entry; the threshold
    table counts every query (one that no entry should answer is wrong whenever it is answered)."""

    queries: int
    in_scope: int
    accuracy_at_1: float
    accuracy_at_5: float
    mrr_at_10: float
    scored_by: str
    model: str
    reranker: str | None
    target_precision: float
    recommended_threshold: float | None
    #: the recommended threshold's answered share and precision
    recommended: ThresholdPoint | None
    thresholds: list[ThresholdPoint] = field(default_factory=list)
    entries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_faq(
    store: DocumentStore,
    entries: Sequence[FAQEntry],
    queries: Sequence[FAQQuery],
    *,
    rerank: bool | str | Reranker = False,
    target_precision: float = 0.9,
    thresholds: Sequence[float] | None = None,
    collection: str | None = None,
    candidates: int | None = None,
    progress: bool | None = None,
) -> FAQEvaluation:
    """Load ``entries`` into a collection, ask every query and measure.

    Without ``collection`` a temporary one is made and dropped afterwards; a named one is kept
    (loading it again later encodes only what changed).
    """
    from semsim_pg.evaluation.metrics import accuracy_at_k, mrr_at_k

    if not 0.0 < target_precision <= 1.0:
        raise InvalidInput(f"target_precision must be in (0, 1], got {target_precision}.")
    if not queries:
        raise InvalidInput("No queries to evaluate.")
    known = {entry.faq_id for entry in entries}
    for query in queries:
        if query.faq_id is not None and query.faq_id not in known:
            raise InvalidInput(f"Query {query.query!r} names faq_id {query.faq_id!r}, which is not among the entries.")
    name = collection or f"semsim-faq-eval-{uuid.uuid4().hex[:10]}"
    matcher = FAQMatcher(store, name)
    reranker = matcher._reranker(rerank)
    if reranker is not None:
        reranker.load()  # fail before encoding anything
    start = time.perf_counter()
    try:
        matcher.load(entries, replace=collection is not None, progress=progress)
        matches: list[list[FAQMatch[FAQEntry]]] = []
        bar = _progress(progress, total=len(queries))
        batch = 256
        for offset in range(0, len(queries), batch):
            chunk = [q.query for q in queries[offset : offset + batch]]
            matches += matcher.match_many(chunk, 10, rerank=reranker or False, candidates=candidates)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        model = store.get_collection(name).model_name
    finally:
        if collection is None:
            store.drop_collection(name)
    seconds = time.perf_counter() - start

    at1: list[float] = []
    at5: list[float] = []
    rr: list[float] = []
    top_scores: list[float] = []
    top_correct: list[bool] = []
    for query, found in zip(queries, matches, strict=True):
        ranked = [m.entry.faq_id for m in found]
        if query.faq_id is not None:
            relevant = {query.faq_id: 1.0}
            at1.append(accuracy_at_k(ranked, relevant, 1))
            at5.append(accuracy_at_k(ranked, relevant, 5))
            rr.append(mrr_at_k(ranked, relevant, 10))
        top_scores.append(found[0].score if found else -math.inf)
        top_correct.append(bool(found) and query.faq_id is not None and ranked[0] == query.faq_id)

    finite = [s for s in top_scores if math.isfinite(s)]
    coarse, fine = _grids(finite)
    table = threshold_sweep(top_scores, top_correct, thresholds if thresholds is not None else coarse)
    fine_points = threshold_sweep(top_scores, top_correct, sorted(set(fine) | {p.threshold for p in table}))
    recommended = recommend_threshold(fine_points, target_precision)
    point = next((p for p in fine_points if p.threshold == recommended), None)
    return FAQEvaluation(
        queries=len(queries),
        in_scope=len(at1),
        accuracy_at_1=float(np.mean(at1)) if at1 else 0.0,
        accuracy_at_5=float(np.mean(at5)) if at5 else 0.0,
        mrr_at_10=float(np.mean(rr)) if rr else 0.0,
        scored_by="rerank_score" if reranker is not None else "similarity",
        model=model,
        reranker=reranker.name if reranker is not None else None,
        target_precision=target_precision,
        recommended_threshold=recommended,
        recommended=point,
        thresholds=table,
        entries=len(entries),
        seconds=round(seconds, 2),
    )


def _progress(enabled: bool | None, total: int) -> Any:
    if enabled is None:
        enabled = logger.getEffectiveLevel() <= logging.INFO
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="faq queries", unit="query")
