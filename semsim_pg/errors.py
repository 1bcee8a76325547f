"""One exception tree for semsim.

Every error names what was wrong, what was received and how to fix it. The CLI prints the
message of any :class:`SemsimError` without a traceback and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "AlreadyResolved",
    "BackendUnavailable",
    "CollectionExists",
    "CollectionNotFound",
    "ConfigurationError",
    "ConnectionLost",
    "DatabaseError",
    "DatabaseUnavailable",
    "DimensionMismatch",
    "DocumentNotFound",
    "EmbeddedServerError",
    "ExtensionMissing",
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
    "SchemaNotInstalled",
    "SchemaTooNew",
    "SemsimError",
    "WrongCollection",
]


class SemsimError(Exception):
    """Base class of every error semsim raises on purpose."""


class ConfigurationError(SemsimError):
    """A setting has a value semsim cannot use."""


class BackendUnavailable(ConfigurationError):
    """An encoder backend cannot run here (not installed, cannot export the model, cache not writable);
    the message names the backend to use instead."""


class DatabaseError(SemsimError):
    """Something about the database prevents the operation."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class ConnectionLost(DatabaseUnavailable):
    """An open connection broke mid-call: the server stopped, restarted or ended the session. The
    call was interrupted (its open transaction rolled back); calling again opens a new connection."""


class PoolExhausted(DatabaseUnavailable):
    """No pooled connection became free within ``pool_timeout`` (the message says how to get more)."""


class QueryCanceled(DatabaseError):
    """PostgreSQL canceled a statement: it waited for a lock longer than ``lock_timeout``
    (SQLSTATE 55P03), ran longer than ``statement_timeout``, or was canceled by someone (57014).
    Its transaction rolled back; the message names the setting to raise, or says to call again."""


class SchemaNotInstalled(DatabaseError):
    """semsim's tables are missing or older than this version of semsim."""


class SchemaTooNew(DatabaseError):
    """semsim's tables were migrated by a newer semsim, to a revision this one does not know."""


class PermissionDenied(DatabaseError):
    """The database role lacks a privilege the operation needs (SQLSTATE 42501)."""


class ExtensionMissing(DatabaseError):
    """pgvector is not installed in the database, or is too old."""


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL server could not be started."""


class ModelLoadError(SemsimError):
    """A sentence-transformers or cross-encoder model could not be loaded."""


class InvalidInput(SemsimError, ValueError):
    """An argument has a value semsim cannot use."""


class InvalidQuery(InvalidInput):
    """A search query is empty, or its parameters are out of range."""


class DimensionMismatch(InvalidInput):
    """A vector has another dimension than the collection's."""


class ModelMismatch(InvalidInput):
    """A vector was made by another model than the collection's."""


class CollectionNotFound(SemsimError, LookupError):
    """No collection has the given name."""


class CollectionExists(SemsimError):
    """A collection with that name exists already, with other parameters."""


class WrongCollection(InvalidInput):
    """The named collection holds documents that the operation did not write and must not replace
    (plain documents where FAQ entries or an evaluation corpus would be loaded); nothing was written."""


class NotAnFAQCollection(WrongCollection):
    """FAQ matching or loading was asked of a collection whose documents are not FAQ entries."""


class DocumentNotFound(SemsimError, LookupError):
    """No document has the given external id in the collection."""


class InputFileError(InvalidInput):
    """An input file is missing, unreadable or malformed; the message names the file and line."""


class QueryLogEmpty(SemsimError, LookupError):
    """Nothing was ever logged for a collection (the query log is off by default)."""


class AlreadyResolved(SemsimError):
    """A group of unanswered questions was promoted already (by someone else, or before)."""


class NotImproved(SemsimError):
    """A fine-tuned model did not beat its base on the held-out dev data, so it was not saved."""
