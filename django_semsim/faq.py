"""The FAQ: entries staff maintain in the admin, matched against customers' questions.

``FAQ`` and ``FAQPhrasing`` are both :class:`SemanticModel` subclasses, so each gets its own
generated companion (vector table + HNSW index) and every edit is re-encoded by the usual
machinery: an alternative phrasing is a row of its own, with its own vector, rather than a
second text glued onto the question's (which would blur both). Matching searches the two
companions (two index scans, one query encoding thanks to the encoder's LRU cache), and the
core's shared logic (:mod:`semsim_pg.faq`) keeps each entry once, with its best phrasing's score.

Sites that do not use the FAQ pay two empty tables: no query runs and no model loads until
``FAQ.objects.match()`` is called.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import models, transaction

from django_semsim.conf import get_config
from django_semsim.models import SemanticModel
from django_semsim.query import SemanticManager, SemanticQuerySet
from semsim_pg.errors import InputFileError, InvalidInput, InvalidQuery
from semsim_pg.faq import (  # _read_rows: the core's CSV/TSV reader, with line numbers in its errors
    ALTERNATIVES_SEPARATOR,
    KIND_ALTERNATIVE,
    KIND_QUESTION,
    MIN_CANDIDATES,
    SEARCH_FACTOR,
    Answer,
    FAQEntry,
    FAQMatch,
    _read_rows,
    decide,
    rank_entries,
    resolve_threshold,
)
from semsim_pg.store import MAX_K

__all__ = [
    "FAQ",
    "FAQManager",
    "FAQPhrasing",
    "FAQQuerySet",
    "export_csv",
    "import_entries",
    "near_duplicates",
    "resolve_reranker",
]

logger = logging.getLogger(__name__)

#: columns of the CSV written by export (read back by import)
#: prefix of the key of an imported entry that has no faq_id (it is matched by its question)
QUESTION_KEY = "question:"
EXPORT_COLUMNS = ("faq_id", "question", "answer", "category", "alternatives")


def resolve_reranker(rerank: Any) -> Any:
    """False/None: no reranking; True: the configured cross-encoder (SEMSIM["CROSS_ENCODER"], else the
    core's SEMSIM_CROSS_ENCODER); a text: that model name or directory; a Reranker: itself."""
    if rerank is None or rerank is False:
        return None
    from semsim_pg.rerank import Reranker, get_reranker

    if isinstance(rerank, Reranker):
        return rerank
    if rerank is True:
        return get_reranker(get_config().cross_encoder)
    if isinstance(rerank, str) and rerank.strip():
        return get_reranker(rerank)
    raise InvalidQuery(f"rerank must be False, True, a cross-encoder name or directory, or a Reranker; got {rerank!r}.")


def faq_threshold(threshold: float | None = None, *, reranked: bool = False) -> float:
    """Per-call threshold, else SEMSIM["FAQ_(RERANK_)THRESHOLD"], else the core's setting/default."""
    if threshold is None:
        config = get_config()
        threshold = config.faq_rerank_threshold if reranked else config.faq_threshold
    return resolve_threshold(threshold, reranked=reranked)


@dataclass(frozen=True)
class _Candidate:
    faq: FAQ
    text: str
    similarity: float
    kind: str


class FAQQuerySet(SemanticQuerySet["FAQ"]):
    """FAQ querysets: ``match()`` and ``answer()`` search the published entries among these rows."""

    def _candidates(self, question: str, limit: int) -> list[_Candidate]:
        if not isinstance(question, str) or not question.strip():
            raise InvalidQuery(f"The question is empty: got {question!r}. Give a text with at least one word.")
        entries = self.filter(published=True)
        by_question = entries.semantic_search(question, k=limit)
        by_phrasing = (
            FAQPhrasing.objects.filter(faq__in=entries.values("pk"))
            .semantic_search(question, k=limit)
            .select_related("faq")
        )
        found = [_Candidate(f, f.question, float(f.similarity), KIND_QUESTION) for f in by_question]
        found += [_Candidate(p.faq, p.text, float(p.similarity), KIND_ALTERNATIVE) for p in by_phrasing]
        found.sort(key=lambda c: -c.similarity)  # the bi-encoder's order across both tables
        return found

    def match(self, question: str, k: int = 3, rerank: Any = False) -> list[FAQMatch[FAQ]]:
        """The ``k`` published entries nearest ``question``, each once with its best phrasing's score.

        Each :class:`~semsim_pg.faq.FAQMatch` holds the entry (which also gets ``similarity``,
        ``rerank_score`` and ``score`` attributes), the bi-encoder ``similarity``, the cross-encoder
        ``rerank_score`` when ``rerank`` is given, and the phrasing that matched.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidQuery(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
        reranker = resolve_reranker(rerank)
        if reranker is not None:
            reranker.load()  # a missing cross-encoder fails before any search
        limit = max(MIN_CANDIDATES, k * SEARCH_FACTOR)
        candidates = self._candidates(question, limit)
        matches = rank_entries(
            question,
            candidates,
            entry_of=lambda c: c.faq,
            key_of=lambda faq: faq.pk,
            text_of=lambda c: c.text,
            similarity_of=lambda c: c.similarity,
            kind_of=lambda c: c.kind,
            k=k,
            reranker=reranker,
        )
        for m in matches:
            m.entry.similarity = m.similarity
            m.entry.rerank_score = m.rerank_score
            m.entry.score = m.score
            m.entry.matched_text = m.matched_text
        return matches

    def answer(self, question: str, threshold: float | None = None, *, rerank: Any = False, k: int = 3) -> Answer[FAQ]:
        """The best entry when its score reaches the threshold, else an Answer with ``answered=False``
        (and ``entry=None``) that still lists the closest matches. The threshold is on the
        cross-encoder's scale when reranked (SEMSIM["FAQ_RERANK_THRESHOLD"])."""
        reranker = resolve_reranker(rerank)
        limit = faq_threshold(threshold, reranked=reranker is not None)
        return decide(question, self.match(question, k=k, rerank=reranker), limit)


class FAQManager(SemanticManager.from_queryset(FAQQuerySet)):  # type: ignore[misc]
    """``FAQ.objects``: match(), answer(), plus everything a semantic manager does."""


class FAQ(SemanticModel):
    """A question customers ask, its answer, and (in :class:`FAQPhrasing`) other ways to ask it."""

    question = models.CharField(max_length=500)
    answer = models.TextField()
    category = models.CharField(max_length=100, blank=True, db_index=True)
    published = models.BooleanField(default=True, help_text="Only published entries match questions.")
    #: an id from an imported file, so a re-import updates the entry instead of adding a copy
    external_id = models.CharField(max_length=100, unique=True, null=True, blank=True, verbose_name="FAQ id")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    semantic_fields = ["question"]

    objects = FAQManager()

    class Meta:
        verbose_name = "FAQ"
        verbose_name_plural = "FAQs"
        ordering = ["category", "question"]

    def __str__(self) -> str:
        return str(self.question)

    @property
    def faq_id(self) -> str:
        return self.external_id or str(self.pk)

    def alternatives(self) -> list[str]:
        return [p.text for p in self.phrasings.all()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "faq_id": self.faq_id,
            "question": self.question,
            "answer": self.answer,
            "category": self.category or None,
            "published": self.published,
        }


class FAQPhrasing(SemanticModel):
    """Another wording of an entry's question; it matches like the question itself."""

    faq = models.ForeignKey(FAQ, on_delete=models.CASCADE, related_name="phrasings")
    text = models.CharField(max_length=500)

    semantic_fields = ["text"]

    class Meta:
        verbose_name = "alternative phrasing"
        ordering = ["pk"]

    def __str__(self) -> str:
        return str(self.text)


# near duplicates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DuplicatePair:
    first: FAQ
    second: FAQ
    similarity: float


def near_duplicates(
    min_similarity: float = 0.85, *, neighbours: int = 5, limit: int = 200, using: str = "default"
) -> list[DuplicatePair]:
    """Pairs of entries whose questions mean the same, most similar first.

    One SQL statement: for each entry's vector a LATERAL subquery takes its nearest ``neighbours``
    through the companion's HNSW index (``ORDER BY <=> LIMIT``), and the similarity cut-off is
    applied to those few rows, so the cost grows with entries x neighbours, not entries squared.
    """
    from django.db import connections

    if not 0 < float(min_similarity) <= 1:
        raise InvalidQuery(f"min_similarity must be in (0, 1], got {min_similarity!r}.")
    companion = FAQ.semsim_companion
    table = connections[using].ops.quote_name(companion._meta.db_table)
    model_name = get_config().model_name
    sql = f"""
        SELECT a.source_id, n.source_id, 1 - n.distance AS similarity
        FROM {table} AS a
        CROSS JOIN LATERAL (
            SELECT b.source_id, b.embedding <=> a.embedding AS distance
            FROM {table} AS b
            WHERE b.model_name = %s AND b.embedding IS NOT NULL
            ORDER BY b.embedding <=> a.embedding
            LIMIT %s
        ) AS n
        WHERE a.model_name = %s AND a.embedding IS NOT NULL
          AND n.source_id > a.source_id AND n.distance <= %s
        ORDER BY similarity DESC, a.source_id, n.source_id
        LIMIT %s
    """
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(40, neighbours * 2))])
        cursor.execute(sql, [model_name, neighbours + 1, model_name, 1.0 - float(min_similarity), limit])
        rows = cursor.fetchall()
    entries = FAQ.objects.using(using).in_bulk({pk for row in rows for pk in row[:2]})
    return [DuplicatePair(entries[a], entries[b], float(sim)) for a, b, sim in rows if a in entries and b in entries]


# import / export -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    removed: int


def read_entries(path: str | Path) -> list[FAQEntry]:
    """Entries from a .csv/.tsv with header ``[faq_id,] question, answer[, category][, alternatives]``
    (alternatives separated by "|"). The whole file is checked first; an error names its line, so a
    caller imports all of a file or nothing. Without a faq_id an entry is keyed by its question."""
    entries: list[FAQEntry] = []
    seen: dict[str, int] = {}
    for line, row in _read_rows(path, ("question", "answer"), ("faq_id", "category", "alternatives")):
        for name in ("question", "answer"):
            if not row[name]:
                raise InputFileError(f"{path}, line {line}: the {name} is empty.")
        faq_id = row.get("faq_id") or QUESTION_KEY + row["question"]
        if faq_id in seen:
            raise InputFileError(
                f"{path}, line {line}: entry {faq_id.removeprefix(QUESTION_KEY)!r} appears again (first on line "
                f"{seen[faq_id]}); put other phrasings in the alternatives column instead."
            )
        seen[faq_id] = line
        alternatives = tuple(a.strip() for a in row.get("alternatives", "").split(ALTERNATIVES_SEPARATOR) if a.strip())
        try:
            entries.append(FAQEntry(faq_id, row["question"], row["answer"], row.get("category") or None, alternatives))
        except InvalidInput as exc:
            raise InputFileError(f"{path}, line {line}: {exc}") from None
    if not entries:
        raise InputFileError(f"{path}: holds no FAQ entries, only a header.")
    return entries


def import_entries(entries: Sequence[FAQEntry], *, replace: bool = False, using: str = "default") -> ImportResult:
    """Write already validated entries in one transaction (their vectors follow after commit).

    An entry whose ``faq_id`` exists is updated (its phrasings replaced); with ``replace``,
    entries absent from ``entries`` are deleted.
    """
    created = updated = removed = 0
    with transaction.atomic(using=using):
        ids = [e.faq_id for e in entries if not e.faq_id.startswith(QUESTION_KEY)]
        questions = [e.question for e in entries if e.faq_id.startswith(QUESTION_KEY)]
        if replace:
            stale = FAQ.objects.using(using).exclude(external_id__in=ids).exclude(question__in=questions)
            removed = stale.count()
            stale.delete()
        existing = FAQ.objects.using(using).in_bulk(ids, field_name="external_id")
        by_question = {f.question: f for f in FAQ.objects.using(using).filter(question__in=questions)}
        for entry in entries:
            keyed_by_question = entry.faq_id.startswith(QUESTION_KEY)
            faq = by_question.get(entry.question) if keyed_by_question else existing.get(entry.faq_id)
            if faq is None:
                faq = FAQ(external_id=None if keyed_by_question else entry.faq_id)
                created += 1
            else:
                updated += 1
            faq.question, faq.answer, faq.category = entry.question, entry.answer, entry.category or ""
            faq.save(using=using)
            kept = {text.casefold() for _, text in entry.phrasings()[1:]}
            current = {p.text.casefold(): p for p in faq.phrasings.all()}
            for folded, phrasing in current.items():
                if folded not in kept:
                    phrasing.delete()
            for _, text in entry.phrasings()[1:]:
                if text.casefold() not in current:
                    FAQPhrasing.objects.using(using).create(faq=faq, text=text)
    return ImportResult(created, updated, removed)


def export_rows(queryset: Iterable[FAQ]) -> list[list[str]]:
    rows = []
    for faq in queryset:
        alternatives = ALTERNATIVES_SEPARATOR.join(p.text for p in faq.phrasings.all())
        rows.append([faq.faq_id, faq.question, faq.answer, faq.category, alternatives])
    return rows


def export_csv(queryset: Iterable[FAQ] | None = None, *, delimiter: str = ",") -> str:
    """The entries as CSV text (header ``faq_id, question, answer, category, alternatives``): the import's format."""
    if queryset is None:
        queryset = FAQ.objects.all()
    if isinstance(queryset, models.QuerySet):
        queryset = queryset.prefetch_related("phrasings")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(export_rows(queryset))
    return buffer.getvalue()
