"""The admin: a column saying whether each article's vector is current, and a re-encode action."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from django_semsim.conf import get_config
from django_semsim.expressions import TextHash
from django_semsim.models import companion_of

from .models import Article


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["title", "topic", "published", "vector_current"]
    list_filter = ["topic", "published"]
    search_fields = ["title", "body"]
    actions = ["reencode"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Article]:
        # computed by PostgreSQL for the page of rows: is there a vector of the current text?
        current = companion_of(Article).objects.filter(
            source=OuterRef("pk"),
            model=get_config().model_name,
            embedding__isnull=False,
            text_hash=OuterRef("_text_hash"),
        )
        queryset = super().get_queryset(request).alias(_text_hash=TextHash(Article.semantic_text_expression()))
        return queryset.annotate(_vector_current=Exists(current))

    @admin.display(boolean=True, description="vector current", ordering="_vector_current")
    def vector_current(self, obj: Any) -> bool:
        return bool(obj._vector_current)

    @admin.action(description="Re-encode the selected articles now")
    def reencode(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        from django_semsim.sync import drain

        result = drain(Article, pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{len(result.written)} article(s) re-encoded.", messages.SUCCESS)
