"""``SemanticAdminMixin``: the admin of any :class:`~django_semsim.models.SemanticModel` searches by meaning.

``class ArticleAdmin(SemanticAdminMixin, admin.ModelAdmin)`` gives:

- a changelist search box with three modes, switched by links under the box (``?search_mode=``):
  ``hybrid`` (words and meaning fused, ``hybrid_search``: the default, since it finds both a
  paraphrase and an exact code or name), ``meaning`` (``semantic_search``) and ``keywords``
  (Django's own search over ``search_fields``). The two ranked modes show the ``semantic_search_k``
  best with a similarity column (hybrid also shows which side found each row); a model whose text
  is only known in Python searches by meaning by default, since hybrid needs the words in SQL;
- a "vector" column and filter: current, stale (made from older text) or missing;
- for a model that splits its texts (``semantic_chunking``), a "passages" column and the count on
  the change page (how many passages, each with its own vector, the object's text became);
- a "Re-encode the selected ... now" action;
- "Similar items" on the change page (``similar_items`` of them), among the rows ``get_queryset(request)`` shows.

django_semsim registers nothing with the admin site itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse

from django_semsim.conf import get_config
from django_semsim.models import companion_of
from django_semsim.passages import chunking_of
from django_semsim.query import SemanticQuerySet, searchable

__all__ = ["SemanticAdminMixin", "VectorStatusFilter"]

#: GET parameter that chooses the changelist search box's mode
MODE_PARAM = "search_mode"
HYBRID, MEANING, KEYWORDS = "hybrid", "meaning", "keywords"
#: the modes, with the label of the link that switches to each
SEARCH_MODES = {HYBRID: "words + meaning", MEANING: "meaning", KEYWORDS: "keywords"}
#: the GET parameter of earlier versions (``?keywords=1``), still understood
KEYWORDS_PARAM = "keywords"
CURRENT, STALE, MISSING = "current", "stale", "missing"
#: what the "similarity" and "found by" columns sort by: values a ranked search annotates
SIMILARITY, SCORE = "similarity", "score"
SEARCH_ORDERING = frozenset({SIMILARITY, SCORE})


def _is_search_ordering(item: Any) -> bool:
    return isinstance(item, str) and item.removeprefix("-") in SEARCH_ORDERING


def _search_only(item: Any, queryset: QuerySet[Any]) -> bool:
    """Whether ``item`` names a search column the base queryset does not have (a model's own
    ``score`` field, or an annotation of that name, sorts as Django sorts it)."""
    if not _is_search_ordering(item):
        return False
    name = item.removeprefix("-")
    if name in queryset.query.annotations:
        return False
    try:
        queryset.model._meta.get_field(name)
    except FieldDoesNotExist:
        return True
    return False


def _search_order(item: Any) -> Any:
    """An ordering item as the search's results take it: a search column's name as an expression that
    puts rows without the value (no vector yet) last in either direction."""
    if not _is_search_ordering(item):
        return item
    name = item.removeprefix("-")
    return F(name).desc(nulls_last=True) if item.startswith("-") else F(name).asc(nulls_last=True)


@cache
def _search_ordered(changelist: type[ChangeList]) -> type[ChangeList]:
    """``changelist`` (Django's or the admin's own) that keeps the search columns' ordering for the search.

    Django's ChangeList orders the base queryset *before* ``get_search_results``, and that queryset
    has no ``similarity`` or ``score`` yet (ordering by them is a FieldError, a 500): the ordering
    goes to the base queryset without them, and whole to the request, for the search to apply.
    """

    class SearchOrderedChangeList(changelist):
        def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
            ordering = super().get_ordering(request, queryset)
            request.semsim_ordering = ordering
            return [item for item in ordering if not _search_only(item, queryset)]

    return SearchOrderedChangeList


def with_vector_status(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with ``_semsim_has_vector`` and ``_semsim_current`` annotated, computed by PostgreSQL."""
    model = queryset.model
    vectors = companion_of(model)._base_manager.filter(
        source=OuterRef("pk"), model_id=get_config().model_name, passage=0, embedding__isnull=False
    )
    queryset = queryset.annotate(_semsim_has_vector=Exists(vectors))
    expression = model.semantic_hash_expression()
    if expression is None:  # text known in Python only: a vector counts as current
        return queryset.alias(_semsim_current=Exists(vectors))
    current = vectors.filter(text_hash=OuterRef("_semsim_text_hash"))
    return queryset.alias(_semsim_text_hash=expression).annotate(_semsim_current=Exists(current))


def _vectors_of(model: Any) -> QuerySet[Any]:
    return companion_of(model)._base_manager.filter(model_id=get_config().model_name, embedding__isnull=False)


def with_passage_count(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` with ``_semsim_passages``: how many passages with a vector each row has (one subquery)."""
    rows = _vectors_of(queryset.model).filter(source=OuterRef("pk")).order_by().values("source")
    count = Subquery(rows.annotate(n=Count("pk")).values("n")[:1], output_field=IntegerField())
    return queryset.annotate(_semsim_passages=Coalesce(count, 0))


def passage_count(obj: Any) -> int:
    """How many passages with a vector ``obj`` has."""
    return int(_vectors_of(type(obj)).filter(source=obj.pk).count())


class VectorStatusFilter(admin.SimpleListFilter):
    """Filter by vector: current, stale (made from older text) or missing."""

    title = "vector"
    parameter_name = "vector"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(CURRENT, "current"), (STALE, "stale"), (MISSING, "missing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == CURRENT:
            return queryset.filter(_semsim_current=True)
        if value == STALE:
            return queryset.filter(_semsim_has_vector=True, _semsim_current=False)
        if value == MISSING:
            return queryset.filter(_semsim_has_vector=False)
        return queryset


class SemanticAdminMixin:
    """Mix into a ``ModelAdmin`` of a semantic model (before ``admin.ModelAdmin``)."""

    #: how many results a ranked search shows (best first)
    semantic_search_k: int = 50
    #: the search box's mode when the URL names none: "hybrid", "meaning" or "keywords"
    semantic_search_mode: str = HYBRID
    #: how many similar items the change page lists (0: none)
    similar_items: int = 5
    change_list_template = "admin/django_semsim/change_list.html"
    change_form_template = "admin/django_semsim/change_form.html"

    # searching ------------------------------------------------------------------------------------
    def _hybrid_available(self) -> bool:
        return self.model.semantic_search_vector() is not None  # type: ignore[attr-defined]

    def _mode(self, request: HttpRequest) -> str:
        mode = str(getattr(request, "semsim_search_mode", None) or self.semantic_search_mode)
        if mode == HYBRID and not self._hybrid_available():
            return MEANING  # the words of a Python-only text are not in SQL
        return mode

    def _ranked(self, request: HttpRequest) -> bool:
        return bool(request.GET.get("q", "").strip()) and self._mode(request) != KEYWORDS

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        mode = self._mode(request)
        if not search_term.strip() or mode == KEYWORDS:
            return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]
        # the changelist has ordered the queryset already: the search keeps that order as its tie-breaker,
        # and puts it first when a column header was clicked (the search's own columns included, which
        # the changelist left out of the queryset's order: see _search_ordered)
        if mode == HYBRID:
            results = queryset.hybrid_search(search_term, k=self.semantic_search_k)
        else:
            results = queryset.semantic_search(search_term, k=self.semantic_search_k)
        # staff browsing the changelist are not the users whose questions the query log measures
        # (their searches would count in the insights' volumes, scores and drift)
        results._semsim_log = None
        if ORDER_VAR in request.GET:
            ordering = getattr(request, "semsim_ordering", None)
            ordering = queryset.query.order_by if ordering is None else ordering
            results = results.order_by(*(_search_order(item) for item in ordering))
        return results, False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _search_ordered(super().get_changelist(request, **kwargs))  # type: ignore[misc]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = with_vector_status(super().get_queryset(request))  # type: ignore[misc]
        return with_passage_count(queryset) if chunking_of(self.model) is not None else queryset  # type: ignore[attr-defined]

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = [*super().get_list_display(request), "vector_status"]  # type: ignore[misc]
        if chunking_of(self.model) is not None:  # type: ignore[attr-defined]
            columns.append("vector_passages")
        if self._ranked(request):
            columns.insert(1, "search_similarity")
            if self._mode(request) == HYBRID:
                columns.insert(2, "search_found_by")
        return columns

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [*super().get_list_filter(request), VectorStatusFilter]  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if MODE_PARAM in request.GET or KEYWORDS_PARAM in request.GET:
            # the changelist would read an unknown parameter as a field lookup: take them out first
            request.GET = request.GET.copy()
            wanted = request.GET.pop(MODE_PARAM, [None])[-1]
            if request.GET.pop(KEYWORDS_PARAM, None):
                wanted = KEYWORDS
            if wanted in SEARCH_MODES:
                request.semsim_search_mode = wanted
        mode = self._mode(request)
        available = [m for m in SEARCH_MODES if m != HYBRID or self._hybrid_available()]
        context = {
            **(extra_context or {}),
            "semsim_search_mode": mode,
            "semsim_search_mode_label": SEARCH_MODES.get(mode, mode),
            "semsim_search_modes": [(m, SEARCH_MODES[m]) for m in available if m != mode],
            "semsim_mode_param": MODE_PARAM,
            "semsim_search_k": self.semantic_search_k,
        }
        return super().changelist_view(request, context)  # type: ignore[misc]

    @admin.display(description="similarity", ordering=SIMILARITY)
    def search_similarity(self, obj: Any) -> str:
        value = getattr(obj, "similarity", None)
        return "" if value is None else f"{value:.3f}"

    @admin.display(description="found by", ordering=SCORE)
    def search_found_by(self, obj: Any) -> str:
        """Which side of a hybrid search brought the row, with its rank there."""
        sides = [
            f"{label} #{rank}"
            for label, rank in (
                ("meaning", getattr(obj, "dense_rank", None)),
                ("words", getattr(obj, "lexical_rank", None)),
            )
            if rank is not None
        ]
        return " · ".join(sides)

    @admin.display(description="passages", ordering="_semsim_passages")
    def vector_passages(self, obj: Any) -> int:
        """How many passages (each with a vector of the configured encoder) the object's text became."""
        count = getattr(obj, "_semsim_passages", None)
        return int(count) if count is not None else passage_count(obj)

    @admin.display(description="vector")
    def vector_status(self, obj: Any) -> str:
        if not getattr(obj, "_semsim_has_vector", False):
            return MISSING
        return CURRENT if getattr(obj, "_semsim_current", False) else STALE

    # actions ----------------------------------------------------------------------------------------
    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)  # type: ignore[misc]
        if self.has_change_permission(request):  # type: ignore[attr-defined]
            plural = self.model._meta.verbose_name_plural  # type: ignore[attr-defined]
            actions["reencode_vectors"] = (
                type(self).reencode_vectors,
                "reencode_vectors",
                f"Re-encode the selected {plural} now",
            )
        return actions

    def reencode_vectors(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Forget which text each selected row's vector came from, then encode those rows now."""
        from django_semsim.sync import drain

        model = queryset.model
        pks = list(queryset.values_list("pk", flat=True))
        companion_of(model)._base_manager.filter(source__in=pks, model_id=get_config().model_name).update(
            text_hash=None
        )
        written = len(drain(model, pks=pks).written)
        self.message_user(request, f"{written} vector(s) re-encoded.", messages.SUCCESS)  # type: ignore[attr-defined]

    # change page ------------------------------------------------------------------------------------
    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        similar: list[tuple[Any, str | None]] = []
        obj = self.get_object(request, unquote(object_id)) if self.similar_items else None  # type: ignore[attr-defined]
        if obj is not None:
            opts = self.model._meta  # type: ignore[attr-defined]
            # among the rows this admin shows the user (its get_queryset()), as the changelist
            rows: SemanticQuerySet[Any] = searchable(self.get_queryset(request))
            for item in rows.similar_to(obj, k=self.similar_items):
                try:
                    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[item.pk])
                except NoReverseMatch:
                    url = None
                similar.append((item, url))
        context = {**(extra_context or {}), "semsim_similar": similar}
        if obj is None and chunking_of(self.model) is not None:  # type: ignore[attr-defined]
            obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is not None and chunking_of(self.model) is not None:  # type: ignore[attr-defined]
            context["semsim_passages"] = passage_count(obj)
        return super().change_view(request, object_id, form_url, context)  # type: ignore[misc]
