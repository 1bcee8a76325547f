"""The FAQ admin: list/search/filter, phrasings inline, CSV import/export, "Try a question",
near-duplicate report, re-encode action.

Every custom view is wrapped in ``admin_site.admin_view`` (anonymous and non-staff users go to
the login page) and checks the FAQ permission it needs (view, or add+change for the import),
so staff without FAQ permissions get 403.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from django_semsim.admin import SemanticAdminMixin
from django_semsim.conf import get_config
from django_semsim.faq.duplicates import near_duplicates
from django_semsim.faq.io import EntryChange, export_csv, import_entries, read_entries
from django_semsim.faq.models import FAQ, FAQPhrasing, faq_threshold
from django_semsim.models import companion_of
from semsim_pg.errors import SemsimError
from semsim_pg.insights import not_logged

__all__ = ["FAQAdmin", "available_reranker", "configured_reranker"]

logger = logging.getLogger(__name__)

#: how long a failed cross-encoder load is remembered before the "Try" page tries again (seconds)
RERANKER_RETRY_SECONDS = 60.0
_reranker_failures: dict[str, tuple[float, str]] = {}


def configured_reranker() -> str | None:
    """The cross-encoder the site chose: SEMSIM['CROSS_ENCODER'], else the core's SEMSIM_CROSS_ENCODER
    when set to another than the built-in default (which would be downloaded on first use: the
    admin never starts that on its own)."""
    from semsim_pg.settings import DEFAULT_CROSS_ENCODER, get_settings

    core = get_settings().cross_encoder
    return get_config().cross_encoder or (core if core and core != DEFAULT_CROSS_ENCODER else None)


def available_reranker() -> tuple[Any, str | None]:
    """(the configured cross-encoder, None) when it loads, else (None, why rerank is off, in words
    for the page: the loading error goes to the log). A model that failed to load is remembered
    for a minute so the page does not probe the hub on every question."""
    from semsim_pg.rerank import get_reranker

    name = configured_reranker()
    if not name:
        return None, "no cross-encoder is configured (set SEMSIM['CROSS_ENCODER'] to a model name or directory)"
    failed = _reranker_failures.get(name)
    if failed is None or time.monotonic() - failed[0] >= RERANKER_RETRY_SECONDS:
        try:
            return get_reranker(name).load(), None
        except SemsimError as exc:
            logger.warning("FAQ admin: cross-encoder %r could not be loaded, rerank is off: %s", name, exc)
            _reranker_failures[name] = failed = (time.monotonic(), str(exc))
    return None, (
        f"the configured cross-encoder {name!r} could not be loaded (the server log says why; "
        f"the page tries again after {RERANKER_RETRY_SECONDS:.0f} s)"
    )


#: text inputs wide enough to read a whole question or phrasing
WIDE_TEXT = forms.TextInput(attrs={"style": "width: 40em; max-width: 100%"})


class FAQPhrasingInline(admin.TabularInline):
    model = FAQPhrasing
    extra = 1
    formfield_overrides = {models.CharField: {"widget": WIDE_TEXT}, models.TextField: {"widget": WIDE_TEXT}}
    verbose_name = "alternative phrasing"
    verbose_name_plural = "alternative phrasings (they match like the question)"


class TryQuestionForm(forms.Form):
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000)
    k = forms.IntegerField(min_value=1, max_value=50, initial=5, label="matches to show")
    threshold = forms.FloatField(required=False, help_text="leave empty for the configured threshold")


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text='A .csv or .tsv with header [faq_id,] question, answer[, category][, alternatives ("|"-separated)]'
        "[, published (true or false; without it new entries are published and others keep theirs)]."
    )
    replace = forms.BooleanField(
        required=False,
        help_text="delete the entries the file does not hold, and the phrasings added from unanswered questions "
        "that it does not list (without it they are kept)",
    )


UPLOAD_STEM = "upload"


class FAQAdmin(SemanticAdminMixin, admin.ModelAdmin):
    """The search box finds entries by meaning (and by keywords, one click away); the "vector"
    column, filter and re-encode action come from :class:`SemanticAdminMixin`."""

    list_display = ["question", "category", "published", "phrasing_count", "updated_at"]
    list_filter = ["category", "published"]
    search_fields = ["question", "answer", "phrasings__text", "external_id"]
    inlines = [FAQPhrasingInline]
    actions = ["export_selected"]
    readonly_fields = ["created_at", "updated_at"]
    fields = ["question", "answer", "category", "published", "external_id", "created_at", "updated_at"]
    change_list_template = "admin/semsim_faq/faq/change_list.html"
    formfield_overrides = {
        models.CharField: {"widget": WIDE_TEXT},
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 4, "style": "width: 40em; max-width: 100%"})},
    }

    def get_queryset(self, request: HttpRequest) -> QuerySet[FAQ]:
        return super().get_queryset(request).prefetch_related("phrasings")

    @admin.display(description="phrasings")
    def phrasing_count(self, obj: FAQ) -> int:
        return 1 + len(obj.phrasings.all())

    # actions -----------------------------------------------------------------------------------
    def reencode_vectors(self, request: HttpRequest, queryset: QuerySet[FAQ]) -> None:
        """The entries' questions and their alternative phrasings, encoded again now."""
        from django_semsim.sync import drain

        pks = list(queryset.values_list("pk", flat=True))
        phrasing_pks = list(FAQPhrasing.objects.filter(faq__in=pks).values_list("pk", flat=True))
        model_name = get_config().model_name
        written = 0
        for model, ids in ((FAQ, pks), (FAQPhrasing, phrasing_pks)):
            # forget the text each vector came from, so the drain encodes these rows again
            companion_of(model).objects.filter(source__in=ids, model=model_name).update(text_hash=None)
            written += len(drain(model, pks=ids).written)
        self.message_user(request, f"{written} vector(s) re-encoded for {len(pks)} FAQ(s).", messages.SUCCESS)

    @admin.action(description="Export the selected FAQs as CSV", permissions=["view"])
    def export_selected(self, request: HttpRequest, queryset: QuerySet[FAQ]) -> HttpResponse | None:
        return self._export(request, queryset)

    def _export(self, request: HttpRequest, queryset: QuerySet[FAQ]) -> HttpResponse | None:
        """The CSV download, or (an entry that would not read back) a message that names it."""
        try:
            return _csv_response(export_csv(queryset))
        except SemsimError as exc:
            self.message_user(request, f"Nothing was exported: {exc}", messages.ERROR)
            return None

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        can_import = self.has_add_permission(request) and self.has_change_permission(request)
        return super().changelist_view(request, {**(extra_context or {}), "can_import_faqs": can_import})

    # custom views ------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        custom = [
            path("try/", wrap(self.try_view), name=f"{prefix}_try"),
            path("import/", wrap(self.import_view), name=f"{prefix}_import"),
            path("export/", wrap(self.export_view), name=f"{prefix}_export"),
            path("duplicates/", wrap(self.duplicates_view), name=f"{prefix}_duplicates"),
        ]
        return [*custom, *super().get_urls()]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **extra}

    def _require(self, request: HttpRequest, *checks: str) -> None:
        allowed = {
            "view": self.has_view_permission,
            "add": self.has_add_permission,
            "change": self.has_change_permission,
            "delete": self.has_delete_permission,
        }
        if not all(allowed[name](request) for name in checks):
            raise PermissionDenied

    def try_view(self, request: HttpRequest) -> HttpResponse:
        """Type a customer's question: ranked matches, both scores, and whether it would be answered."""
        self._require(request, "view")
        form = TryQuestionForm(request.GET or None)
        context: dict[str, Any] = {"form": form}
        if form.is_valid():
            question = form.cleaned_data["question"]
            reranker, why_not = available_reranker()
            try:
                # staff trying questions are not customers asking them: kept out of the query log (and
                # so out of "Unanswered questions" and the figures), as the changelist's search is
                with not_logged():
                    answer = FAQ.objects.answer(question, form.cleaned_data["threshold"], k=form.cleaned_data["k"])
                    reranked = None
                    if reranker is not None:
                        reranked = FAQ.objects.answer(question, k=form.cleaned_data["k"], rerank=reranker)
            except SemsimError as exc:
                form.add_error("question", str(exc))
            else:
                context.update(
                    answer=answer,
                    reranked=reranked,
                    rerank_configured=configured_reranker() is not None,
                    rerank_unavailable=why_not,
                    rerank_threshold=faq_threshold(reranked=True),
                )
        return TemplateResponse(
            request, "admin/semsim_faq/faq/try.html", self._context(request, "Try a question", **context)
        )

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a CSV/TSV: validated whole, then written in one transaction, or not at all."""
        self._require(request, "add", "change")
        form = ImportForm(request.POST or None, request.FILES or None)
        if not self.has_delete_permission(request):
            del form.fields["replace"]  # "replace" deletes the entries the file leaves out
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            suffix = Path(upload.name).suffix.lower()
            if request.POST.get("replace") and not self.has_delete_permission(request):
                raise PermissionDenied  # a forged replace from someone who may not delete entries
            if suffix not in (".csv", ".tsv"):
                form.add_error("file", f"Name the file .csv or .tsv (got {upload.name!r}).")
            else:
                with tempfile.TemporaryDirectory(prefix="semsim-faq-") as folder:
                    # saved under a fixed name: the user's may be too long for the file system (255
                    # bytes, and a non-ASCII character takes several) or hold anything; errors are
                    # given back in the user's name (the readers' display_name)
                    target = Path(folder) / f"{UPLOAD_STEM}{suffix}"
                    with target.open("wb") as handle:
                        for chunk in upload.chunks():
                            handle.write(chunk)
                    try:
                        entries = read_entries(target, display_name=Path(upload.name).name)
                        with transaction.atomic():  # the entries and their history, or neither
                            result = import_entries(entries, replace=form.cleaned_data.get("replace", False))
                            self._log_import(request, result.changes, upload.name)
                    except SemsimError as exc:
                        form.add_error("file", f"{exc} Nothing was imported.")
                    else:
                        self.message_user(
                            request,
                            f"Imported {len(entries)} FAQ entries from {upload.name}: {result.created} new, "
                            f"{result.updated} updated, {result.removed} removed"
                            + result.kept_note('"Export CSV"', 'importing with "replace"')
                            + ".",
                            messages.SUCCESS,
                        )
                        return HttpResponseRedirect(reverse("admin:semsim_faq_faq_changelist"))
        return TemplateResponse(
            request, "admin/semsim_faq/faq/import.html", self._context(request, "Import FAQs", form=form)
        )

    def _log_import(self, request: HttpRequest, changes: tuple[EntryChange, ...], name: str) -> None:
        """One admin history entry (LogEntry) per entry the import added, changed or deleted, so
        "Recent actions" and each entry's history say who imported what, as for an edit by hand.
        Written with one bulk INSERT rather than ``log_addition``/``log_change`` (an INSERT per
        entry, thousands for a big file); unchanged entries get none (nothing happened to them)."""
        from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
        from django.contrib.contenttypes.models import ContentType

        content_type = ContentType.objects.get_for_model(FAQ, for_concrete_model=False)
        flags = {"added": ADDITION, "changed": CHANGE, "deleted": DELETION}
        LogEntry.objects.bulk_create(
            LogEntry(
                user_id=request.user.pk,
                content_type_id=content_type.pk,
                object_id=str(change.faq.pk),
                object_repr=str(change.faq)[:200],
                action_flag=flags[change.action],
                change_message=_import_message(change, name),
            )
            for change in changes
        )

    def export_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "view")
        return self._export(request, FAQ.objects.all()) or HttpResponseRedirect(
            reverse("admin:semsim_faq_faq_changelist")
        )

    def duplicates_view(self, request: HttpRequest) -> HttpResponse:
        """Pairs of entries that mean the same (one SQL statement over the HNSW index)."""
        self._require(request, "view")
        try:
            min_similarity = float(request.GET.get("min_similarity", "0.85"))
            pairs = near_duplicates(min_similarity=min_similarity, entries=self.get_queryset(request))
        except (ValueError, SemsimError) as exc:
            messages.error(request, f"min_similarity must be a number in (0, 1]: {exc}")
            min_similarity, pairs = 0.85, []
        return TemplateResponse(
            request,
            "admin/semsim_faq/faq/duplicates.html",
            self._context(request, "Near-duplicate FAQs", pairs=pairs, min_similarity=min_similarity),
        )


if get_config().faq_admin:
    admin.site.register(FAQ, FAQAdmin)


def _import_message(change: EntryChange, name: str) -> str:
    """The history line of one imported entry: how it came, and what the file changed."""
    added = f"{change.phrasings_added} alternative phrasing(s) added" if change.phrasings_added else ""
    removed = f"{change.phrasings_removed} alternative phrasing(s) removed" if change.phrasings_removed else ""
    if change.action == "added":
        return f"Added by importing {name}" + (f", with {added}" if added else "") + "."
    if change.action == "deleted":
        return f"Deleted by importing {name} with replace (the file does not list it)."
    done = [", ".join(change.fields), ", ".join(part for part in (added, removed) if part)]
    return f"Changed by importing {name}: " + "; ".join(part for part in done if part) + "."


def _csv_response(text: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="faq.csv"'
    return response
