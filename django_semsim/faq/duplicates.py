"""Pairs of FAQ entries whose questions mean the same: one SQL statement over the HNSW index."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import QuerySet

from django_semsim.conf import get_config
from django_semsim.expressions import max_distance
from django_semsim.faq.models import FAQ
from django_semsim.models import companion_of
from semsim_pg.errors import InvalidQuery
from semsim_pg.sql import METRICS

__all__ = ["DuplicatePair", "near_duplicates"]


@dataclass(frozen=True)
class DuplicatePair:
    first: FAQ
    second: FAQ
    similarity: float


def near_duplicates(
    min_similarity: float = 0.85,
    *,
    neighbours: int = 5,
    limit: int = 200,
    using: str = "default",
    entries: QuerySet[FAQ] | None = None,
) -> list[DuplicatePair]:
    """Pairs of entries whose questions mean the same, most similar first (by the FAQ's metric).

    One SQL statement: for each entry's vector a LATERAL subquery takes its nearest ``neighbours``
    through the companion's HNSW index (``ORDER BY <op> LIMIT``), and the similarity cut-off is
    applied to those few rows, so the cost grows with entries x neighbours, not entries squared.
    Written in SQL because the ORM has no LATERAL join.

    ``entries``: only pairs of these rows (say, those an admin shows a user); default ``FAQ.objects``.
    """
    if not 0 < float(min_similarity) <= 1:
        raise InvalidQuery(f"min_similarity must be in (0, 1], got {min_similarity!r}.")
    metric = METRICS[FAQ.semantic_metric]
    bound = max_distance(float(min_similarity), metric.name)
    table = connections[using].ops.quote_name(companion_of(FAQ)._meta.db_table)
    model_name = get_config().model_name
    similarity = metric.similarity_sql.format(d="n.distance")
    sql = f"""
        SELECT a.source_id, n.source_id, {similarity} AS similarity
        FROM {table} AS a
        CROSS JOIN LATERAL (
            SELECT b.source_id, b.embedding {metric.operator} a.embedding AS distance
            FROM {table} AS b
            WHERE b.model_name = %s AND b.embedding IS NOT NULL
            ORDER BY b.embedding {metric.operator} a.embedding
            LIMIT %s
        ) AS n
        WHERE a.model_name = %s AND a.embedding IS NOT NULL
          AND n.source_id > a.source_id{" AND n.distance <= %s" if bound is not None else ""}
        ORDER BY similarity DESC, a.source_id, n.source_id
        LIMIT %s
    """
    params: list[object] = [model_name, neighbours + 1, model_name, *([bound] if bound is not None else []), limit]
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(40, neighbours * 2))])
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # a pair is shown only when both rows are among the ones asked for (hidden rows never are)
    found = (
        (FAQ.objects.all() if entries is None else entries).using(using).in_bulk({pk for row in rows for pk in row[:2]})
    )
    return [DuplicatePair(found[a], found[b], float(sim)) for a, b, sim in rows if a in found and b in found]
