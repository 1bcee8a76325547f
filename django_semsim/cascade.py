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
migration follows. Check ``semsim.W007`` reports a companion whose key does not cascade.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from django_semsim.models import SemanticModel, companion_of, semantic_models

__all__ = ["CompanionKey", "cascade_companion_keys", "companion_keys"]

logger = logging.getLogger(__name__)


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


# One catalog query for every companion: called after every migrate, and after every flush (the
# test runner flushes between transactional tests).
_KEYS_SQL = """
SELECT t.i, quote_ident(c.conname), quote_ident(a.attname), c.confrelid::regclass::text, quote_ident(fa.attname),
       c.confdeltype = 'c', c.convalidated
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS t(companion, source, col, i)
JOIN pg_catalog.pg_constraint c
  ON c.contype = 'f' AND c.conrelid = to_regclass(t.companion) AND c.confrelid = to_regclass(t.source)
 AND cardinality(c.conkey) = 1
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
        )
        for i, name, column, references, referenced_column, cascades, validated in rows
    ]


def cascade_companion_keys(using: str = DEFAULT_DB_ALIAS) -> list[CompanionKey]:
    """Make every companion's source foreign key in ``using`` cascade deletes; the keys changed.

    Idempotent: a key that already cascades costs the catalog query only. The constraint is
    replaced in one statement, ``NOT VALID`` (its rows were checked by the old one), then validated
    in a transaction of its own, which lets reads and writes of both tables go on meanwhile; a key
    left ``NOT VALID`` by an interrupted run is validated by the next.
    """
    changed = []
    for key in companion_keys(using):
        if not key.cascades:
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(
                    f"ALTER TABLE {key.table} DROP CONSTRAINT {key.name}, ADD CONSTRAINT {key.name} "
                    f"FOREIGN KEY ({key.column}) REFERENCES {key.references} ({key.referenced_column}) "
                    "ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID"
                )
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
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(f"ALTER TABLE {key.table} VALIDATE CONSTRAINT {key.name}")
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
