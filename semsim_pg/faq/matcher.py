"""FAQ matching over a core collection: one document per question or alternative phrasing.

:class:`FAQMatcher` loads entries (re-encoding only changed phrasings), removes them, and asks
questions through the store's search; ranking and the answer decision are
:mod:`semsim_pg.faq.ranking`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.encoder import text_hash
from semsim_pg.errors import InvalidInput, InvalidQuery, NotAnFAQCollection
from semsim_pg.faq.ranking import (
    KIND_QUESTION,
    MIN_CANDIDATES,
    SEARCH_FACTOR,
    Answer,
    FAQEntry,
    FAQMatch,
    decide,
    rank_entries,
    resolve_threshold,
)
from semsim_pg.insights.log import log_answer, not_logged
from semsim_pg.store import Document
from semsim_pg.validation import MAX_K, check_k, check_many

if TYPE_CHECKING:
    from semsim_pg.rerank import Reranker
    from semsim_pg.store import Collection, DocumentStore, SearchHit, UpsertResult

__all__ = ["FAQLoadResult", "FAQMatcher"]

logger = logging.getLogger(__name__)


@dataclass
class FAQLoadResult:
    """What :meth:`FAQMatcher.load` did: the upsert's counts, phrasings removed, and promoted
    phrasings kept although the entries given did not list them (counted in ``phrasings`` too)."""

    entries: int = 0
    phrasings: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    encoded: int = 0
    removed: int = 0
    kept_promoted: int = 0

    @classmethod
    def from_upsert(
        cls, entries: int, phrasings: int, upsert: UpsertResult, removed: int, kept_promoted: int = 0
    ) -> FAQLoadResult:
        return cls(
            entries,
            phrasings,
            upsert.inserted,
            upsert.updated,
            upsert.unchanged,
            upsert.encoded,
            removed,
            kept_promoted,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _document_id(faq_id: str, kind: str, text: str) -> str:
    # The question keeps a fixed id (an edit re-encodes it in place); an alternative is named by
    # its text, so reordering alternatives encodes nothing and a changed one replaces the old.
    return f"{faq_id}#q" if kind == KIND_QUESTION else f"{faq_id}#alt-{text_hash(text)[:16]}"


#: the entry's promoted alternatives, in every phrasing's metadata (only when it has some)
_PROMOTED_LIST = "promoted_alternatives"


def _documents(entry: FAQEntry) -> list[Document]:
    # Every phrasing carries the whole entry, so a hit turns into an FAQEntry without a query.
    base: dict[str, Any] = {
        "faq_id": entry.faq_id,
        "question": entry.question,
        "answer": entry.answer,
        "category": entry.category,
        "alternatives": list(entry.alternatives),
    }
    # The promotion marks are written only where there are some: an entry without promoted
    # phrasings stores the metadata it always did, so collections loaded before stay unchanged.
    promoted = {text.casefold() for text in entry.promoted}
    if promoted:
        base[_PROMOTED_LIST] = list(entry.promoted)
    documents = []
    for kind, text in entry.phrasings():
        metadata = {**base, "kind": kind}
        if kind != KIND_QUESTION and text.casefold() in promoted:
            metadata[queries.PROMOTED_KEY] = True
        documents.append(Document(_document_id(entry.faq_id, kind, text), text, metadata))
    return documents


def _entry_from_metadata(metadata: dict[str, Any]) -> FAQEntry:
    return FAQEntry(
        faq_id=str(metadata["faq_id"]),
        question=str(metadata["question"]),
        answer=str(metadata["answer"]),
        category=metadata.get("category"),
        alternatives=tuple(metadata.get("alternatives") or ()),
        promoted=tuple(metadata.get(_PROMOTED_LIST) or ()),
    )


class _Stored(NamedTuple):
    """A stored phrasing: its document's id, its entry's id, its text if promotion added it."""

    external_id: str
    faq_id: str
    promoted: str | None


def _with_stored_promotions(entry: FAQEntry, stored: Sequence[str], *, keep: bool) -> tuple[FAQEntry, int]:
    """``entry`` as loading it leaves it, given the texts of its stored promoted phrasings, and
    how many of those it did not list but keeps (``keep``; none without it).

    The phrasings promotion added live only in the database until an export writes them to a
    file, so a file that does not list them (written before the promotion) must not remove them:
    only ``replace`` (the file is the whole truth) does. Whatever stays keeps its mark."""
    if not stored:
        return entry, 0
    listed = {text.casefold() for _, text in entry.phrasings()}
    missing = [text for text in stored if text.casefold() not in listed] if keep else []
    alternatives = (*entry.alternatives, *missing)
    marked = {text.casefold() for text in (*entry.promoted, *stored)}
    promoted = tuple(text for text in alternatives if text.casefold() in marked)
    if not missing and promoted == entry.promoted:
        return entry, 0
    return dataclasses.replace(entry, alternatives=alternatives, promoted=promoted), len(missing)


#: what to do about a collection that is no FAQ's, when asking it
_IMPORT_ONE = "import one with `semsim faq import FILE -c NAME`."


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
        hashes); phrasings an entry no longer has are removed, except those that promoting
        unanswered questions added (:func:`semsim_pg.insights.promote_group`): they are kept, and
        counted in ``kept_promoted``. ``replace`` removes those too, and the entries that are not
        in ``entries``, so the collection ends up holding exactly them."""
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
        collection = self.store.create_collection(self.collection, model=self.model)
        # Never mix entries with (or, replacing, delete) documents another command wrote.
        stored = self._stored(
            collection,
            fix="FAQ entries go in a collection of their own. Give another collection name, or drop this "
            f"one first with `semsim collections --drop {self.collection}`.",
        )
        promoted: dict[str, list[str]] = {}
        for row in stored:
            if row.promoted is not None and row.faq_id in seen:
                promoted.setdefault(row.faq_id, []).append(row.promoted)
        kept = 0
        for i, entry in enumerate(entries):
            entries[i], count = _with_stored_promotions(entry, promoted.get(entry.faq_id, ()), keep=not replace)
            if count:
                kept += count
                logger.info("FAQ entry %r keeps %d promoted phrasing(s) it did not list", entry.faq_id, count)
        documents = [doc for entry in entries for doc in _documents(entry)]
        wanted = {doc.external_id for doc in documents}
        stale = [row.external_id for row in stored if row.external_id not in wanted and (replace or row.faq_id in seen)]
        upserted = self.store.upsert(collection, documents, progress=progress, total=len(documents))
        removed = self.store.delete(collection, stale) if stale else 0
        result = FAQLoadResult.from_upsert(len(entries), len(documents), upserted, removed, kept)
        logger.info("loaded %d FAQ entries into %s: %s", len(entries), collection.name, result.to_dict())
        return result

    def remove(self, faq_ids: Iterable[str]) -> int:
        """Remove entries (all their phrasings); returns how many phrasings went."""
        check_many(faq_ids, "remove(): the FAQ ids")
        collection = self.store.get_collection(self.collection)
        ids = set(faq_ids)
        stale = [row.external_id for row in self._stored(collection) if row.faq_id in ids]
        return self.store.delete(collection, stale) if stale else 0

    def _stored(self, collection: Collection, fix: str = _IMPORT_ONE) -> list[_Stored]:
        """Every phrasing, oldest first; a document that is no phrasing is refused."""
        with connect(self.store.engine) as conn:
            rows = conn.execute(queries.faq_phrasings(collection.id)).all()
        foreign = next((row[0] for row in rows if row[1] is None), None)
        if foreign is not None:
            raise self._not_faq(foreign, fix)
        return [_Stored(str(row[0]), str(row[1]), row[2]) for row in rows]

    def _not_faq(self, external_id: str, fix: str = _IMPORT_ONE) -> NotAnFAQCollection:
        keys = ", ".join(queries.PHRASING_KEYS)
        return NotAnFAQCollection(
            f"{self.collection!r} is not an FAQ collection (its document {external_id!r} has no {keys}): {fix}"
        )

    def _check_phrasings(self, hits: Sequence[SearchHit]) -> None:
        # A hit tells, at no cost, that the collection holds other documents than phrasings.
        foreign = next((h for h in hits if not all(key in h.metadata for key in queries.PHRASING_KEYS)), None)
        if foreign is not None:
            raise self._not_faq(foreign.external_id)

    def entries(self) -> list[FAQEntry]:
        """Every entry in the collection, by id."""
        collection = self.store.get_collection(self.collection)
        with connect(self.store.engine) as conn:
            foreign = conn.execute(queries.documents_lacking(collection.id, queries.PHRASING_KEYS).limit(1)).first()
            if foreign is not None:
                raise self._not_faq(foreign[0])
            rows = conn.execute(queries.faq_entries(collection.id)).scalars()
            return [_entry_from_metadata(metadata) for metadata in rows]

    # matching ---------------------------------------------------------------------------------
    def reranker_for(self, rerank: bool | str | Reranker | None) -> Reranker | None:
        """The cross-encoder ``rerank`` asks for: None for False/None; True: this matcher's or the
        configured one; a name, a path or a :class:`Reranker` names one; ``"auto"``: the configured
        one only when its fine-tuning record shows a gain on this collection."""
        from semsim_pg.rerank import Reranker, get_reranker

        if rerank is None or rerank is False:
            return None
        if isinstance(rerank, Reranker):
            return rerank
        if rerank == "auto":
            from semsim_pg.finetune.records import decide_rerank

            decision = decide_rerank(self.collection, self.reranker if isinstance(self.reranker, str) else None)
            logger.info("%s", decision.reason)
            return get_reranker(decision.model) if decision.use and decision.model else None
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
        """:meth:`match` for many questions, searched on one connection (each with the vector :meth:`match` gives it)."""
        check_many(questions, "match_many(): the questions", InvalidQuery)
        check_k(k)
        for i, question in enumerate(questions):
            if not isinstance(question, str) or not question.strip():
                raise InvalidQuery(f"Question #{i + 1} is empty: give a text with at least one word.")
        if candidates is not None and (
            isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1
        ):
            raise InvalidQuery(f"candidates must be a whole number of at least 1, got {candidates!r}.")
        reranker = self.reranker_for(rerank)
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
            self._check_phrasings(hits)
            # Many phrasings of a few entries can crowd the candidates: widen until k entries
            # survive or the collection has no more.
            while len({h.metadata.get("faq_id") for h in hits}) < k and len(hits) == size and size < MAX_K:
                size = min(MAX_K, size * 4)
                hits = self.store.search(collection, question, k=size, filter=filters)
                self._check_phrasings(hits)
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
        reranker = self.reranker_for(rerank)
        if self.store.settings.query_log:
            self.store.load_encoder(self.collection)  # the logged latency is the answer's, not the model's load
        started = time.perf_counter()
        limit = resolve_threshold(threshold if threshold is not None else self.threshold, reranked=reranker is not None)
        with not_logged():  # the question is logged once, with its answer, not as its searches
            matches = self.match(question, k, rerank=reranker or False, category=category)
        result = decide(question, matches, limit)
        mode = "faq+rerank" if reranker is not None else "faq"
        settings = self.store.settings
        log_answer(settings, self.store.engine, self.collection, result, started, key_of=_faq_id, k=k, mode=mode)
        return result


def _faq_id(entry: FAQEntry) -> str:
    return entry.faq_id
