"""``SemanticModel`` and the companion models that hold its vectors.

For every concrete subclass of :class:`SemanticModel` a companion model ``<Name>Embedding`` is
generated in the same app (the way django-simple-history generates historical models), so
``makemigrations`` creates its table: one row per (source object, encoder model, passage) with the
vector, the passage's offsets, the encoder model's name and the hash of the exact text the vector came from. The HNSW
index lives on the companion, never on the source table, so updating an ordinary column of the
source never touches the index (ARCHITECTURE.md decisions 2-3).

The companion's ``model`` column is a foreign key to :class:`EmbeddingModel` (keyed by the model's
name): it records which encoder models have vectors, and it makes every generated migration
depend on this app's first migration, which creates the pgvector extension.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.postgres.search import SearchVector
from django.db import models
from django.db.models import Func, TextField, Value
from django.db.models.signals import class_prepared
from pgvector.django import HnswIndex, VectorField

from django_semsim.conf import DEFAULTS, get_config
from django_semsim.expressions import companion_model
from django_semsim.passages import chunking_of, stored_hash, stored_hash_expression
from django_semsim.query import USE_DEFAULT_K, SemanticManager, SemanticQuerySet, searchable
from semsim_pg.errors import ConfigurationError
from semsim_pg.sql import METRICS

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable

    from semsim_pg.chunking import Chunking

__all__ = [
    "TEXT_FIELD_TYPES",
    "EmbeddingModel",
    "SemanticModel",
    "companion_of",
    "semantic_models",
    "semantic_owner",
    "semantic_senders",
]

logger = logging.getLogger(__name__)

#: Field classes whose value is text in Python and in SQL alike, so both sides hash the same bytes.
TEXT_FIELD_TYPES: tuple[type[models.Field[Any, Any]], ...] = (models.CharField, models.TextField)

_DEFERRED = object()


class EmbeddingModel(models.Model):
    """An encoder model that has vectors in this database (one row per model name)."""

    name = models.CharField(max_length=255, primary_key=True)
    dimension = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "embedding model"

    def __str__(self) -> str:
        return f"{self.name} ({self.dimension}d)"


class SemanticModel(models.Model):
    """Abstract base: declare ``semantic_fields`` (or override ``semantic_text``) to get semantic search.

    With ``semantic_fields`` the text is ``concat_ws(E'\\n', field1, field2, ...)`` in SQL and the
    same join of the non-null values in Python, so staleness is one SQL anti-join whatever wrote
    the row. A ``semantic_text()`` override without a matching ``semantic_text_expression()`` is
    only checked in Python (slower reconcile passes; system check semsim.W001 says so).
    """

    #: source fields whose values, joined by newlines, are the text to embed
    semantic_fields: ClassVar[Sequence[str]] = ()
    #: False turns off the automatic update on save() for this model (reindex/worker still work)
    semantic_auto_update: ClassVar[bool] = True
    #: distance used by the companion's HNSW index and by semantic_search (see semsim_pg.sql.METRICS)
    semantic_metric: ClassVar[str] = "cosine"
    #: PostgreSQL text search configuration of ``hybrid_search()``'s words (None: SEMSIM["TEXT_SEARCH_CONFIG"])
    search_config: ClassVar[str | None] = None
    #: a stored tsvector field of the model (e.g. a ``GeneratedField`` of ``SearchVector(...)``) that
    #: ``hybrid_search()`` reads instead of computing the words of each row (None: computed)
    search_vector_field: ClassVar[str | None] = None
    #: split long texts into passages of at most this many tokens of the model (the model's special
    #: tokens included; None: one vector per object). Each passage gets its own vector; searches
    #: rank objects by their best passage and return each object once (django_semsim.passages).
    semantic_chunking: ClassVar[int | None] = None
    #: tokens consecutive passages share (None: an eighth of ``semantic_chunking``, at most 32)
    semantic_chunk_overlap: ClassVar[int | None] = None
    #: "app_label.model_name" that names the companion's index and constraint (default: the model's
    #: own); a model moved to another app keeps its old one so existing databases need no rename
    semantic_index_label: ClassVar[str | None] = None
    #: the generated companion model (set when the concrete class is prepared)
    semsim_companion: ClassVar[type[models.Model]]

    objects = SemanticManager()

    class Meta:
        abstract = True

    # text ---------------------------------------------------------------------------------
    def semantic_text(self) -> str:
        """The text whose embedding represents this object (non-null ``semantic_fields`` joined by newlines)."""
        values = [getattr(self, name) for name in type(self).semantic_fields]
        return "\n".join(str(value) for value in values if value is not None)

    def semantic_text_hash(self) -> str:
        """The hash the companion stores for this object's current text (and passage split)."""
        return stored_hash(type(self), self.semantic_text())

    @classmethod
    def semantic_text_expression(cls) -> Combinable | None:
        """The same text as an SQL expression, or None when the text is only known in Python."""
        if cls.semantic_text is not SemanticModel.semantic_text or not cls.semantic_fields:
            return None
        return Func(
            Value("\n"),
            *[models.F(name) for name in cls.semantic_fields],
            function="concat_ws",
            output_field=TextField(),
        )

    @classmethod
    def semantic_hash_expression(cls) -> Func | None:
        """:meth:`semantic_text_hash` as an SQL expression (None when the text is only known in Python)."""
        expression = cls.semantic_text_expression()
        return None if expression is None else stored_hash_expression(cls, expression)

    @classmethod
    def semantic_passages(cls) -> Chunking | None:
        """How this model splits its texts (None: it does not); a bad option raises ConfigurationError
        (system check semsim.E012 reports it first)."""
        return chunking_of(cls)

    @classmethod
    def semantic_text_in_sql(cls) -> bool:
        """True when staleness can be computed in SQL (cached per class: from_db asks for every row)."""
        known = cls.__dict__.get("_semsim_text_in_sql")
        if known is None:
            known = cls.semantic_text_expression() is not None
            cls._semsim_text_in_sql = known
        return bool(known)

    @classmethod
    def semantic_search_config(cls) -> str:
        """The text search configuration of this model's lexical search (the option, else the setting)."""
        return cls.search_config or get_config().text_search_config

    @classmethod
    def semantic_search_vector(cls) -> SearchVector | models.F | None:
        """The tsvector of the text that ``hybrid_search()`` reads (None: the text is Python-only).

        ``search_vector_field`` when set (a stored column: the words are read, not computed), else
        ``SearchVector(*semantic_fields, config=search_config)``: a GIN index on that same
        expression makes the lexical side index-backed; declare it in ``Meta.indexes`` as
        ``GinIndex(SearchVector("title", "body", config="english"), name=...)``. Either way the
        words come from the source columns when the row is written or read, so a changed text is
        searched by its new words at once, before the vector is re-encoded.
        """
        if cls.search_vector_field:
            return models.F(cls.search_vector_field)
        config = cls.semantic_search_config()
        if cls.semantic_text is SemanticModel.semantic_text and cls.semantic_fields:
            return SearchVector(*cls.semantic_fields, config=config)
        expression = cls.semantic_text_expression()
        return None if expression is None else SearchVector(expression, config=config)

    # search ------------------------------------------------------------------------------
    def similar_objects(self, k: int | None = USE_DEFAULT_K, **options: Any) -> SemanticQuerySet[Any]:
        """Objects whose vectors are nearest this one's (itself excluded), best first
        (``k`` as in ``similar_to()``: default SEMSIM["DEFAULT_K"]).

        Searched among the rows of the default manager, as Django's related managers are: rows its
        ``get_queryset()`` hides (unpublished, another tenant's) are never offered as similar.
        """
        rows = type(self)._default_manager.db_manager(self._state.db).get_queryset()
        return searchable(rows).similar_to(self, k=k, **options)

    # change detection ---------------------------------------------------------------------
    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> Any:
        instance = super().from_db(db, field_names, values)
        instance._semsim_snapshot = instance._semsim_text_snapshot()
        return instance

    def refresh_from_db(self, using: str | None = None, fields: Any = None, from_queryset: Any = None) -> None:
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        attnames = _text_attnames(type(self))
        if fields is None or (attnames is not None and set(attnames) <= set(fields)):
            # the text's values are the stored ones again: the next save compares with them
            self._semsim_snapshot = self._semsim_text_snapshot()

    def _semsim_text_snapshot(self) -> tuple[Any, ...] | None:
        """The raw values the text is made of, or None when unknown (deferred fields, Python text).

        Comparing raw values costs nothing per loaded row; hashing waits until a save needs it.
        The text is the one of the model that holds the vectors (a proxy's or a multi-table
        child's own ``semantic_fields`` are not what is encoded).
        """
        attnames = _text_attnames(type(self))
        if attnames is None:
            return None
        values = tuple(self.__dict__.get(attname, _DEFERRED) for attname in attnames)
        return None if _DEFERRED in values else values


def _text_attnames(model: type[models.Model]) -> tuple[str, ...] | None:
    """The attnames of the fields the text of ``model``'s rows is made of (its owner's
    ``semantic_fields``), or None when the text is Python-only; cached per class, as every loaded
    row asks (from_db)."""
    known: tuple[str, ...] | bool | None = model.__dict__.get("_semsim_text_attnames", False)
    if known is False:
        owner = semantic_owner(model) or model
        known = (
            tuple(owner._meta.get_field(name).attname for name in owner.semantic_fields)
            if owner.semantic_text_in_sql()
            else None
        )
        model._semsim_text_attnames = known
    return known if isinstance(known, tuple) else None


def semantic_models() -> list[type[SemanticModel]]:
    """Every installed concrete semantic model (that has a companion)."""
    from django.apps import apps

    return [m for m in apps.get_models() if issubclass(m, SemanticModel) and "semsim_companion" in m.__dict__]


def semantic_owner(model: type[models.Model]) -> type[SemanticModel] | None:
    """The semantic model whose companion holds ``model``'s vectors: itself, the concrete model of a
    proxy, or the parent of a multi-table child (same primary key); None when there is none.

    Django sends ``post_save`` with the class of the instance saved, so a save through a proxy or a
    child must be mapped to the model that encodes the row.
    """
    owner = _owners.get(model)
    if owner is not None:
        return owner
    concrete: type[models.Model] = model._meta.concrete_model or model
    candidates: list[type[models.Model]] = [concrete, *concrete._meta.get_parent_list()]
    for candidate in candidates:
        if issubclass(candidate, SemanticModel) and "semsim_companion" in candidate.__dict__:
            _owners[model] = candidate  # every loaded row asks (from_db): remember the answer
            return candidate
    return None


_owners: dict[type[models.Model], type[SemanticModel]] = {}


def semantic_senders() -> list[tuple[type[SemanticModel], type[SemanticModel]]]:
    """``(model, owner)`` for every installed semantic model, proxy and multi-table child included:
    the classes a save of a row with vectors can be sent as."""
    from django.apps import apps

    pairs = []
    for model in apps.get_models():
        if issubclass(model, SemanticModel):
            owner = semantic_owner(model)
            if owner is not None:
                pairs.append((model, owner))
    return pairs


def companion_of(model: type[models.Model]) -> type[models.Model]:
    """The companion of a semantic model (a proxy uses its concrete model's)."""
    return companion_model(model._meta.concrete_model or model)


def _short_hash(*parts: str) -> str:
    return hashlib.sha1(".".join(parts).encode()).hexdigest()[:10]


def _companion_settings() -> tuple[int | None, int, int]:
    """The vector size and HNSW parameters of a companion, from ``settings.SEMSIM``.

    Companions are built while Django imports the models, before the system checks run: invalid
    settings must not crash every ``manage.py`` command with a traceback there. They get
    placeholders instead (no fixed size, the default graph), and check ``semsim.E005`` reports the
    settings and stops ``migrate``, ``makemigrations`` and ``runserver`` before a placeholder
    could reach the database."""
    try:
        config = get_config()
    except ConfigurationError:
        return None, DEFAULTS["HNSW_M"], DEFAULTS["HNSW_EF_CONSTRUCTION"]
    return config.dimensions, config.hnsw_m, config.hnsw_ef_construction


def _make_companion(source: type[SemanticModel]) -> type[models.Model]:
    """Build ``<Source>Embedding`` in the source's app: FK to source (cascade), model, hash, vector."""
    dimensions, hnsw_m, hnsw_ef_construction = _companion_settings()
    opts = source._meta
    metric = METRICS.get(source.semantic_metric)
    opclass = metric.opclass if metric is not None else "vector_cosine_ops"  # a bad metric is reported by a check
    tag = _short_hash(*(source.semantic_index_label or opts.label_lower).split("."))
    meta = type(
        "Meta",
        (),
        {
            "app_label": opts.app_label,
            "db_table": f"{opts.db_table}_embedding"[:63],
            "verbose_name": f"{opts.verbose_name} embedding",
            "constraints": [models.UniqueConstraint(fields=["source", "model", "passage"], name=f"semsim_{tag}_uniq")],
            "indexes": [
                HnswIndex(
                    name=f"semsim_{tag}_hnsw",
                    fields=["embedding"],
                    opclasses=[opclass],
                    m=hnsw_m,
                    ef_construction=hnsw_ef_construction,
                )
            ],
        },
    )
    attrs: dict[str, Any] = {
        "__module__": source.__module__,
        "__doc__": f"Vectors of {opts.label} (generated by django_semsim; one row per object, passage and encoder model).",
        # db_index off: the unique (source, model, passage) constraint's index already starts with source_id
        "source": models.ForeignKey(source, on_delete=models.CASCADE, related_name="semsim_embeddings", db_index=False),
        "model": models.ForeignKey(
            EmbeddingModel, on_delete=models.PROTECT, db_column="model_name", related_name="+", db_index=False
        ),
        # one row per passage of the text (0: the first, or the whole text of a model that does not
        # split); db_default: rows written before passages existed, or by raw SQL, are passage 0
        "passage": models.PositiveIntegerField(default=0, db_default=0),
        "passage_start": models.PositiveIntegerField(default=0, db_default=0),
        # character offsets of the passage in the text; NULL end: the end of the text
        "passage_end": models.PositiveIntegerField(null=True, blank=True),
        # hash of the text the vector was computed from (with the split, for a model that splits:
        # passages.stored_hash); NULL with a NULL vector marks a row not encoded yet
        "text_hash": models.CharField(max_length=64, null=True, blank=True),
        "embedding": VectorField(dimensions=dimensions, null=True, blank=True),
        "created_at": models.DateTimeField(auto_now_add=True),
        "updated_at": models.DateTimeField(auto_now=True),
        "Meta": meta,
    }
    companion = type(f"{source.__name__}Embedding", (models.Model,), attrs)
    module = sys.modules.get(source.__module__)
    if module is not None and not hasattr(module, companion.__name__):
        # importable by name like any model: pickling, shell auto-imports, "app.models.ArticleEmbedding"
        setattr(module, companion.__name__, companion)
    return companion


def _on_class_prepared(sender: type[models.Model], **kwargs: Any) -> None:
    if not issubclass(sender, SemanticModel) or "semsim_companion" in sender.__dict__:
        return
    opts = sender._meta
    if opts.abstract or opts.proxy or opts.swapped:
        return
    if any(issubclass(parent, SemanticModel) for parent in opts.parents):
        return  # multi-table inheritance: the parent's companion holds the vectors
    sender.semsim_companion = _make_companion(sender)


class_prepared.connect(_on_class_prepared, dispatch_uid="django_semsim.companion")
