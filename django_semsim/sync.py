"""Keeping vectors current: the stale-row queue, draining it, and immediate mode's background encoder.

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

Immediate mode (``SYNC: "immediate"``) hands what a transaction changed to a background thread
after commit (:mod:`django_semsim.background`; :func:`enqueue`, :func:`wait_idle` and
:func:`stop_background` are imported from here), with the rows saved with unchanged text, which
it verifies in one statement per batch (:func:`stale_keys`) before draining the stale ones.

Models whose text is only known in Python (``semantic_text()`` overridden without
``semantic_text_expression()``) follow the same steps, with the staleness test and the
compare-and-set done in Python on the loaded objects (the rows are share-locked for the write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, models, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, Subquery
from django.db.models.sql import Query

from django_semsim.background import enqueue, stop_background, wait_idle
from django_semsim.conf import get_config
from django_semsim.encoding import get_model_encoder
from django_semsim.models import EmbeddingModel, SemanticModel, companion_of
from django_semsim.passages import encode_passages, stored_hash, write_passages_sql
from semsim_pg.pipeline import Lanes
from semsim_pg.sql import vector_literal

if TYPE_CHECKING:
    from semsim_pg.chunking import Passage
    from semsim_pg.encoder import Encoder

__all__ = [
    "DrainResult",
    "add_placeholders",
    "drain",
    "drain_batch",
    "enqueue",
    "stale_keys",
    "stop_background",
    "wait_idle",
]

logger = logging.getLogger(__name__)

#: batches a drain has in hand at once: while one encodes, the other is claimed or written
DRAIN_LANES = 2


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
    #: the source key's SQL type (an array of them carries a batch's keys)
    pk_type: str
    hash_sql: str | None
    hash_params: tuple[Any, ...]


def _tables(model: type[SemanticModel], connection: Any) -> _Tables:
    quote = connection.ops.quote_name
    companion = companion_of(model)
    copts, sopts = companion._meta, model._meta
    hash_sql = None
    hash_params: tuple[Any, ...] = ()
    expression = model.semantic_hash_expression()
    if expression is not None:
        hash_sql, hash_params = _compile(model, expression, connection)
    return _Tables(
        source=quote(sopts.db_table),
        source_pk=f"{quote(sopts.db_table)}.{quote(sopts.pk.column)}",
        companion=quote(copts.db_table),
        companion_pk=quote(copts.pk.column),
        source_fk=quote(copts.get_field("source").column),
        model_col=quote(copts.get_field("model").column),
        pk_type=sopts.pk.rel_db_type(connection),
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
    config = get_config()
    row = EmbeddingModel(name=config.model_name, dimension=config.dimensions)
    EmbeddingModel.objects.using(using).bulk_create([row], ignore_conflicts=True)


#: tries of a placeholder insert whose commit met a row deleted meanwhile (each try skips the rows gone)
PLACEHOLDER_TRIES = 5

#: PostgreSQL's SQLSTATE for foreign_key_violation
_FOREIGN_KEY_VIOLATION = "23503"


def add_placeholders(
    model: type[SemanticModel], *, using: str = DEFAULT_DB_ALIAS, pks: Sequence[Any] | None = None
) -> int:
    """Give every source row (or those in ``pks``) a companion row for the configured model.

    Written in SQL: the ORM has no ``INSERT ... SELECT`` (bulk_create would pull every key into Python).

    Django's foreign keys are checked at commit (``DEFERRABLE INITIALLY DEFERRED``): a source row
    deleted by another transaction after this statement read it fails the commit, and every
    placeholder with it (a row created and deleted at once left the rest of its batch without
    vectors). So the placeholders whose row is gone by the end are removed before the commit,
    which leaves the check a gap of one statement, and a commit that still meets a deleted row is
    tried again: each try reads afresh, without the rows deleted before it. The source rows are
    not locked (a user's ``delete()`` would wait for this commit): Django deletes the companion
    rows first and the source rows next, and a placeholder committed in between goes with its
    source row by the database's ``ON DELETE CASCADE`` (:mod:`django_semsim.cascade`).
    """
    config = get_config()
    t = _tables(model, connections[using])
    restrict = f" AND {t.source_pk} = ANY(%s)" if pks is not None else ""
    # in key order: concurrent drains insert (and wait for each other's inserts) in the same order
    insert = (
        f"INSERT INTO {t.companion} ({t.source_fk}, {t.model_col}, passage, passage_start, text_hash, embedding, "
        "created_at, updated_at) "
        f"SELECT {t.source_pk}, %s, 0, 0, NULL, NULL, now(), now() FROM {t.source} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {t.companion} e WHERE e.{t.source_fk} = {t.source_pk} "
        f"AND e.{t.model_col} = %s){restrict} ORDER BY {t.source_pk} "
        f"ON CONFLICT ({t.source_fk}, {t.model_col}, passage) DO NOTHING RETURNING {t.source_fk}"
    )
    params: list[Any] = [config.model_name, config.model_name]
    if pks is not None:
        params.append(list(pks))
    # a new statement, a new snapshot (READ COMMITTED): it sees the deletes committed meanwhile
    gone = (
        f"DELETE FROM {t.companion} AS e WHERE e.{t.source_fk} = ANY(%s) AND e.{t.model_col} = %s "
        "AND e.passage = 0 "
        f"AND NOT EXISTS (SELECT 1 FROM {t.source} WHERE {t.source_pk} = e.{t.source_fk})"
    )
    tries = 0
    while True:
        tries += 1
        try:
            with transaction.atomic(using=using):
                _ensure_model_row(using)
                with connections[using].cursor() as cursor:
                    cursor.execute(insert, params)
                    added = [row[0] for row in cursor.fetchall()]
                    if not added:
                        return 0
                    cursor.execute(gone, [added, config.model_name])
                    return len(added) - int(cursor.rowcount)
        except IntegrityError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != _FOREIGN_KEY_VIOLATION or tries >= PLACEHOLDER_TRIES:
                raise
            logger.debug("%s: a row was deleted while its placeholder was added; trying again", model._meta.label)


def drain_batch(
    model: type[SemanticModel],
    *,
    using: str = DEFAULT_DB_ALIAS,
    pks: Sequence[Any] | None = None,
    batch_size: int | None = None,
    encoder: Encoder | None = None,
    turn: AbstractContextManager[Any] | None = None,
) -> DrainResult:
    """Claim, encode and write one batch of stale rows; raises if the encoder fails (rows stay stale).

    ``turn`` is held while the batch encodes (:class:`semsim_pg.pipeline.Lanes`: one lane encodes
    while the other claims and writes)."""
    config = get_config()
    size = batch_size or config.batch_size
    result = DrainResult(model=model._meta.label, batches=1)
    connection = connections[using]
    t = _tables(model, connection)
    with transaction.atomic(using=using):
        if t.hash_sql is not None:
            claimed = _claim_sql(model, config.model_name, size, pks, using)
        else:
            claimed = _claim_python(model, t, config.model_name, size, pks, using)
        result.claimed = len(claimed)
        if not claimed:
            return result
        texts = [text for _, _, text in claimed]
        chunking = model.semantic_passages()
        with turn or nullcontext():
            # In the model's own batches (SEMSIM_BATCH_SIZE), not the claim's: one model batch of a
            # whole claim pads every text to the longest of hundreds (256 Tatoeba sentences encoded
            # 3x slower in one batch of 256 than in batches of 64 sorted by length).
            model_encoder = encoder or get_model_encoder()
            if chunking is None:
                encoded: Any = model_encoder.encode(texts, show_progress_bar=False)
            else:  # each text's passages, each with its vector
                encoded = encode_passages(texts, model_encoder, chunking, model_encoder.batch_size)
        result.encoded = len(texts)
        rows: list[tuple[Any, str, Any]] = [
            (cid, stored_hash(model, text), value if chunking is not None else vector_literal(value))
            for (cid, _, text), value in zip(claimed, encoded, strict=True)
        ]
        if t.hash_sql is None:
            rows = _still_current_python(model, claimed, rows, t, using)
        if chunking is None:
            written = _write(t, rows, config.dimensions, connection)
        else:
            sources = {cid: spk for cid, spk, _ in claimed}
            written = _write_passages(t, [(sources[cid], h, p) for cid, h, p in rows], config, connection)
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
    model: type[SemanticModel], model_name: str, size: int, pks: Sequence[Any] | None, using: str
) -> list[tuple[Any, Any, str]]:
    """Lock up to ``size`` stale companion rows (``FOR UPDATE OF`` the companion ``SKIP LOCKED``).

    Stale: no vector, or no source row whose current text hash equals the stored one (a NOT EXISTS
    that PostgreSQL runs as an anti-join). The text is read for the claimed rows only.
    """
    expression = model.semantic_text_expression()
    sources = model._base_manager.using(using).filter(pk=OuterRef("source_id"))
    current = sources.alias(_hash=model.semantic_hash_expression()).filter(_hash=OuterRef("text_hash"))
    claim = (
        companion_of(model)
        ._base_manager.using(using)
        .filter(model_id=model_name, passage=0)  # passage 0 stands for the object (all are written together)
        .filter(Q(embedding__isnull=True) | ~Exists(current))
    )
    if pks is not None:
        claim = claim.filter(source_id__in=list(pks))
    claim = claim.annotate(_text=Subquery(sources.annotate(_t=expression).values("_t")[:1]))
    rows = claim.order_by("pk").select_for_update(skip_locked=True, of=("self",))
    return list(rows.values_list("pk", "source_id", "_text")[:size])


def stale_keys(model: type[SemanticModel], pks: Sequence[Any], *, using: str = DEFAULT_DB_ALIAS) -> list[Any]:
    """Those of ``pks`` whose rows are stale for the configured encoder model, in one statement.

    The claim's test (no vector, or the hash of another text than the row holds now, computed in
    SQL), for these keys only and without locking anything: immediate mode verifies with it the
    rows saved with the text they were loaded with. A key whose row is gone is left out; a model
    whose text is only known in Python gets every key back (the drain's own test decides).
    """
    expression = model.semantic_hash_expression()
    if expression is None:
        return list(pks)
    current = (
        companion_of(model)
        ._base_manager.using(using)
        .filter(
            source_id=OuterRef("pk"),
            model_id=get_config().model_name,
            passage=0,
            embedding__isnull=False,
            text_hash=OuterRef("_hash"),
        )
    )
    rows = model._base_manager.using(using).filter(pk__in=list(pks)).alias(_hash=expression)
    return list(rows.filter(~Exists(current)).values_list("pk", flat=True))


def _claim_python(
    model: type[SemanticModel], t: _Tables, model_name: str, size: int, pks: Sequence[Any] | None, using: str
) -> list[tuple[Any, Any, str]]:
    """Scan companion rows in key order, locking them, until ``size`` stale ones are found."""
    companions = companion_of(model)._base_manager.using(using).filter(model_id=model_name, passage=0)
    if pks is not None:
        companions = companions.filter(source_id__in=list(pks))
    companions = companions.annotate(
        _no_vector=ExpressionWrapper(Q(embedding__isnull=True), output_field=BooleanField())
    ).order_by("pk")
    claimed: list[tuple[Any, Any, str]] = []
    last = -1
    page = max(size, 500)
    while len(claimed) < size:
        locked = companions.filter(pk__gt=last).select_for_update(skip_locked=True, of=("self",))
        rows = list(locked.values_list("pk", "source_id", "text_hash", "_no_vector")[:page])
        if not rows:
            break
        last = rows[-1][0]
        objects = model._base_manager.using(using).in_bulk([spk for _, spk, _, _ in rows])
        for cid, spk, stored, no_vector in rows:
            obj = objects.get(spk)
            if obj is None:
                continue
            text = obj.semantic_text()
            if no_vector or stored != stored_hash(model, text):
                claimed.append((cid, spk, text))
                if len(claimed) == size:
                    break
    return claimed


def _still_current_python(
    model: type[SemanticModel],
    claimed: list[tuple[Any, Any, str]],
    rows: list[tuple[Any, str, Any]],
    t: _Tables,
    using: str,
) -> list[tuple[Any, str, Any]]:
    """Compare-and-set for Python-only text: share-lock the sources, recompute, keep the unchanged."""
    source_pks = [spk for _, spk, _ in claimed]
    # FOR SHARE: the ORM's select_for_update() has no share lock (no_key=True is still exclusive)
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {t.source} WHERE {t.source_pk} = ANY(%s) FOR SHARE", [source_pks])
    objects = model._base_manager.using(using).in_bulk(source_pks)
    keep = []
    for (_, spk, _), row in zip(claimed, rows, strict=True):
        obj = objects.get(spk)
        if obj is not None and obj.semantic_text_hash() == row[1]:
            keep.append(row)
    return keep


def _write(t: _Tables, rows: list[tuple[Any, str, Any]], dimensions: int, connection: Any) -> list[Any]:
    """One compare-and-set ``UPDATE ... FROM unnest(...)`` for the batch: the ORM's bulk_update()
    can neither join the source row for the hash check nor return the rows it wrote. The row is
    passage 0, the whole text; passages left from a model that used to split are removed."""
    if not rows:
        return []
    check = f" AND {t.source_pk} = e.{t.source_fk} AND {t.hash_sql} = v.h" if t.hash_sql is not None else ""
    source = f", {t.source}" if t.hash_sql is not None else ""
    sql = (
        f"WITH w AS (UPDATE {t.companion} AS e SET embedding = v.emb::vector({int(dimensions)}), text_hash = v.h, "
        "passage_start = 0, passage_end = NULL, "
        f"updated_at = now() FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, h, emb){source} "
        f"WHERE e.{t.companion_pk} = v.id{check} RETURNING e.{t.source_fk} AS sid, e.{t.model_col} AS m), "
        f"removed AS (DELETE FROM {t.companion} AS d USING w WHERE d.{t.source_fk} = w.sid "
        f"AND d.{t.model_col} = w.m AND d.passage > 0) "
        "SELECT sid FROM w"
    )
    ids, hashes, literals = (list(column) for column in zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, hashes, literals, *(t.hash_params if t.hash_sql is not None else ())])
        return [row[0] for row in cursor.fetchall()]


def _write_passages(
    t: _Tables, rows: list[tuple[Any, str, list[tuple[Passage, str]]]], config: Any, connection: Any
) -> list[Any]:
    """The passages of each (source key, stored hash, passages) in one statement
    (:func:`django_semsim.passages.write_passages_sql`): compare-and-set per object."""
    if not rows:
        return []
    sql = write_passages_sql(
        companion=t.companion,
        source_fk=t.source_fk,
        model_col=t.model_col,
        source=t.source,
        source_pk=t.source_pk,
        pk_type=t.pk_type,
        hash_sql=t.hash_sql,
        dimensions=config.dimensions,
    )
    flat = [(spk, h, p, vec) for spk, h, passages in rows for p, vec in passages]
    params: list[Any] = [
        [spk for spk, _, _, _ in flat],
        [h for _, h, _, _ in flat],
        [vec for _, _, _, vec in flat],
        [p.index for _, _, p, _ in flat],
        [p.start for _, _, p, _ in flat],
        [p.end for _, _, p, _ in flat],
        config.model_name,
        *(t.hash_params if t.hash_sql is not None else ()),
        config.model_name,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
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

    Two batches are in hand at once (:data:`DRAIN_LANES`, :class:`semsim_pg.pipeline.Lanes`):
    while one encodes, the other is claimed or written, each in its own transaction, exactly as
    two workers would. ``on_batch`` is called once per batch, from either lane, never twice at
    once.

    A row whose text changed while it was encoded is claimed again with its new text: another
    process saving it meanwhile found it locked and skipped it, so this drain must finish it.
    After three batches in a row that wrote nothing, the drain stops (text rewritten faster than
    it can be encoded) and leaves the rows to the next pass.
    """
    size = batch_size or get_config().batch_size
    total = DrainResult(model=model._meta.label)
    add_placeholders(model, using=using, pks=pks)
    encoder = encoder or get_model_encoder()
    # Each extra lane's thread has its own connection (looked up in that thread): closed when it ends.
    lanes = Lanes(DRAIN_LANES, name="semsim-drain", on_exit=lambda: connections[using].close())
    state = threading.Lock()  # guards what the lanes share: the total, the counters, on_batch
    started = 0
    stalls = 0

    def step() -> bool:
        """One batch; whether this lane should take another."""
        nonlocal started, stalls
        with state:
            if max_batches is not None and started >= max_batches:
                return False
            started += 1
        result = drain_batch(model, using=using, pks=pks, batch_size=size, encoder=encoder, turn=lanes.turn)
        if result.claimed == 0:
            return False
        with state:
            total.add(result)
            if on_batch is not None:
                on_batch(result)
            stalls = 0 if result.written else stalls + 1
            if stalls >= 3:
                if not lanes.stop.is_set():
                    logger.warning(
                        "%s: rows keep changing while being encoded; leaving them for the next pass",
                        model._meta.label,
                    )
                lanes.stop.set()
                return False
        # A short batch: nothing else was claimable (rows locked by others are theirs to write).
        return result.claimed == size or bool(result.conflicts)

    lanes.run(step)
    return total
