"""The admin: search by meaning, a vector column and filter, a re-encode action, similar articles."""

from __future__ import annotations

from django.contrib import admin

from django_semsim.admin import SemanticAdminMixin

from .models import Article


@admin.register(Article)
class ArticleAdmin(SemanticAdminMixin, admin.ModelAdmin):
    list_display = ["title", "topic", "published"]
    list_filter = ["topic", "published"]
    search_fields = ["title", "body"]  # the keyword search, one click from the search by meaning
