"""The admin's "Search insights" and "Unanswered questions" pages, and the log itself (read only).

Both pages are views of the ``QueryLog`` admin, wrapped in ``admin_site.admin_view`` (anonymous
and non-staff users go to the login page) and allowed to staff with the log's view permission;
promoting a group also needs the FAQ permissions it uses: add an entry, or (as the phrasings inline)
change the entry and add a phrasing.
Figures, groups and promotion are the core's (:mod:`semsim_pg.insights`) run on this app's table.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.sites import NotRegistered
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from django_semsim.conf import get_config
from django_semsim.insights.log import faq_label, log_engine, log_table
from django_semsim.insights.models import QueryLog
from semsim_pg.errors import SemsimError

__all__ = ["QueryLogAdmin"]

logger = logging.getLogger(__name__)

ENABLE_HINT = (
    "the query log is off by default. Set SEMSIM['QUERY_LOG'] = True (with django_semsim.insights in "
    "INSTALLED_APPS) and questions asked through FAQ.objects.answer() are logged."
)
_SALT = "semsim.insights.group"
GROUPS_SHOWN = 20


class WindowForm(forms.Form):
    since = forms.CharField(initial="30d", max_length=40, help_text="e.g. 12h, 7d, 2w or 2026-11-01")


class StatsForm(WindowForm):
    collection = forms.ChoiceField(choices=())


class CreateEntryForm(forms.Form):
    group = forms.CharField(widget=forms.HiddenInput)
    question = forms.CharField(max_length=500)
    answer = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}))
    category = forms.CharField(max_length=100, required=False)


class PhrasingForm(forms.Form):
    group = forms.CharField(widget=forms.HiddenInput)
    text = forms.CharField(max_length=500, label="phrasing")
    faq = forms.IntegerField(widget=forms.HiddenInput)

    def clean_text(self) -> str:
        from django_semsim.faq.models import validate_phrasing_text

        text: str = self.cleaned_data["text"]
        validate_phrasing_text(text)  # what the phrasings inline refuses (FAQPhrasing.clean)
        return text


def _svg_data_uri(stats: Any) -> str:
    from semsim_pg.insights import plot_stats

    # An <img> of a data URI: the chart's SVG never runs as part of the page.
    return "data:image/svg+xml;base64," + base64.b64encode(plot_stats(stats, format="svg")).decode("ascii")


class QueryLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "collection", "kind", "query_text", "top_score", "answered", "latency_ms"]
    list_filter = ["collection", "kind", "answered"]
    search_fields = ["query_text"]
    change_list_template = "admin/semsim_insights/querylog/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        custom = [
            path("insights/", wrap(self.insights_view), name=f"{prefix}_insights"),
            path("unanswered/", wrap(self.unanswered_view), name=f"{prefix}_unanswered"),
        ]
        return [*custom, *super().get_urls()]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **extra}

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    # Search insights ---------------------------------------------------------------------------
    def insights_view(self, request: HttpRequest) -> HttpResponse:
        """The figures of ``semsim stats`` for one logged collection, with the chart."""
        from semsim_pg.insights import parse_since, query_stats
        from semsim_pg.insights.stats import ever_logged

        self._require_view(request)
        collections = list(QueryLog.objects.order_by().values_list("collection", flat=True).distinct())
        form = StatsForm(request.GET or {"since": "7d", "collection": collections[0] if collections else ""})
        form.fields["collection"].choices = [(c, c) for c in collections]
        context: dict[str, Any] = {"form": form, "collections": collections}
        if collections and form.is_valid():
            try:
                stats = query_stats(
                    log_engine(),
                    form.cleaned_data["collection"],
                    parse_since(form.cleaned_data["since"]),
                    threshold=get_config().query_log_drift_threshold,
                    table=log_table(),
                    enable_hint=ENABLE_HINT,
                )
            except SemsimError as exc:
                form.add_error("since", str(exc))
            else:
                context.update(stats=stats, chart=_svg_data_uri(stats), histogram=_bars(stats))
        elif not collections:
            context["empty"] = (
                "The log keeps no queries: the ones logged were pruned (manage.py semsim_log_prune). Figures start "
                "with the next query logged."
                if ever_logged(log_engine(), log_table())
                else f"Nothing was logged yet: {ENABLE_HINT}"
            )
        return TemplateResponse(
            request,
            "admin/semsim_insights/querylog/insights.html",
            self._context(request, "Search insights", **context),
        )

    # Unanswered questions ----------------------------------------------------------------------
    def unanswered_view(self, request: HttpRequest) -> HttpResponse:
        """FAQ questions that got no answer, grouped by meaning, each with the forms that turn it
        into an entry or a phrasing of one of its nearest entries."""
        self._require_view(request)
        if not apps.is_installed("django_semsim.faq"):
            raise PermissionDenied("The FAQ app (django_semsim.faq) is not installed.")
        if request.method == "POST":
            return self._promote(request)
        from semsim_pg.insights import parse_since, unanswered_groups

        form = WindowForm(request.GET or {"since": "30d"})
        context: dict[str, Any] = {"form": form}
        if form.is_valid():
            try:
                groups = unanswered_groups(
                    log_engine(),
                    faq_label(),
                    parse_since(form.cleaned_data["since"]),
                    table=log_table(),
                    enable_hint=ENABLE_HINT,
                )
            except SemsimError as exc:
                form.add_error("since", str(exc))
            else:
                context.update(
                    total=sum(g.size for g in groups),
                    count=len(groups),
                    groups=[self._group_context(request, g) for g in groups[:GROUPS_SHOWN]],
                )
        context["can_phrase"] = self._can_phrase(request)
        context["can_create"] = self._can(request, "semsim_faq.add_faq")
        return TemplateResponse(
            request,
            "admin/semsim_insights/querylog/unanswered.html",
            self._context(request, "Unanswered questions", **context),
        )

    @staticmethod
    def _can(request: HttpRequest, permission: str) -> bool:
        return bool(request.user.has_perm(permission))

    def _can_see_faqs(self, request: HttpRequest) -> bool:
        """Whether the user may see FAQ entries (their questions, scores): view or change, as the admin has it."""
        return self._can(request, "semsim_faq.view_faq") or self._can(request, "semsim_faq.change_faq")

    def _faq_admin(self) -> admin.ModelAdmin[Any] | None:
        from django_semsim.faq.models import FAQ

        try:
            return self.admin_site.get_model_admin(FAQ)
        except NotRegistered:
            return None

    def _can_phrase(self, request: HttpRequest, entry: Any = None) -> bool:
        """Adding a phrasing to an entry (``entry``, or any when None): what the phrasings inline of
        the entry's change page needs, the right to change the entry and to add phrasings. The
        view permission alone shows that page read-only, and must not write through this one."""
        faq_admin = self._faq_admin()
        may_change = (
            faq_admin.has_change_permission(request, entry)
            if faq_admin is not None
            else self._can(request, "semsim_faq.change_faq")
        )
        return may_change and self._can(request, "semsim_faq.add_faqphrasing")

    def _faq_rows(self, request: HttpRequest) -> Any:
        """The FAQ entries this user may change: those the FAQ admin lists (its get_queryset()) when registered."""
        from django_semsim.faq.models import FAQ

        faq_admin = self._faq_admin()
        return faq_admin.get_queryset(request) if faq_admin is not None else FAQ.objects.all()

    def _group_context(self, request: HttpRequest, group: Any) -> dict[str, Any]:
        from django_semsim.faq.models import FAQ

        token = signing.dumps(group.hashes, salt=_SALT, compress=True)
        text = group.representative.text or ""
        # the nearest entries show FAQ questions and scores: only to those who may see the FAQ
        nearest = FAQ.objects.match(text, k=3) if text.strip() and self._can_see_faqs(request) else []
        if nearest:  # and only those the FAQ admin shows this user
            shown = set(
                self._faq_rows(request).filter(pk__in=[m.entry.pk for m in nearest]).values_list("pk", flat=True)
            )
            nearest = [m for m in nearest if m.entry.pk in shown]
        return {
            "group": group,
            "nearest": nearest,
            "create": CreateEntryForm(initial={"group": token, "question": text}, prefix=f"c{group.id}"),
            "phrasings": [
                (m, PhrasingForm(initial={"group": token, "text": text, "faq": m.entry.pk}, prefix=f"p{group.id}"))
                for m in nearest
            ],
        }

    def _promote(self, request: HttpRequest) -> HttpResponse:
        from django_semsim.faq.models import FAQ, FAQPhrasing
        from semsim_pg.insights import resolve_group

        back = HttpResponseRedirect(request.get_full_path())
        action = request.POST.get("action")
        prefix = request.POST.get("prefix", "")
        if action == "create":
            if not self._can(request, "semsim_faq.add_faq"):
                raise PermissionDenied
            form: forms.Form = CreateEntryForm(request.POST, prefix=prefix)
        elif action == "phrasing":
            if not self._can_phrase(request):
                raise PermissionDenied
            form = PhrasingForm(request.POST, prefix=prefix)
        else:
            messages.error(request, "Unknown action: choose 'create FAQ entry' or 'add as phrasing'.")
            return back
        if not form.is_valid():
            messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
            return back
        data = form.cleaned_data
        try:
            hashes = signing.loads(data["group"], salt=_SALT)
        except signing.BadSignature:
            messages.error(request, "This group's form was altered or is too old: list the groups again.")
            return back

        def write() -> Any:
            with transaction.atomic():
                if action == "create":
                    created = FAQ.objects.create(
                        question=data["question"], answer=data["answer"], category=data.get("category") or ""
                    )
                    # the entry's history says who created it, and from what, as "Recent actions" shows
                    self.log_addition(request, created, "Added from unanswered questions.")
                    return created
                entry = self._faq_rows(request).filter(pk=data["faq"]).first()
                if entry is None:
                    raise SemsimError(f"FAQ entry {data['faq']} no longer exists: list the groups again.")
                if not self._can_phrase(request, entry):
                    raise PermissionDenied  # a per-entry refusal of the FAQ admin: nothing is written
                # marked: an FAQ import of a file that does not list it keeps it
                phrasing = FAQPhrasing.objects.create(faq=entry, text=data["text"], promoted=True)
                # the entry's history, as the phrasings inline writes it ("Added alternative phrasing ...")
                self.log_change(
                    request, entry, [{"added": {"name": str(FAQPhrasing._meta.verbose_name), "object": str(phrasing)}}]
                )
                return entry

        def described(entry: Any) -> str:
            return f"FAQ entry {entry.pk}" if action == "create" else f"phrasing of FAQ entry {entry.pk}"

        try:
            entry = resolve_group(log_engine(), faq_label(), hashes, described, write, table=log_table())
        except SemsimError as exc:
            messages.error(request, str(exc))
            return back
        url = reverse("admin:semsim_faq_faq_change", args=[entry.pk])
        verb = "Created FAQ entry" if action == "create" else "Added a phrasing to FAQ entry"
        messages.success(request, f"{verb} {entry.pk} ({entry.question}); its questions left the list. Edit: {url}")
        return back


def _bars(stats: Any) -> list[dict[str, Any]]:
    peak = max(stats.histogram_counts, default=0) or 1
    edges = stats.histogram_edges
    return [
        {"low": edges[i], "high": edges[i + 1], "count": c, "width": round(100 * c / peak)}
        for i, c in enumerate(stats.histogram_counts)
        if c
    ]


admin.site.register(QueryLog, QueryLogAdmin)
