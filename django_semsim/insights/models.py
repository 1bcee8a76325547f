"""The query log's table in the site's database: the columns of the core's ``semsim.query_log``
(:func:`semsim_pg.queries.log_table` describes it to the core's statements)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from pgvector.django import VectorField

__all__ = ["QueryLog"]


class QueryLog(models.Model):
    """One logged search or FAQ question; ``answered`` is None for plain searches."""

    created_at = models.DateTimeField(db_index=True)
    collection = models.TextField(help_text="the FAQ model's label, or a collection's name")
    kind = models.TextField(choices=[("search", "search"), ("faq", "FAQ question")])
    mode = models.TextField(null=True, blank=True)
    k = models.IntegerField(null=True, blank=True)
    query_text = models.TextField(null=True, blank=True, help_text="empty when only the hash is logged")
    query_hash = models.TextField()
    model_name = models.TextField(null=True, blank=True)
    # No fixed dimension: several models may log into one table; grouping reads one model's rows.
    embedding = VectorField(null=True, blank=True)
    result_ids = ArrayField(models.TextField(), default=list)
    result_scores = ArrayField(models.FloatField(), default=list)
    top_score = models.FloatField(null=True, blank=True)
    answered = models.BooleanField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_as = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "semsim_insights_querylog"
        verbose_name = "logged query"
        verbose_name_plural = "logged queries"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["collection", "created_at"], name="semsim_querylog_coll_time")]

    def __str__(self) -> str:
        return str(self.query_text or self.query_hash[:12])
