"""The FAQ's models: entries staff maintain in the admin, matched against customers' questions.

``FAQ`` and ``FAQPhrasing`` are both :class:`SemanticModel` subclasses, so each gets its own
generated companion (vector table + HNSW index) and every edit is re-encoded by the usual
machinery: an alternative phrasing is a row of its own, with its own vector, rather than a
second text glued onto the question's (which would blur both). Matching searches the two
companions (two index scans, one query encoding thanks to the encoder's LRU cache), and the
core's shared logic (:mod:`semsim_pg.faq`) keeps each entry once, with its best phrasing's score.

The tables keep the names they had when the FAQ was part of ``django_semsim`` (``db_table``), and
the companions keep their index names (``semantic_index_label``), so sites that had the FAQ keep
their rows when they move to this app (see migrations/0001_initial.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from django_semsim.conf import get_config
from django_semsim.encoding import resolve_reranker
from django_semsim.models import SemanticModel
from django_semsim.query import SemanticManager, SemanticQuerySet
from semsim_pg.errors import InvalidQuery
from semsim_pg.faq import (
    ALTERNATIVES_SEPARATOR,
    KIND_ALTERNATIVE,
    KIND_QUESTION,
    MIN_CANDIDATES,
    SEARCH_FACTOR,
    Answer,
    FAQMatch,
    decide,
    rank_entries,
    resolve_threshold,
)
from semsim_pg.insights import not_logged
from semsim_pg.validation import check_k

__all__ = ["FAQ", "FAQManager", "FAQPhrasing", "FAQQuerySet", "faq_threshold", "validate_phrasing_text"]

logger = logging.getLogger(__name__)


def faq_threshold(threshold: float | None = None, *, reranked: bool = False) -> float:
    """Per-call threshold, else SEMSIM["FAQ_(RERANK_)THRESHOLD"], else the core's setting/default."""
    if threshold is None:
        config = get_config()
        threshold = config.faq_rerank_threshold if reranked else config.faq_threshold
    return resolve_threshold(threshold, reranked=reranked)


def validate_phrasing_text(text: str) -> None:
    """Refuse a phrasing holding "|": FAQ files separate alternatives with it, so an export would
    split it in two on import. A check of ``clean()`` and of forms, not a field validator: that
    would be a migration for every site, and rows written by code are caught by the export."""
    if ALTERNATIVES_SEPARATOR in text:
        raise ValidationError(
            f"A phrasing cannot hold {ALTERNATIVES_SEPARATOR!r}: FAQ files use it to separate alternative "
            "phrasings. Reword it, or add each wording as a phrasing of its own.",
            code="separator",
        )


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
        check_k(k)
        reranker = resolve_reranker(rerank)
        if reranker is not None:
            reranker.load()  # a missing cross-encoder fails before any search
        limit = max(MIN_CANDIDATES, k * SEARCH_FACTOR)
        with not_logged():  # answer() logs the question once, not as these two searches
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
        started = time.perf_counter()
        reranker = resolve_reranker(rerank)
        limit = faq_threshold(threshold, reranked=reranker is not None)
        result = decide(question, self.match(question, k=k, rerank=reranker), limit)
        from django_semsim.insights.log import log_faq_answer  # off unless SEMSIM["QUERY_LOG"] and the app

        log_faq_answer(result, started, k=k, reranked=reranker is not None)
        return result


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
    semantic_index_label = "django_semsim.faq"

    objects = FAQManager()

    class Meta:
        app_label = "semsim_faq"
        db_table = "django_semsim_faq"
        verbose_name = "FAQ"
        verbose_name_plural = "FAQs"
        ordering = ["category", "question"]

    def __str__(self) -> str:
        return str(self.question)

    @property
    def faq_id(self) -> str:
        """The entry's id in FAQ files: its external_id, else its primary key (the import reads both: faq/io.py)."""
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
    # Set by the admin's promotion of unanswered questions: such a phrasing exists only in the
    # database, so an import of a file that does not list it keeps it (--replace excepted).
    promoted = models.BooleanField(
        default=False,
        db_default=False,
        help_text="added from unanswered questions; an import without --replace keeps it",
    )

    semantic_fields = ["text"]
    semantic_index_label = "django_semsim.faqphrasing"

    class Meta:
        app_label = "semsim_faq"
        db_table = "django_semsim_faqphrasing"
        verbose_name = "alternative phrasing"
        ordering = ["pk"]

    def __str__(self) -> str:
        return str(self.text)

    def clean(self) -> None:
        super().clean()
        try:
            validate_phrasing_text(self.text or "")
        except ValidationError as exc:
            raise ValidationError({"text": exc}) from None
