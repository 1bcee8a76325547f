"""Hard negatives from the collection's own index.

For each training query the collection's HNSW index (one SQL statement, :meth:`DocumentStore.search`)
returns its nearest documents; those that are relevant, held out for dev, or the query itself are
dropped. What is left is what the current model confuses with the answer: the most useful
negatives to train on.

The false-negative guard depends on the data:

* Judged queries (qrels) judge only some documents: a candidate may be relevant but unjudged.
  :func:`guarded_negatives` drops every candidate whose cosine to the query reaches ``ratio``
  times the positive's (TopK-PercPos of the NV-Retriever paper, 0.95): a "negative" that the
  model finds as close as the answer is more likely an unlabelled answer than a mistake.
* Label groups label every document: a candidate with the anchor's label is a positive (already
  left out), one with another label is a true negative however close it is, and the closest are
  exactly the confusions a 1-NN match gets wrong. :func:`label_negatives` keeps them. (Measured
  on BANKING77: the score guard, relative to a random document of the label, passed over the
  mined candidates of 818 of 1,280 texts, which then trained on a random negative.)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InvalidInput

if TYPE_CHECKING:
    from semsim_pg.finetune.data import CollectionTexts, RetrievalTask
    from semsim_pg.store import DocumentStore

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_RATIO",
    "Candidates",
    "Encode",
    "Searcher",
    "guarded_negatives",
    "label_negatives",
    "search_candidates",
    "store_searcher",
]

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 30
DEFAULT_RATIO = 0.95


@dataclass
class Candidates:
    """Per query: the index's nearest documents that are not relevant (best first) with their cosine,
    and the cosine of each relevant document, all under the collection's model."""

    negatives: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    positives: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the full ranked candidate ids per query (relevant ones included): the first stage of a rerank
    ranked: dict[str, list[str]] = field(default_factory=dict)

    def ranked_cosines(self) -> dict[str, list[float]]:
        """Each query's cosine of its ranked candidates, in their order (the first stage's scores)."""
        found = {}
        for query_id, ids in self.ranked.items():
            cosine = {**dict(self.negatives.get(query_id, [])), **self.positives.get(query_id, {})}
            found[query_id] = [cosine[doc] for doc in ids]
        return found


#: nearest documents of a vector, best first: ``(vector, k) -> ids`` (an index search)
Searcher = Callable[[npt.NDArray[np.float32], int], list[str]]
#: texts to unit vectors with the model the searched vectors were made with
Encode = Callable[[list[str]], npt.NDArray[np.float32]]


def store_searcher(store: DocumentStore, collection: str) -> tuple[Searcher, Encode]:
    """Search a core collection's HNSW index (one SQL statement a query) and encode with its model."""
    from semsim_pg.store import QueryVector

    coll = store.get_collection(collection)

    def search(vector: npt.NDArray[np.float32], k: int) -> list[str]:
        return [hit.external_id for hit in store.search(coll, QueryVector(vector, coll.model_name), k)]

    def encode(texts: list[str]) -> npt.NDArray[np.float32]:
        return store.encoder_for(coll).encode(texts)

    return search, encode


def search_candidates(
    search: Searcher,
    texts: CollectionTexts,
    queries: Mapping[str, str],
    qrels: Mapping[str, set[str]],
    *,
    k: int = DEFAULT_CANDIDATES,
    excluded: set[str] | frozenset[str] = frozenset(),
    query_vectors: Mapping[str, npt.NDArray[np.float32]] | None = None,
    encode: Encode | None = None,
    progress: bool | None = None,
) -> Candidates:
    """Search each query's ``k`` nearest documents through ``search`` (the collection's index).

    A query that is a stored document (label groups) passes its stored vector in
    ``query_vectors`` and is skipped in its own results; other queries are encoded with ``encode``
    (the collection's model).
    """
    from semsim_pg.progress import progress_bar

    if k < 1:
        raise InvalidInput(f"--candidates must be at least 1, got {k}.")
    row_of = {doc_id: i for i, doc_id in enumerate(texts.ids)}
    ids = list(queries)
    given = dict(query_vectors or {})
    to_encode = [q for q in ids if q not in given]
    if to_encode:
        if encode is None:
            raise InvalidInput("Queries that are not stored documents need an encoder to search with.")
        given.update(zip(to_encode, encode([queries[q] for q in to_encode]), strict=True))
    result = Candidates()
    with progress_bar(progress, total=len(ids), desc="mine negatives", unit="query") as bar:
        for query_id in ids:
            vector = np.asarray(given[query_id], dtype=np.float32)
            fetch = min(k + 1 + len(qrels.get(query_id, ())), 1000)
            ranked = [doc for doc in search(vector, fetch) if doc != query_id and doc not in excluded and doc in row_of]
            relevant = qrels.get(query_id, set())
            candidates = [doc for doc in ranked if doc not in relevant][:k]
            # Cosine from the stored vectors, whatever metric the collection ranks by, so that the
            # guard compares like with like.
            cosine = _cosines(texts.vectors, row_of, vector, candidates + sorted(relevant & row_of.keys()))
            result.negatives[query_id] = [(doc, cosine[doc]) for doc in candidates]
            result.positives[query_id] = {doc: cosine[doc] for doc in relevant if doc in cosine}
            result.ranked[query_id] = ranked[:k]
            bar.update()
    return result


def _cosines(
    vectors: npt.NDArray[np.float32], row_of: Mapping[str, int], query: npt.NDArray[np.float32], ids: list[str]
) -> dict[str, float]:
    if not ids:
        return {}
    rows = vectors[[row_of[doc] for doc in ids]]
    norms = np.linalg.norm(rows, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    values = rows @ query / np.maximum(norms, 1e-12)
    return {doc: float(v) for doc, v in zip(ids, values, strict=True)}


def guarded_negatives(
    candidates: Candidates, query_id: str, positive: str, *, ratio: float = DEFAULT_RATIO, count: int = 1
) -> list[str]:
    """The ``count`` hardest candidates of ``query_id`` that score below ``ratio`` x the positive's
    cosine (fewer when fewer pass)."""
    if not 0 < ratio <= 1:
        raise InvalidInput(f"--negative-ratio must be in (0, 1], got {ratio}.")
    ceiling = ratio * candidates.positives.get(query_id, {}).get(positive, 1.0)
    return [doc for doc, cosine in candidates.negatives.get(query_id, []) if cosine < ceiling][:count]


def label_negatives(
    candidates: Candidates,
    query_id: str,
    labels: Mapping[str, str],
    label: str,
    *,
    ratio: float | None = None,
    count: int = 1,
) -> list[str]:
    """The ``count`` hardest candidates of ``query_id`` whose label is not ``label``; with ``ratio``
    (for labels known to be noisy) only those scoring below ``ratio`` x the cosine of the anchor's
    nearest document of its own label."""
    if ratio is not None and not 0 < ratio <= 1:
        raise InvalidInput(f"--negative-ratio must be in (0, 1], got {ratio}.")
    ceiling = float("inf")
    if ratio is not None:
        ceiling = ratio * max(candidates.positives.get(query_id, {}).values(), default=1.0)
    found = candidates.negatives.get(query_id, [])
    return [doc for doc, cosine in found if labels.get(doc, label) != label and cosine < ceiling][:count]


def random_negative(rng: random.Random, pool: list[str], avoid: set[str]) -> str | None:
    """A document of ``pool`` outside ``avoid`` (a fallback when the guard leaves no hard one)."""
    for _ in range(20):
        doc = pool[rng.randrange(len(pool))]
        if doc not in avoid:
            return doc
    return None


def task_candidates(
    search: Searcher,
    encode: Encode | None,
    texts: CollectionTexts,
    task: RetrievalTask,
    *,
    k: int,
    progress: bool | None,
    dev: bool = False,
) -> Candidates:
    """Candidates for the task's train (or dev) queries; stored documents use their stored vectors."""
    queries = task.dev_queries if dev else task.train_queries
    qrels = task.dev_qrels if dev else task.train_qrels
    row_of = {doc_id: i for i, doc_id in enumerate(texts.ids)}
    stored = {q: texts.vectors[row_of[q]] for q in queries if q in row_of}
    return search_candidates(
        search,
        texts,
        queries,
        qrels,
        k=k,
        excluded=task.excluded,
        query_vectors=stored,
        encode=encode,
        progress=progress,
    )
