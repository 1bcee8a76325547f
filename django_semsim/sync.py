"""Keeping vectors current: the stale-row queue and how it is drained.

A source row is *stale* for the configured encoder model when its companion row is missing, has
no vector, or holds the hash of other text than the row's current text (ARCHITECTURE.md
decision 3). With ``semantic_fields`` the text and its hash are SQL expressions, so one anti-join
finds every stale row, whatever wrote it: ``save()``, ``bulk_create``, ``QuerySet.update``,
``bulk_update`` or raw SQL.

Draining, in batches:

1. *placeholders*: one ``INSERT ... SELECT ... WHERE NOT EXISTS ... ON CONFLICT DO NOTHING`` gives
   every source row a companion row (NULL vector), in its own short transaction. From then on
   the queue is made of companion rows, which workers can lock without ever locking the user's
   rows: a worker encoding a batch never blocks a ``save()``.
2. *claim*: ``SELECT ... FOR UPDATE OF companion SKIP LOCKED LIMIT n`` takes up to n stale rows
   with their current text; parallel workers get disjoint batches.
3. *encode* the texts in one call. If the encoder fails the transaction rolls back and the rows
   stay stale: nothing is lost, the next pass retries.
4. *compare-and-set write*: one ``UPDATE ... FROM unnest(...)`` writes a vector only where the
   source row's text hash, computed in SQL now, still equals the hash of the text that was
   encoded. A row whose text changed meanwhile keeps its older vector (still searchable) and
   stays stale for the next pass.

Models whose text is only known in Python (``semantic_text()`` overridden without
``semantic_text_expression()``) follow the same steps, with the staleness test and the
compare-and-set done in Python on the loaded objects (the rows are share-locked for the write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models.sql import Query

from django_semsim.conf import get_config
from django_semsim.models import SemanticModel, TextHash, companion_of
from semsim_pg.encoder import text_hash
from semsim_pg.sql import vector_literal

if TYPE_CHECKING:
    from semsim_pg.encoder import Encoder

__all__ = [
    "DrainResult",
    "ModelStatus",
    "add_placeholders",
    "drain",
    "drain_batch",
    "enqueue",
    "get_model_encoder",
    "mark_all_stale",
    "model_status",
    "remove_other_models",
]

logger = logging.getLogger(__name__)


def get_model_encoder() -> Encoder:
    """The process-wide encoder of ``SEMSIM['MODEL']`` (the core's, shared with semsim_pg)."""
    from semsim_pg.encoder import get_encoder

    config = get_config()
    return get_encoder(config.model, device=config.device)


@dataclass
class DrainResult:
    """What one drain (one or more batches) did for one model."""

    model: str
    batches: int = 0
    claimed: int = 0
    encoded: int = 0
    #: primary keys of source rows that got a vector
    written: list[Any] = field(default_factory=list)
    #: rows whose text changed while they were encoded (left stale for the next pass)
    conflicts: int = 0

    def add(self, other: DrainResult) -> None:
        self.batches += other.batches
        self.claimed += other.claimed
        self.encoded += other.encoded
        self.written.extend(other.written)
        self.conflicts += other.conflicts


@dataclass(frozen=True)
class _Tables:
    """Quoted names and compiled text/hash SQL of one semantic model."""

    source: str
    source_pk: str
    companion: str
    companion_pk: str
    source_fk: str
    model_col: str
    text_sql: str | None
    text_params: tuple[Any, ...]
    hash_sql: str | None
    hash_params: tuple[Any, ...]


def _tables(model: type[SemanticModel], connection: Any) -> _Tables:
    quote = connection.ops.quote_name
    companion = companion_of(model)
    copts, sopts = companion._meta, model._meta
    text_sql = hash_sql = None
    text_params: tuple[Any, ...] = ()
    hash_params: tuple[Any, ...] = ()
    expression = model.semantic_text_expression()
    if expression is not None:
        text_sql, text_params = _compile(model, expression, connection)
        hash_sql, hash_params = _compile(model, TextHash(expression), connection)
    return _Tables(
        source=quote(sopts.db_table),
        source_pk=f"{quote(sopts.db_table)}.{quote(sopts.pk.column)}",
        companion=quote(copts.db_table),
        companion_pk=quote(copts.pk.column),
        source_fk=quote(copts.get_field("source").column),
        model_col=quote(copts.get_field("model").column),
        text_sql=text_sql,
        text_params=text_params,
        hash_sql=hash_sql,
        hash_params=hash_params,
    )


def _compile(model: type[models.Model], expression: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
    """SQL of an expression over the source table, columns qualified by the table's own name."""
    query = Query(model)
    resolved = expression.resolve_expression(query, allow_joins=False)
    sql, params = query.get_compiler(connection=connection).compile(resolved)
    return sql, tuple(params)


def _ensure_model_row(using: str) -> None:
    from django_semsim.models import EmbeddingModel

    config = get_config()
    quote = connections[using].ops.quote_name
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(EmbeddingModel._meta.db_table)} (name, dimension, created_at) "
            "VALUES (%s, %s, now()) ON CONFLICT (name) DO NOTHING",
            [config.model_name, config.dimensions],
        )


def add_placeholders(
    model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS, pks: Sequence[Any] | None = None
) -> int:
    """Give every source row (or those in ``pks``) a companion row for the configured model."""
    config = get_config()
    t = _tables(model, connections[using])
    restrict = f" AND {t.source_pk} = ANY(%s)" if pks is not None else ""
    sql = (
        f"INSERT INTO {t.companion} ({t.source_fk}, {t.model_col}, text_hash, embedding, created_at, updated_at) "
        f"SELECT {t.source_pk}, %s, NULL, NULL, now(), now() FROM {t.source} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {t.companion} e WHERE e.{t.source_fk} = {t.source_pk} "
        f"AND e.{t.model_col} = %s){restrict} "
        f"ON CONFLICT ({t.source_fk}, {t.model_col}) DO NOTHING"
    )
    params: list[Any] = [config.model_name, config.model_name]
    if pks is not None:
        params.append(list(pks))
    with transaction.atomic(using=using):
        _ensure_model_row(using)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)


def drain_batch(
    model: type[SemanticModel],
    *,
    using: str = DEFAULT_DB_ALIAS,
    pks: Sequence[Any] | None = None,
    batch_size: int | None = None,
    encoder: Encoder | None = None,
) -> DrainResult:
    """Claim, encode and write one batch of stale rows; raises if the encoder fails (rows stay stale)."""
    config = get_config()
    size = batch_size or config.batch_size
    result = DrainResult(model=model._meta.label, batches=1)
    connection = connections[using]
    t = _tables(model, connection)
    with transaction.atomic(using=using):
        if t.hash_sql is not None:
            claimed = _claim_sql(t, config.model_name, size, pks, connection)
        else:
            claimed = _claim_python(model, t, config.model_name, size, pks, using)
        result.claimed = len(claimed)
        if not claimed:
            return result
        texts = [text for _, _, text in claimed]
        vectors = (encoder or get_model_encoder()).encode(texts, batch_size=size, show_progress_bar=False)
        result.encoded = len(texts)
        rows = [
            (cid, text_hash(text), vector_literal(vec)) for (cid, _, text), vec in zip(claimed, vectors, strict=True)
        ]
        if t.hash_sql is None:
            rows = _still_current_python(model, claimed, rows, t, using)
        written = _write(t, rows, config.dimensions, connection)
        result.written = written
        result.conflicts = len(claimed) - len(written)
    if result.conflicts:
        logger.info(
            "%s: %d row(s) changed while being encoded; they stay stale for the next pass",
            model._meta.label,
            result.conflicts,
        )
    return result


def _claim_sql(
    t: _Tables, model_name: str, size: int, pks: Sequence[Any] | None, connection: Any
) -> list[tuple[Any, Any, str]]:
    restrict = f" AND e.{t.source_fk} = ANY(%s)" if pks is not None else ""
    sql = (
        f"SELECT e.{t.companion_pk}, e.{t.source_fk}, {t.text_sql} "
        f"FROM {t.companion} e JOIN {t.source} ON {t.source_pk} = e.{t.source_fk} "
        f"WHERE e.{t.model_col} = %s AND (e.embedding IS NULL OR e.text_hash IS DISTINCT FROM {t.hash_sql}){restrict} "
        f"ORDER BY e.{t.companion_pk} LIMIT %s FOR UPDATE OF e SKIP LOCKED"
    )
    params: list[Any] = [*t.text_params, model_name, *t.hash_params]
    if pks is not None:
        params.append(list(pks))
    params.append(size)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(cid, spk, text) for cid, spk, text in cursor.fetchall()]


def _claim_python(
    model: type[SemanticModel], t: _Tables, model_name: str, size: int, pks: Sequence[Any] | None, using: str
) -> list[tuple[Any, Any, str]]:
    """Scan companion rows in key order, locking them, until ``size`` stale ones are found."""
    connection = connections[using]
    restrict = f" AND e.{t.source_fk} = ANY(%s)" if pks is not None else ""
    sql = (
        f"SELECT e.{t.companion_pk}, e.{t.source_fk}, e.text_hash, e.embedding IS NULL FROM {t.companion} e "
        f"WHERE e.{t.model_col} = %s AND e.{t.companion_pk} > %s{restrict} "
        f"ORDER BY e.{t.companion_pk} LIMIT %s FOR UPDATE OF e SKIP LOCKED"
    )
    claimed: list[tuple[Any, Any, str]] = []
    last = -1
    page = max(size, 500)
    while len(claimed) < size:
        params: list[Any] = [model_name, last]
        if pks is not None:
            params.append(list(pks))
        params.append(page)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        objects = model._base_manager.using(using).in_bulk([spk for _, spk, _, _ in rows])
        for cid, spk, stored_hash, no_vector in rows:
            obj = objects.get(spk)
            if obj is None:
                continue
            text = obj.semantic_text()
            if no_vector or stored_hash != text_hash(text):
                claimed.append((cid, spk, text))
                if len(claimed) == size:
                    break
    return claimed


def _still_current_python(
    model: type[SemanticModel],
    claimed: list[tuple[Any, Any, str]],
    rows: list[tuple[Any, str, str]],
    t: _Tables,
    using: str,
) -> list[tuple[Any, str, str]]:
    """Compare-and-set for Python-only text: share-lock the sources, recompute, keep the unchanged."""
    source_pks = [spk for _, spk, _ in claimed]
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {t.source} WHERE {t.source_pk} = ANY(%s) FOR SHARE", [source_pks])
    objects = model._base_manager.using(using).in_bulk(source_pks)
    keep = []
    for (_, spk, _), row in zip(claimed, rows, strict=True):
        obj = objects.get(spk)
        if obj is not None and obj.semantic_text_hash() == row[1]:
            keep.append(row)
    return keep


def _write(t: _Tables, rows: list[tuple[Any, str, str]], dimensions: int, connection: Any) -> list[Any]:
    if not rows:
        return []
    check = f" AND {t.source_pk} = e.{t.source_fk} AND {t.hash_sql} = v.h" if t.hash_sql is not None else ""
    source = f", {t.source}" if t.hash_sql is not None else ""
    sql = (
        f"UPDATE {t.companion} AS e SET embedding = v.emb::vector({int(dimensions)}), text_hash = v.h, "
        f"updated_at = now() FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, h, emb){source} "
        f"WHERE e.{t.companion_pk} = v.id{check} RETURNING e.{t.source_fk}"
    )
    ids, hashes, literals = (list(column) for column in zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, hashes, literals, *(t.hash_params if t.hash_sql is not None else ())])
        return [row[0] for row in cursor.fetchall()]


def drain(
    model: type[SemanticModel],
    *,
    using: str = DEFAULT_DB_ALIAS,
    pks: Sequence[Any] | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    encoder: Encoder | None = None,
    on_batch: Callable[[DrainResult], None] | None = None,
) -> DrainResult:
    """Encode stale rows of ``model`` (all, or those in ``pks``) until none is left or claimable.

    A row whose text changed while it was encoded is claimed again with its new text: another
    process saving it meanwhile found it locked and skipped it, so this drain must finish it.
    After three batches in a row that wrote nothing, the drain stops (text rewritten faster than
    it can be encoded) and leaves the rows to the next pass.
    """
    size = batch_size or get_config().batch_size
    total = DrainResult(model=model._meta.label)
    add_placeholders(model, using=using, pks=pks)
    stalls = 0
    while max_batches is None or total.batches < max_batches:
        result = drain_batch(model, using=using, pks=pks, batch_size=size, encoder=encoder)
        if result.claimed == 0:
            break
        total.add(result)
        if on_batch is not None:
            on_batch(result)
        stalls = 0 if result.written else stalls + 1
        if stalls >= 3:
            logger.warning(
                "%s: rows keep changing while being encoded; leaving them for the next pass", model._meta.label
            )
            break
        if result.claimed < size and not result.conflicts:
            break  # a short batch: nothing else was claimable (rows locked by others are theirs to write)
    return total


def mark_all_stale(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Forget which text every vector came from (vectors stay searchable) so that all are re-encoded."""
    config = get_config()
    t = _tables(model, connections[using])
    with connections[using].cursor() as cursor:
        cursor.execute(f"UPDATE {t.companion} SET text_hash = NULL WHERE {t.model_col} = %s", [config.model_name])
        return int(cursor.rowcount)


def remove_other_models(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Delete vectors made by encoder models other than the configured one."""
    config = get_config()
    t = _tables(model, connections[using])
    with connections[using].cursor() as cursor:
        cursor.execute(f"DELETE FROM {t.companion} WHERE {t.model_col} <> %s", [config.model_name])
        return int(cursor.rowcount)


@dataclass
class ModelStatus:
    label: str
    model_name: str
    rows: int
    current: int
    stale: int
    missing: int
    other_models: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "encoder": self.model_name,
            "rows": self.rows,
            "current": self.current,
            "stale": self.stale,
            "missing": self.missing,
            "other_models": self.other_models,
        }


def model_status(model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS) -> ModelStatus:
    """Rows, current, stale (older vector) and missing (no vector) for the configured encoder model."""
    config = get_config()
    connection = connections[using]
    t = _tables(model, connection)
    join = f"FROM {t.source} LEFT JOIN {t.companion} e ON e.{t.source_fk} = {t.source_pk} AND e.{t.model_col} = %s"
    with connection.cursor() as cursor:
        if t.hash_sql is not None:
            cursor.execute(
                f"SELECT count(*), count(*) FILTER (WHERE e.embedding IS NOT NULL AND e.text_hash = {t.hash_sql}), "
                f"count(*) FILTER (WHERE e.embedding IS NULL) {join}",
                [*t.hash_params, config.model_name],
            )
            rows, current, missing = cursor.fetchone()
        else:
            rows, current, missing = _status_python(model, t, join, config.model_name, using)
        cursor.execute(
            f"SELECT {t.model_col}, count(*) FROM {t.companion} WHERE {t.model_col} <> %s GROUP BY 1 ORDER BY 1",
            [config.model_name],
        )
        others = {name: int(n) for name, n in cursor.fetchall()}
    return ModelStatus(
        model._meta.label,
        config.model_name,
        int(rows),
        int(current),
        int(rows - current - missing),
        int(missing),
        others,
    )


def _status_python(
    model: type[SemanticModel], t: _Tables, join: str, model_name: str, using: str
) -> tuple[int, int, int]:
    rows = current = missing = 0
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {t.source_pk}, e.text_hash, e.embedding IS NULL {join}", [model_name])
        stored = {spk: (h, none) for spk, h, none in cursor.fetchall()}
    for obj in model._base_manager.using(using).iterator(chunk_size=2000):
        rows += 1
        h, no_vector = stored.get(obj.pk, (None, True))
        if no_vector:
            missing += 1
        elif h == obj.semantic_text_hash():
            current += 1
    return rows, current, missing


# immediate mode: batch what a transaction changed, drain after it commits --------------------
_local = threading.local()


def enqueue(model: type[SemanticModel], pk: Any, using: str) -> None:
    """Remember ``pk`` and drain after the current transaction commits (at once in autocommit).

    Every save registers a commit hook, and the first hook to run drains everything the
    transaction queued, in one batch; the others find nothing left. Keys queued by a transaction
    that rolled back are drained with the next commit, where the staleness test skips them.
    """
    pending: dict[str, dict[type[SemanticModel], set[Any]]] = _local.__dict__.setdefault("pending", {})
    pending.setdefault(using, {}).setdefault(model, set()).add(pk)
    transaction.on_commit(partial(flush, using), using=using)


def flush(using: str = DEFAULT_DB_ALIAS) -> list[DrainResult]:
    """Drain what :func:`enqueue` collected for ``using``; an encoder failure is logged, rows stay stale."""
    pending: dict[str, dict[type[SemanticModel], set[Any]]] = _local.__dict__.setdefault("pending", {})
    batches = pending.pop(using, {})
    results = []
    for model, pks in batches.items():
        try:
            results.append(drain(model, using=using, pks=sorted(pks, key=str)))
        except Exception:
            # The user's transaction has committed; failing here would only hide the cause.
            logger.exception(
                "Could not encode %d changed %s row(s); they stay stale until the next drain "
                "(manage.py semsim_reindex --stale, or semsim_worker).",
                len(pks),
                model._meta.label,
            )
    return results


def iter_models(labels: Iterable[str] | None = None) -> list[type[SemanticModel]]:
    """Semantic models by ``app_label.ModelName`` (all of them when no label is given)."""
    from django.apps import apps

    from django_semsim.models import semantic_models

    everything = semantic_models()
    if not labels:
        return everything
    chosen = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            from semsim_pg.errors import InvalidInput

            raise InvalidInput(f"No model {label!r}: give app_label.ModelName, e.g. articles.Article.") from None
        if model not in everything:
            from semsim_pg.errors import InvalidInput

            names = ", ".join(m._meta.label for m in everything) or "none"
            raise InvalidInput(f"{label} is not a semantic model (semantic models: {names}).")
        chosen.append(model)
    return chosen
