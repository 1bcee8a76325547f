"""The companion's foreign key to its source row deletes in the database too (``ON DELETE CASCADE``).

Why: Django deletes an object's companion rows in one statement and the object in the next
(its ``on_delete=CASCADE`` lives in Python, the Collector), and its PostgreSQL foreign keys are
``DEFERRABLE INITIALLY DEFERRED`` ``NO ACTION``, checked at commit. A background drain
(``SYNC: "immediate"``, a worker) that commits a companion row for that object between the two
statements (a placeholder, a passage: an object created and deleted before it was first encoded)
made the user's ``delete()`` fail at its commit with an ``IntegrityError``. A database cascade
runs at the end of the user's ``DELETE`` of the source row, whatever the constraint's deferral
(only the ``NO ACTION`` check can be deferred), and reads the rows committed until then, so it
removes a companion row committed meanwhile. A companion row not committed yet is the drain's
problem: its own commit fails the check and it tries again without the row
(:func:`django_semsim.sync.add_placeholders`).

Django 5.2 cannot declare a database cascade on a field, so a ``post_migrate`` receiver adds it to
every companion table of the migrated database, after each ``migrate`` (a later migration that
re-creates the constraint gets it back on the same run). The constraint keeps its name and stays
``DEFERRABLE INITIALLY DEFERRED``; Django's autodetector never reads the database, so no
migration follows, and ``sqlmigrate`` / ``migrate --plan`` never show the change: check
``semsim.W007`` reports a companion whose key does not cascade, with the SQL that changes it
(:func:`cascade_sql`) for a site whose DBA runs the schema changes.

The change of a key waits at most ``SEMSIM['MIGRATE_LOCK_TIMEOUT_SECONDS']`` for its locks (a
``migrate`` behind a long report would otherwise queue every read and write of the site's table
behind it), and a role that does not own the companion table cannot make it: either way the key
is left as it is with a warning, and ``migrate`` succeeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from django_semsim.conf import DEFAULTS, get_config
from django_semsim.models import SemanticModel, companion_of, semantic_models
from semsim_pg.errors import ConfigurationError

__all__ = ["CompanionKey", "cascade_companion_keys", "cascade_sql", "companion_keys"]

logger = logging.getLogger(__name__)

# SQLSTATEs of the two failures a migrate shrugs off: another transaction held the tables past
# lock_timeout; the migrating role does not own the companion table (ALTER TABLE needs the owner)
_LOCK_NOT_AVAILABLE = "55P03"
_INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class CompanionKey:
    """The foreign key constraint from a companion table to its source table, as the database has it."""

    model: type[SemanticModel]
    #: quoted companion table, constraint name and column; the referenced table and column (quoted)
    table: str
    name: str
    column: str
    references: str
    referenced_column: str
    #: ON DELETE CASCADE, and checked against every row (not left NOT VALID)
    cascades: bool
    validated: bool
    #: the companion table's owner, the only role (with its members and superusers) that may alter it
    owner: str


# One catalog query for every companion: called after every migrate, and after every flush (the
# test runner flushes between transactional tests).
_KEYS_SQL = """
SELECT t.i, quote_ident(c.conname), quote_ident(a.attname), c.confrelid::regclass::text, quote_ident(fa.attname),
       c.confdeltype = 'c', c.convalidated, pg_catalog.pg_get_userbyid(r.relowner)
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS t(companion, source, col, i)
JOIN pg_catalog.pg_constraint c
  ON c.contype = 'f' AND c.conrelid = to_regclass(t.companion) AND c.confrelid = to_regclass(t.source)
 AND cardinality(c.conkey) = 1
JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] AND a.attname = t.col
JOIN pg_catalog.pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
ORDER BY t.i, c.conname
"""


def companion_keys(using: str = DEFAULT_DB_ALIAS) -> list[CompanionKey]:
    """The source foreign key of every installed semantic model's companion table in database ``using``
    (none for a table not migrated there)."""
    connection = connections[using]
    models = semantic_models()
    if connection.vendor != "postgresql" or not models:
        return []
    quote = connection.ops.quote_name
    companions = [companion_of(model) for model in models]
    with connection.cursor() as cursor:
        cursor.execute(
            _KEYS_SQL,
            [
                [quote(c._meta.db_table) for c in companions],
                [quote(m._meta.db_table) for m in models],
                [c._meta.get_field("source").column for c in companions],
            ],
        )
        rows = cursor.fetchall()
    return [
        CompanionKey(
            model=models[i - 1],
            table=quote(companions[i - 1]._meta.db_table),
            name=name,
            column=column,
            references=references,
            referenced_column=referenced_column,
            cascades=cascades,
            validated=validated,
            owner=owner,
        )
        for i, name, column, references, referenced_column, cascades, validated, owner in rows
    ]


def _replace_sql(key: CompanionKey) -> str:
    return (
        f"ALTER TABLE {key.table} DROP CONSTRAINT {key.name}, ADD CONSTRAINT {key.name} "
        f"FOREIGN KEY ({key.column}) REFERENCES {key.references} ({key.referenced_column}) "
        "ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID"
    )


def _validate_sql(key: CompanionKey) -> str:
    return f"ALTER TABLE {key.table} VALIDATE CONSTRAINT {key.name}"


def _lock_timeout() -> float:
    """``SEMSIM['MIGRATE_LOCK_TIMEOUT_SECONDS']`` (its default when the settings are invalid:
    ``semsim.E005`` stops ``migrate`` before this runs anyway)."""
    try:
        return get_config().migrate_lock_timeout_seconds
    except ConfigurationError:
        return float(DEFAULTS["MIGRATE_LOCK_TIMEOUT_SECONDS"])


def _timeout_text(seconds: float) -> str:
    """``lock_timeout``'s value: 3.0 is '3s', 0.2 is '200ms'."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def cascade_sql(key: CompanionKey, seconds: float | None = None) -> str:
    """The SQL that gives ``key`` its cascade, as :func:`cascade_companion_keys` runs it, for a DBA
    (``semsim.W007``'s hint): one line, its own transactions, safe to paste into ``psql -c``."""
    wait = _timeout_text(_lock_timeout() if seconds is None else seconds)
    return f"BEGIN; SET LOCAL lock_timeout = '{wait}'; {_replace_sql(key)}; COMMIT; {_validate_sql(key)};"


def _alter(using: str, sql: str, seconds: float) -> None:
    """Run one ``ALTER TABLE`` in a transaction (a savepoint when one is open) that waits at most
    ``seconds`` for its locks; ``lock_timeout`` is back to the caller's value after."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)", [_timeout_text(seconds)]
        )
        (previous, _) = cursor.fetchone()
        cursor.execute(sql)
        # SET LOCAL outlives a released savepoint: an enclosing transaction gets its value back
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


def _not_done(key: CompanionKey, using: str, exc: DatabaseError, what: str, seconds: float) -> None:
    """One warning line: why ``key`` was not changed, and how to change it."""
    where = f"{key.model._meta.label} (database {using!r})"
    state = getattr(exc.__cause__, "sqlstate", None)
    if state == _LOCK_NOT_AVAILABLE:
        reason = (
            f"other transactions held {key.table} or {key.references} past the lock timeout "
            f"({seconds:g} s, SEMSIM['MIGRATE_LOCK_TIMEOUT_SECONDS']); run manage.py migrate again at a quiet moment"
        )
    elif state == _INSUFFICIENT_PRIVILEGE:
        reason = (
            f"only its owner {key.owner} (or a member of that role) may alter the table: run manage.py migrate "
            f"as {key.owner}, or have {key.owner} run the SQL of check semsim.W007's hint"
        )
    else:
        reason = (
            f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}; run manage.py migrate again, or the SQL "
            "of check semsim.W007's hint"
        )
    logger.warning("%s: foreign key %s of %s %s: %s", where, key.name, key.table, what, reason)


def cascade_companion_keys(using: str = DEFAULT_DB_ALIAS) -> list[CompanionKey]:
    """Make every companion's source foreign key in ``using`` cascade deletes; the keys changed.

    Idempotent: a key that already cascades costs the catalog query only. The constraint is
    replaced in one statement, ``NOT VALID`` (its rows were checked by the old one): that takes an
    ``ACCESS EXCLUSIVE`` lock on the companion table and on its source table, held for the
    catalog change only (no row is read), but while it waits for the lock every later read and
    write of both tables queues behind it, so it waits at most
    ``SEMSIM['MIGRATE_LOCK_TIMEOUT_SECONDS']``. Then the key is validated in a transaction of its
    own, whose locks (``SHARE UPDATE EXCLUSIVE``, ``ROW SHARE``) let reads and writes go on. A key
    left ``NOT VALID`` by an interrupted run is validated by the next.

    A key that cannot be changed (its tables held past the lock timeout; a role that does not own
    the companion table) is left as it is with a warning that says how to change it, and the
    other keys are still changed: a ``migrate`` never fails for it, and ``semsim.W007`` stays.
    """
    seconds = _lock_timeout()
    changed = []
    for key in companion_keys(using):
        if not key.cascades:
            try:
                _alter(using, _replace_sql(key), seconds)
            except DatabaseError as exc:
                _not_done(key, using, exc, "still does not cascade deletes (ON DELETE CASCADE)", seconds)
                continue
            changed.append(key)
            logger.info(
                "%s (database %r): foreign key %s of %s to %s now deletes with its row (ON DELETE CASCADE)",
                key.model._meta.label,
                using,
                key.name,
                key.table,
                key.references,
            )
        if not key.cascades or not key.validated:
            try:
                _alter(using, _validate_sql(key), seconds)
            except DatabaseError as exc:  # it cascades all the same; the next migrate validates it
                _not_done(key, using, exc, "cascades but is not validated yet (NOT VALID)", seconds)
    return changed


def on_post_migrate(using: str = DEFAULT_DB_ALIAS, verbosity: int = 1, **kwargs: Any) -> None:
    """``post_migrate`` receiver (connected for django_semsim's app only: it runs once per migrate,
    after every app's migrations)."""
    changed = cascade_companion_keys(using)
    if changed and verbosity >= 1:
        stdout = kwargs.get("stdout")
        if stdout is not None:
            tables = ", ".join(key.table for key in changed)
            stdout.write(f"  django_semsim: companion foreign keys cascade deletes in the database: {tables}")
