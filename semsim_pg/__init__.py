"""semsim_pg: semantic similarity and semantic search inside PostgreSQL (pgvector).

The framework-agnostic core: encoders, the data layer, search, and the ``semsim`` CLI.
Heavy libraries (torch, sentence-transformers, faiss) are imported only when first needed.
"""

from semsim_pg.encoder import Encoder, get_encoder
from semsim_pg.errors import (
    AlreadyResolved,
    BackendUnavailable,
    CollectionExists,
    CollectionNotFound,
    ConfigurationError,
    ConnectionLost,
    DatabaseError,
    DatabaseUnavailable,
    DimensionMismatch,
    DocumentNotFound,
    EmbeddedServerError,
    ExtensionMissing,
    InputFileError,
    InvalidInput,
    InvalidQuery,
    ModelLoadError,
    ModelMismatch,
    NotAnFAQCollection,
    NotImproved,
    PermissionDenied,
    PoolExhausted,
    QueryCanceled,
    QueryLogEmpty,
    SchemaNotInstalled,
    SchemaTooNew,
    SemsimError,
    WrongCollection,
)
from semsim_pg.faq import Answer, FAQEntry, FAQMatch, FAQMatcher
from semsim_pg.loading import resolve_model
from semsim_pg.rerank import RerankedHit, Reranker, get_reranker, search_and_rerank
from semsim_pg.settings import Settings, configure, get_settings
from semsim_pg.store import Collection, Document, DocumentStore, QueryVector, SearchHit, UpsertResult

__version__ = "0.1.0"

__all__ = [
    "AlreadyResolved",
    "Answer",
    "BackendUnavailable",
    "Collection",
    "CollectionExists",
    "CollectionNotFound",
    "ConfigurationError",
    "ConnectionLost",
    "DatabaseError",
    "DatabaseUnavailable",
    "DimensionMismatch",
    "Document",
    "DocumentNotFound",
    "DocumentStore",
    "EmbeddedServerError",
    "Encoder",
    "ExtensionMissing",
    "FAQEntry",
    "FAQMatch",
    "FAQMatcher",
    "InputFileError",
    "InvalidInput",
    "InvalidQuery",
    "ModelLoadError",
    "ModelMismatch",
    "NotAnFAQCollection",
    "NotImproved",
    "PermissionDenied",
    "PoolExhausted",
    "QueryCanceled",
    "QueryLogEmpty",
    "QueryVector",
    "RerankedHit",
    "Reranker",
    "SchemaNotInstalled",
    "SchemaTooNew",
    "SearchHit",
    "SemsimError",
    "Settings",
    "UpsertResult",
    "WrongCollection",
    "configure",
    "get_encoder",
    "get_reranker",
    "get_settings",
    "resolve_model",
    "search_and_rerank",
]
