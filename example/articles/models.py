"""One semantic model: the vectors live in the generated ``ArticleEmbedding`` companion."""

from __future__ import annotations

from django.db import models

from django_semsim.models import SemanticModel


class Article(SemanticModel):
    title = models.CharField(max_length=200)
    body = models.TextField()
    topic = models.CharField(max_length=50, db_index=True)
    published = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # The text that is embedded: title and body, joined by a newline (the same in SQL and Python).
    semantic_fields = ["title", "body"]

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return str(self.title)
