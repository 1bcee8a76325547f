"""Test models: SQL-computable text (Article, with a proxy and a multi-table child), Python-only text
(Note), long texts split into passages (Report), a related model for joins."""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models

from django_semsim.models import SemanticModel


class Category(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return str(self.name)


class Article(SemanticModel):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, null=True)
    published = models.BooleanField(default=True)
    views = models.IntegerField(default=0)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL)

    semantic_fields = ["title", "body"]

    class Meta:
        # the README's recipe: the expression hybrid_search computes the words with, GIN-indexed
        indexes = [GinIndex(SearchVector("title", "body", config="english"), name="article_words")]

    def __str__(self) -> str:
        return str(self.title)


class Note(SemanticModel):
    """Text built in Python only: exercises the slower Python staleness path."""

    heading = models.CharField(max_length=200)
    tags = models.CharField(max_length=200, blank=True)

    def semantic_text(self) -> str:
        return f"{self.heading} (tags: {self.tags})" if self.tags else self.heading


class Manual(SemanticModel):
    """Automatic updates switched off: only reindex/worker encode it."""

    text = models.TextField()

    semantic_fields = ["text"]
    semantic_auto_update = False


class Paper(SemanticModel):
    """Words stored in a generated tsvector column with a GIN index: hybrid_search reads, not computes, them."""

    title = models.CharField(max_length=300)
    abstract = models.TextField(blank=True, default="")
    words = models.GeneratedField(
        expression=SearchVector("title", "abstract", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    semantic_fields = ["title", "abstract"]
    search_config = "english"
    search_vector_field = "words"

    class Meta:
        indexes = [GinIndex(fields=["words"], name="paper_words")]

    def __str__(self) -> str:
        return str(self.title)


class Report(SemanticModel):
    """Long texts split into passages of 32 tokens: searches rank reports by their best passage."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    published = models.BooleanField(default=True)

    semantic_fields = ["title", "body"]
    semantic_chunking = 32

    class Meta:
        indexes = [GinIndex(SearchVector("title", "body", config="english"), name="report_words")]

    def __str__(self) -> str:
        return str(self.title)


class FeaturedArticle(Article):
    """A proxy: its saves are sent as FeaturedArticle, its vectors are Article's."""

    class Meta:
        proxy = True


class Recipe(Article):
    """A multi-table child: its rows are Articles (same key), encoded and searched as Articles."""

    cuisine = models.CharField(max_length=50, blank=True, default="")

    def __str__(self) -> str:
        return str(self.title)
