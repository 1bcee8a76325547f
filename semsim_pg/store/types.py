"""The store's data types: what goes in, what comes out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from semsim_pg.chunking import Chunking

__all__ = [
    "Collection",
    "Document",
    "DocumentLike",
    "FilterValue",
    "Query",
    "QueryVector",
    "SearchHit",
    "UpsertResult",
]


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    model_name: str
    dimension: int
    metric: str
    hnsw_m: int
    hnsw_ef_construction: int
    created_at: dt.datetime | None = None
    documents: int | None = None
    embedded: int | None = None
    #: the PostgreSQL text search configuration of lexical search (``english``, ``simple``, ...)
    text_search_config: str = "english"
    #: passages of at most this many tokens of the model, consecutive ones sharing up to
    #: ``chunk_overlap`` (None: texts are not split)
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    #: the HNSW index's state (semsim_pg.store.indexes.INDEX_STATES), filled by list_collections
    index: str | None = None
    #: how many of its vectors each encoder backend made (``unknown``: from before semsim recorded
    #: it, or given by the caller), filled by list_collections
    backends: dict[str, int] | None = None

    @property
    def chunking(self) -> Chunking | None:
        """How the collection splits its texts into passages (None: one passage per text)."""
        if self.chunk_size is None:
            return None
        return Chunking(self.chunk_size, self.chunk_overlap or 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat() if self.created_at else None
        return data


@dataclass(frozen=True)
class Document:
    external_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryVector:
    """A query vector together with the model that made it, so a mismatch can be refused."""

    vector: npt.NDArray[np.float32]
    model_name: str


@dataclass(frozen=True)
class SearchHit:
    external_id: str
    text: str
    metadata: dict[str, Any]
    #: the dense similarity to the query, in every mode (NaN for a document with no vector yet)
    similarity: float
    distance: float
    #: what the hits are ordered by: the similarity (semantic), BM25 (lexical) or the reciprocal
    #: rank fusion score (hybrid); a hit made by hand without one is ordered by its similarity.
    #: Typed float (a search always sets it): None only stands for "not given" here, and
    #: __post_init__ replaces it.
    score: float = cast(float, None)
    #: the hit's rank in the dense and the lexical top N (None: that side did not find it)
    dense_rank: int | None = None
    lexical_rank: int | None = None
    #: BM25 of the hit's text for the query (lexical and hybrid; 0 when it holds none of the words)
    lexical_score: float | None = None
    #: the document's passage that found it (0, the whole text, in a collection that does not split
    #: texts): the nearest to the query by meaning; in lexical mode the one whose words match best,
    #: in hybrid mode for a document the words found the nearest one holding a query word
    #: (semsim_pg.queries.hybrid); and its character offsets in ``text``
    passage: int = 0
    passage_start: int = 0
    passage_end: int | None = None

    def __post_init__(self) -> None:
        if self.score is None:
            object.__setattr__(self, "score", self.similarity)

    @property
    def passage_text(self) -> str:
        """The text of the hit's best passage: ``text[passage_start:passage_end]``."""
        return self.text[self.passage_start : self.passage_end]

    def semantic_text(self) -> str:
        """The text the hit's vector was made from (its best passage): what a reranker reads."""
        return self.passage_text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passage_text": self.passage_text}

    @classmethod
    def from_values(
        cls,
        external_id: str,
        text: str,
        metadata: dict[str, Any],
        similarity: float,
        distance: float,
        score: float,
        dense_rank: int | None,
        lexical_rank: int | None,
        lexical_score: float | None,
        passage: int,
        passage_start: int,
        passage_end: int | None,
    ) -> SearchHit:
        """A hit from every field, in order, as a search reads them from its rows: the same
        object as ``SearchHit(...)``, made about five times faster (a frozen dataclass's
        ``__init__`` sets each field through ``object.__setattr__``; this sets its ``__dict__``
        once), which is a tenth of a search's client time at k=10. Nothing is checked: for
        values the store produced."""
        hit = object.__new__(cls)
        object.__setattr__(
            hit,
            "__dict__",
            {
                "external_id": external_id,
                "text": text,
                "metadata": metadata,
                "similarity": similarity,
                "distance": distance,
                "score": score,
                "dense_rank": dense_rank,
                "lexical_rank": lexical_rank,
                "lexical_score": lexical_score,
                "passage": passage,
                "passage_start": passage_start,
                "passage_end": passage_end,
            },
        )
        return hit


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    encoded: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.encoded += other.encoded
        return self

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


Query = str | QueryVector | npt.ArrayLike
DocumentLike = Document | Mapping[str, Any] | tuple[str, str] | tuple[str, str, Mapping[str, Any]]
FilterValue = str | int | float | bool | None | Sequence[str | int | float | bool | None]
