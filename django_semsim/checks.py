"""System checks with stable ids (``semsim.E001`` ...) and hints that name the fix.

Configuration checks need no database. Database checks (tag ``database``: ``manage.py check
--database default``, and ``migrate``) report the server and the companion tables; the ones
that ``migrate`` itself or a re-index fixes are warnings, so that they never block ``migrate``.

| id | what |
|---|---|
| semsim.E001 | ``django.contrib.postgres`` is not in INSTALLED_APPS |
| semsim.E002 | a name in ``semantic_fields`` is not a field of the model |
| semsim.E003 | a semantic field is not a CharField/TextField (its SQL text would differ from Python's) |
| semsim.E004 | the model defines no text: neither ``semantic_fields`` nor ``semantic_text()`` |
| semsim.E005 | ``settings.SEMSIM`` is invalid |
| semsim.E006 | ``semantic_metric`` is not a known metric |
| semsim.E007 | the database is not PostgreSQL |
| semsim.E008 | pgvector is missing from the database (or from the server) |
| semsim.E009 | pgvector is older than 0.8.0 (no iterative index scans) |
| semsim.W001 | the text is only known in Python: bulk and raw-SQL writes are found only by full scans |
| semsim.W002 | the companion's vector column has another dimension than the configured model |
| semsim.W003 | the companion holds vectors of another encoder model than the configured one |
| semsim.E010 | ``search_config`` (or ``TEXT_SEARCH_CONFIG``) is not a text search configuration of the database |
| semsim.E011 | ``search_config`` is set on a model whose text is only known in Python, or is not a name; or ``search_vector_field`` is not a SearchVectorField |
| semsim.W004 | ``search_config`` is set but no GIN index on the model's search vector: lexical search reads every row |
| semsim.E012 | ``semantic_chunking`` / ``semantic_chunk_overlap`` is invalid: not a whole number, below 16 tokens, above what the model reads, or an overlap not below the size |
| semsim.W005 | ``semantic_chunk_overlap`` is set without ``semantic_chunking`` (it does nothing) |
| semsim.W006 | a proxy or multi-table child sets its own text: ignored, its vectors are its parent's |
| semsim.W007 | a companion's foreign key to its source does not cascade deletes in the database (``migrate`` adds it; the hint gives its SQL) |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import apps
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core import checks
from django.db import DatabaseError, connections, models

from django_semsim.cascade import cascade_sql, companion_keys
from django_semsim.conf import get_config, reset_config
from django_semsim.models import TEXT_FIELD_TYPES, SemanticModel, companion_of, semantic_models, semantic_senders
from django_semsim.passages import model_max_tokens
from semsim_pg.chunking import check_chunking
from semsim_pg.db import CAN_CREATE_VECTOR_SQL, MIN_PGVECTOR, MIN_PGVECTOR_TEXT
from semsim_pg.errors import ConfigurationError, InvalidInput
from semsim_pg.sql import METRICS

__all__ = ["check_connection", "check_semantic_model"]


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if not apps.is_installed("django.contrib.postgres"):
        errors.append(
            checks.Error(
                "django_semsim needs 'django.contrib.postgres' in INSTALLED_APPS.",
                hint="Add 'django.contrib.postgres' to INSTALLED_APPS (before 'django_semsim').",
                id="semsim.E001",
            )
        )
    reset_config()
    try:
        get_config()
    except ConfigurationError as exc:
        errors.append(
            checks.Error(str(exc), hint="Fix settings.SEMSIM (see django_semsim.conf.DEFAULTS).", id="semsim.E005")
        )
    return errors


@checks.register(checks.Tags.models)
def check_semantic_models(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """:func:`check_semantic_model` for each semantic model (of ``app_configs`` when given)."""
    labels = None if app_configs is None else {config.label for config in app_configs}
    errors: list[checks.CheckMessage] = []
    for model in semantic_models():
        if labels is None or model._meta.app_label in labels:
            errors.extend(check_semantic_model(model))
    for model, owner in semantic_senders():
        if model is not owner and (labels is None or model._meta.app_label in labels):
            errors.extend(_check_shares_owner_text(model, owner))
    return errors


def _check_shares_owner_text(model: type[SemanticModel], owner: type[SemanticModel]) -> list[checks.CheckMessage]:
    """A proxy or multi-table child keeps its vectors with ``owner``: its own text is never encoded."""
    same_fields = list(model.semantic_fields) == list(owner.semantic_fields)
    same_text = model.semantic_text is owner.semantic_text
    if same_fields and same_text:
        return []
    kind = "a proxy of" if model._meta.proxy else "a multi-table child of"
    return [
        checks.Warning(
            f"{model._meta.label} is {kind} {owner._meta.label}, whose vectors it shares: its own "
            "semantic_fields / semantic_text() are ignored, the text encoded and searched is "
            f"{owner._meta.label}'s.",
            hint=f"Remove them from {model.__name__}, or make it a model of its own (not a child) to search its text.",
            obj=model,
            id="semsim.W006",
        )
    ]


def check_semantic_model(model: type[models.Model]) -> list[checks.CheckMessage]:
    """Model-level checks of one semantic model."""
    if not issubclass(model, SemanticModel):
        return []
    errors: list[checks.CheckMessage] = []
    fields = list(model.semantic_fields)
    overridden = model.semantic_text is not SemanticModel.semantic_text
    if isinstance(model.semantic_fields, str):
        errors.append(
            checks.Error(
                f"semantic_fields of {model._meta.label} is a string, not a list of field names.",
                hint=f'Write semantic_fields = ["{model.semantic_fields}"].',
                obj=model,
                id="semsim.E002",
            )
        )
        fields = []
    for name in fields:
        try:
            field = model._meta.get_field(name)
        except Exception:
            choices = ", ".join(f.name for f in model._meta.concrete_fields)
            errors.append(
                checks.Error(
                    f"semantic_fields of {model._meta.label} names {name!r}, which is not a field of the model.",
                    hint=f"Use fields of {model.__name__}: {choices}.",
                    obj=model,
                    id="semsim.E002",
                )
            )
            continue
        if not isinstance(field, TEXT_FIELD_TYPES) or not field.concrete:
            errors.append(
                checks.Error(
                    f"Semantic field {model._meta.label}.{name} is a {type(field).__name__}; only CharField and "
                    "TextField values read the same in SQL and in Python.",
                    hint="Override semantic_text() (and semantic_text_expression()) to build text from other fields.",
                    obj=model,
                    id="semsim.E003",
                )
            )
    if not fields and not overridden:
        errors.append(
            checks.Error(
                f"{model._meta.label} defines no text to embed.",
                hint='Set semantic_fields = ["title", "body"] or override semantic_text().',
                obj=model,
                id="semsim.E004",
            )
        )
    if model.semantic_metric not in METRICS:
        errors.append(
            checks.Error(
                f"semantic_metric of {model._meta.label} is {model.semantic_metric!r}.",
                hint=f"Use one of {', '.join(METRICS)}.",
                obj=model,
                id="semsim.E006",
            )
        )
    errors.extend(_check_search_config(model, overridden))
    errors.extend(_check_chunking(model))
    if overridden and model.semantic_text_expression() is None:
        errors.append(
            checks.Warning(
                f"The text of {model._meta.label} is only known in Python (semantic_text() is overridden).",
                hint="Rows written by bulk_create, update() or raw SQL are found only by a full scan "
                "(semsim_reindex --stale), and hybrid_search() is unavailable. Prefer semantic_fields, or also "
                "override semantic_text_expression().",
                obj=model,
                id="semsim.W001",
            )
        )
    return errors


def _check_chunking(model: type[SemanticModel]) -> list[checks.CheckMessage]:
    """``semantic_chunking``: the core's rules (at least 16 tokens, at most what the model reads, an
    overlap below the size), checked without loading the model (its limit read from its files)."""
    if model.semantic_chunking is None:
        if model.semantic_chunk_overlap is None:
            return []
        return [
            checks.Warning(
                f"{model._meta.label} sets semantic_chunk_overlap but not semantic_chunking, so its texts are not split.",
                hint="Set semantic_chunking = 256 (tokens per passage) too, or remove semantic_chunk_overlap.",
                obj=model,
                id="semsim.W005",
            )
        ]
    hint = "Set semantic_chunking to a number of tokens from 16 to what the model reads (e.g. 256), and " + (
        "semantic_chunk_overlap below it (or None: an eighth, at most 32)."
    )
    try:
        chunking = model.semantic_passages()
        config = get_config()
        limit = model_max_tokens(config.model_name)
        if chunking is not None and limit is not None:
            check_chunking(chunking.size, chunking.overlap, max_seq_length=limit)
    except ConfigurationError as exc:
        if "semantic_chunking" not in str(exc):
            return []  # invalid settings: reported as semsim.E005
        return [checks.Error(str(exc), hint=hint, obj=model, id="semsim.E012")]
    except InvalidInput as exc:
        return [
            checks.Error(
                f"{model._meta.label}.semantic_chunking: {exc} (model {config.model_name})",
                hint=hint,
                obj=model,
                id="semsim.E012",
            )
        ]
    return []


def _check_search_config(model: type[SemanticModel], overridden: bool) -> list[checks.CheckMessage]:
    """The model's own ``search_config``: a name, on a model whose words SQL can read, index-backed."""
    own = model.__dict__.get("search_config")
    if own is None:
        return []
    if not isinstance(own, str) or not own.strip():
        return [
            checks.Error(
                f"search_config of {model._meta.label} is {own!r}, not the name of a text search configuration.",
                hint='Use a PostgreSQL text search configuration such as "english" or "simple" (or None for '
                "SEMSIM['TEXT_SEARCH_CONFIG']).",
                obj=model,
                id="semsim.E011",
            )
        ]
    if overridden and model.semantic_text_expression() is None:
        return [
            checks.Error(
                f"{model._meta.label} sets search_config, but its text is only known in Python, so hybrid_search() "
                "cannot read its words in SQL.",
                hint="Use semantic_fields, or also override semantic_text_expression().",
                obj=model,
                id="semsim.E011",
            )
        ]
    stored = model.search_vector_field
    if stored:
        try:
            field = model._meta.get_field(stored)
        except Exception:
            field = None
        output = getattr(field, "output_field", field)  # a GeneratedField's type is its output field
        if not isinstance(output, SearchVectorField):
            return [
                checks.Error(
                    f"search_vector_field of {model._meta.label} is {stored!r}, which is not a SearchVectorField "
                    "of the model.",
                    hint='Add words = GeneratedField(expression=SearchVector("title", "body", config="english"), '
                    "output_field=SearchVectorField(), db_persist=True), or set search_vector_field = None.",
                    obj=model,
                    id="semsim.E011",
                )
            ]
    vector = model.semantic_search_vector()
    indexed = any(
        isinstance(index, GinIndex)
        and (list(index.expressions) == [vector] or (stored is not None and list(index.fields) == [stored]))
        for index in model._meta.indexes
    )
    if indexed or not model.semantic_fields:
        return []
    fields = ", ".join(f'"{name}"' for name in model.semantic_fields)
    if stored:
        hint = f'Add GinIndex(fields=["{stored}"], name="...") to Meta.indexes, then run makemigrations and migrate.'
    else:
        hint = (
            f'Add GinIndex(SearchVector({fields}, config="{own}"), name="...") to Meta.indexes, then run '
            "makemigrations and migrate."
        )
    return [
        checks.Warning(
            f"{model._meta.label} sets search_config but has no GIN index on its search vector: the lexical side "
            "of hybrid_search() reads the words of every row.",
            hint=hint,
            obj=model,
            id="semsim.W004",
        )
    ]


@checks.register(checks.Tags.database)
def check_databases(
    app_configs: Sequence[Any] | None = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not databases:
        return []
    errors: list[checks.CheckMessage] = []
    for alias in databases:
        errors.extend(check_connection(connections[alias]))
    return errors


def check_connection(connection: Any) -> list[checks.CheckMessage]:
    """Checks of one database connection: PostgreSQL, pgvector, and each companion table."""
    if connection.vendor != "postgresql":
        return [
            checks.Error(
                f"Database {connection.alias!r} is {connection.vendor}; django_semsim needs PostgreSQL with pgvector.",
                hint="Use ENGINE 'django.db.backends.postgresql', e.g. DATABASES = {'default': "
                "django_semsim.database.database_config()}.",
                id="semsim.E007",
            )
        ]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
                "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), "
                f"to_regclass('django_migrations') IS NOT NULL, {CAN_CREATE_VECTOR_SQL}, "
                "current_database(), current_user"
            )
            installed, available, has_migrations, can_create, database, role = cursor.fetchone()
            applied = False
            if has_migrations:
                cursor.execute("SELECT 1 FROM django_migrations WHERE app = 'django_semsim' AND name = '0001_initial'")
                applied = cursor.fetchone() is not None
    except DatabaseError as exc:
        return [checks.Warning(f"Could not inspect database {connection.alias!r}: {exc}", id="semsim.W000")]
    if installed is None:
        if available is None:
            return [
                checks.Error(
                    f"pgvector is not installed on the PostgreSQL server of database {connection.alias!r}.",
                    hint=f"Install pgvector >= {MIN_PGVECTOR_TEXT} on the server (or use the pgvector/pgvector Docker image), then "
                    "run migrate.",
                    id="semsim.E008",
                )
            ]
        if applied:
            return [
                checks.Error(
                    f"The pgvector extension is missing from database {connection.alias!r} although django_semsim's "
                    "migration is applied.",
                    hint="Run CREATE EXTENSION vector; as a superuser (or migrate django_semsim zero, then migrate).",
                    id="semsim.E008",
                )
            ]
        if not can_create:
            return [
                checks.Error(
                    f"pgvector is available but not installed in database {database} (alias {connection.alias!r}), "
                    f"and role {role} cannot create it: migrate would fail at CREATE EXTENSION.",
                    hint=f"Have a superuser run CREATE EXTENSION vector; in {database}, then migrate.",
                    id="semsim.E008",
                )
            ]
        return []  # migrate creates it
    errors: list[checks.CheckMessage] = []
    if _version(installed) < MIN_PGVECTOR:
        errors.append(
            checks.Error(
                f"pgvector {installed} in database {connection.alias!r} is older than {MIN_PGVECTOR_TEXT}, which filtered "
                "searches need (iterative index scans).",
                hint="Upgrade pgvector on the server, then run ALTER EXTENSION vector UPDATE;",
                id="semsim.E009",
            )
        )
    errors.extend(_check_companions(connection))
    errors.extend(_check_companion_keys(connection))
    errors.extend(_check_text_search_configs(connection))
    return errors


def _check_companion_keys(connection: Any) -> list[checks.CheckMessage]:
    """Each companion's foreign key to its source row cascades in the database (django_semsim.cascade):
    a table migrated by an older django_semsim, or whose key a migration re-created, lacks it until
    the next ``migrate``."""
    return [
        checks.Warning(
            f"The foreign key {key.name} of {key.table} to {key.references} (database {connection.alias!r}) does "
            "not cascade deletes in the database: a delete() of a row the background encoder is adding vectors "
            "for meanwhile fails at commit with an IntegrityError.",
            hint=f"Run manage.py migrate as {key.owner} (the table's owner) at a quiet moment: django_semsim gives "
            "the key ON DELETE CASCADE after every migrate (waiting at most SEMSIM['MIGRATE_LOCK_TIMEOUT_SECONDS'] "
            "for its locks). Or have the owner run this SQL, again if it stops at the lock timeout (sqlmigrate does "
            f"not show it): {cascade_sql(key)}",
            obj=key.model,
            id="semsim.W007",
        )
        for key in companion_keys(connection.alias)
        if not key.cascades
    ]


def _check_text_search_configs(connection: Any) -> list[checks.CheckMessage]:
    """Every semantic model's text search configuration exists in the database (pg_ts_config)."""
    try:
        get_config()  # each model's default configuration comes from it
    except ConfigurationError:
        return []  # reported as semsim.E005
    with connection.cursor() as cursor:
        cursor.execute("SELECT cfgname FROM pg_catalog.pg_ts_config ORDER BY cfgname")
        known = [row[0] for row in cursor.fetchall()]
    errors: list[checks.CheckMessage] = []
    for model in semantic_models():
        name = model.semantic_search_config()
        if not isinstance(name, str) or name in known:
            continue  # not a name: semsim.E011
        where = "its search_config" if model.search_config else "SEMSIM['TEXT_SEARCH_CONFIG']"
        errors.append(
            checks.Error(
                f"{model._meta.label} searches words in text search configuration {name!r} ({where}), which database "
                f"{connection.alias!r} does not have.",
                hint=f"Use one of: {', '.join(known)}.",
                obj=model,
                id="semsim.E010",
            )
        )
    return errors


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return (0,)


def _check_companions(connection: Any) -> list[checks.CheckMessage]:
    try:
        config = get_config()
    except ConfigurationError:
        return []  # reported as semsim.E005
    errors: list[checks.CheckMessage] = []
    for model in semantic_models():
        companion = companion_of(model)
        table = companion._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' AND NOT a.attisdropped",
                [connection.ops.quote_name(table)],
            )
            row = cursor.fetchone()
            if row is None:
                continue  # not migrated yet
            expected = f"vector({config.dimensions})"
            if row[0] != expected:
                errors.append(
                    checks.Warning(
                        f"{table}.embedding is {row[0]} but SEMSIM model {config.model!r} makes {expected}.",
                        hint="Run makemigrations and migrate to resize the column, then semsim_reindex --all.",
                        obj=model,
                        id="semsim.W002",
                    )
                )
            column = connection.ops.quote_name(companion._meta.get_field("model").column)
            cursor.execute(
                f"SELECT {column}, count(*) FROM {connection.ops.quote_name(table)} WHERE {column} <> %s "
                "GROUP BY 1 ORDER BY 1",
                [config.model_name],
            )
            others = cursor.fetchall()
        if others:
            listed = ", ".join(f"{name} ({n} rows)" for name, n in others)
            errors.append(
                checks.Warning(
                    f"{table} holds vectors of {listed}, but SEMSIM model is {config.model_name!r}; "
                    "search only uses the configured model's vectors.",
                    hint=f"Run manage.py semsim_reindex --all {model._meta.label} to re-encode with the configured "
                    "model and drop the others.",
                    obj=model,
                    id="semsim.W003",
                )
            )
    return errors
