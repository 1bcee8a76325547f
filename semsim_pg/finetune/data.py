"""Training data from what a collection stores: label groups, query/qrels files, FAQ phrasings.

Every source becomes the same shape, a :class:`RetrievalTask`: queries, a corpus and which corpus
documents are relevant to each query, split into a part to train on and a dev part the training
never sees. A label group is the special case where each document is a query whose relevant
documents are the others with its label; its dev metric (accuracy@1) is then exactly 1-NN
accuracy against the training documents.

Documents and their stored vectors are read in one SQL statement per collection; nothing here
ranks anything (mining does, through the collection's index: :mod:`semsim_pg.finetune.mining`).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InputFileError, InvalidInput

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = [
    "CollectionTexts",
    "LabelledText",
    "RetrievalTask",
    "read_collection",
    "task_from_labels",
    "task_from_qrels",
]

logger = logging.getLogger(__name__)

#: the part of the data held out as dev when no dev file is given
DEFAULT_DEV_FRACTION = 0.1


@dataclass(frozen=True)
class LabelledText:
    """A text with the label that groups it (an intent, an FAQ entry id)."""

    doc_id: str
    text: str
    label: str


@dataclass
class CollectionTexts:
    """A collection's documents as read for training: ids, texts, optional labels, stored vectors."""

    collection: str
    model_name: str
    ids: list[str]
    texts: list[str]
    labels: list[str | None]
    vectors: npt.NDArray[np.float32]

    def text_of(self) -> dict[str, str]:
        return dict(zip(self.ids, self.texts, strict=True))

    def matrix(self, ids: Sequence[str]) -> npt.NDArray[np.float32] | None:
        """The stored vectors of ``ids`` in that order, unit length; None if one is not stored."""
        row_of = {doc_id: i for i, doc_id in enumerate(self.ids)}
        if any(doc_id not in row_of for doc_id in ids):
            return None
        rows = self.vectors[[row_of[doc_id] for doc_id in ids]]
        return np.asarray(rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12), dtype=np.float32)


@dataclass
class RetrievalTask:
    """Queries, a corpus and relevance judgments, split into train and dev.

    ``metric`` is the dev metric that decides whether a tuned model is better.
    ``corpus`` is what dev queries are ranked against; for label groups it holds the training
    documents only, so a dev text never finds itself.
    """

    kind: str  # "labels", "faq" or "qrels"
    metric: str  # "accuracy@1" or "ndcg@10"
    corpus: dict[str, str]
    train_queries: dict[str, str]
    train_qrels: dict[str, set[str]]
    dev_queries: dict[str, str]
    dev_qrels: dict[str, set[str]]
    #: documents that may never serve as training negatives or positives (dev texts)
    excluded: set[str] = field(default_factory=set)
    #: label of each document (label tasks), for the record and for batch sampling
    labels: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def limit_training(self, count: int | None, seed: int) -> RetrievalTask:
        """Keep a seeded sample of ``count`` training queries (all when None): a quicker run on a
        large collection, mining only what is trained on. Dev and corpus stay whole."""
        if count is None or count >= len(self.train_queries):
            return self
        if count < 1:
            raise InvalidInput(f"--max-anchors must be at least 1, got {count}.")
        chosen = sorted(self.train_queries)
        random.Random(seed).shuffle(chosen)
        keep = set(chosen[:count])
        self.train_queries = {q: t for q, t in self.train_queries.items() if q in keep}
        self.train_qrels = {q: r for q, r in self.train_qrels.items() if q in keep}
        return self

    def describe(self) -> dict[str, Any]:
        return {
            **self.source,
            "kind": self.kind,
            "dev_metric": self.metric,
            "corpus": len(self.corpus),
            "train_queries": len(self.train_queries),
            "train_judgments": sum(len(v) for v in self.train_qrels.values()),
            "dev_queries": len(self.dev_queries),
            "labels": len(set(self.labels.values())) if self.labels else None,
        }


# reading a collection -------------------------------------------------------------------------
def read_collection(
    store: DocumentStore, collection: str | Collection, *, label_field: str | None = None
) -> CollectionTexts:
    """Every document of ``collection`` with its label (metadata ``label_field``) and stored vector.

    Raises when documents have no vector for the collection's model yet (``semsim reconcile``
    encodes them), since mining searches those vectors.
    """
    from semsim_pg import queries
    from semsim_pg.db import connect, vector_connection

    coll = store.get_collection(collection)
    with connect(store.engine) as conn:
        vector_connection(conn)
        rows = conn.execute(queries.training_rows(coll.id, coll.model_name, label_field)).all()
    if not rows:
        raise InvalidInput(f"Collection {coll.name!r} holds no documents: ingest some before fine-tuning on it.")
    missing = [row[0] for row in rows if row[3] is None]
    if missing:
        raise InvalidInput(
            f"{len(missing)} documents of {coll.name!r} (first: {missing[0]!r}) have no vector for {coll.model_name} "
            f"yet; run `semsim reconcile -c {coll.name}` first."
        )
    vectors = np.vstack([np.asarray(row[3].to_numpy() if hasattr(row[3], "to_numpy") else row[3]) for row in rows])
    return CollectionTexts(
        collection=coll.name,
        model_name=coll.model_name,
        ids=[str(row[0]) for row in rows],
        texts=[str(row[1]) for row in rows],
        labels=[None if row[2] is None or not str(row[2]).strip() else str(row[2]) for row in rows]
        if label_field
        else [None] * len(rows),
        vectors=vectors.astype(np.float32),
    )


# label groups ---------------------------------------------------------------------------------
def _group(items: Sequence[LabelledText]) -> dict[str, list[LabelledText]]:
    groups: dict[str, list[LabelledText]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return dict(groups)


def check_groups(items: Sequence[LabelledText], what: str, *, singletons: str = "error") -> list[LabelledText]:
    """Refuse label groups that cannot train: fewer than two labels, or (``singletons="error"``)
    a label with one document; ``"keep"`` keeps lone documents as corpus only (an FAQ entry
    without alternative phrasings is still an answer to find)."""
    groups = _group(items)
    if len(groups) < 2:
        found = f"only {next(iter(groups))!r}" if groups else "none"
        raise InvalidInput(
            f"{what} needs at least two labels to tell apart, found {found}. Label more documents, or pick "
            "another field."
        )
    lone = sorted(label for label, members in groups.items() if len(members) < 2)
    if lone and singletons == "error":
        first = groups[lone[0]][0]
        raise InvalidInput(
            f"{what}: {len(lone)} labels have a single document (first: {lone[0]!r}, document {first.doc_id!r}); a "
            "label needs at least two documents to make a positive pair. Add documents or remove those labels."
        )
    trainable = [label for label, members in groups.items() if len(members) >= 2]
    if len(trainable) < 2:
        raise InvalidInput(
            f"{what} needs at least two labels with two or more documents each, found {len(trainable)}. Add "
            "phrasings or documents."
        )
    return list(items)


def task_from_labels(
    items: Sequence[LabelledText],
    *,
    dev: Sequence[LabelledText] | None = None,
    dev_fraction: float = DEFAULT_DEV_FRACTION,
    seed: int = 0,
    kind: str = "labels",
    what: str = "The training data",
    singletons: str = "error",
    source: Mapping[str, Any] | None = None,
) -> RetrievalTask:
    """Label groups as a retrieval task: a text's relevant documents are the others with its label.

    Without ``dev``, ``dev_fraction`` of each label's documents (seeded) is held out, at least one
    and keeping at least two per label for training; dev texts are neither trained on nor searched as corpus.
    """
    items = check_groups(items, what, singletons=singletons)
    if not 0 < dev_fraction < 1:
        raise InvalidInput(f"--dev-fraction must be between 0 and 1, got {dev_fraction}.")
    rng = random.Random(seed)
    held: list[LabelledText] = []
    train: list[LabelledText] = []
    if dev is None:
        for _, members in sorted(_group(items).items()):
            members = members[:]
            rng.shuffle(members)
            # At least one of each label that keeps two to train on: an FAQ entry with three phrasings
            # gives one to dev, where a tenth of three rounds to none.
            take = min(len(members) - 2, max(1, round(len(members) * dev_fraction))) if len(members) >= 3 else 0
            held += members[:take]
            train += members[take:]
        if not held:
            raise InvalidInput(
                f"{what} is too small to hold out a dev part ({len(items)} documents). Give a dev file, or more "
                "documents per label."
            )
    else:
        train = list(items)
        held = list(dev)
        if not held:
            raise InvalidInput("The dev file holds no labelled texts.")
    by_label: dict[str, set[str]] = defaultdict(set)
    for item in train:
        by_label[item.label].add(item.doc_id)
    unknown = sorted({item.label for item in held} - set(by_label))
    if unknown:
        raise InvalidInput(
            f"The dev data has labels the training data lacks (first: {unknown[0]!r}); a dev text of an unseen "
            "label can never be matched."
        )
    corpus = {item.doc_id: item.text for item in train}
    train_qrels = {item.doc_id: by_label[item.label] - {item.doc_id} for item in train}
    train_qrels = {q: rel for q, rel in train_qrels.items() if rel}
    dev_ids = [f"dev:{item.doc_id}" if item.doc_id in corpus else item.doc_id for item in held]
    return RetrievalTask(
        kind=kind,
        metric="accuracy@1",
        corpus=corpus,
        train_queries={q: corpus[q] for q in train_qrels},
        train_qrels=train_qrels,
        dev_queries={q: item.text for q, item in zip(dev_ids, held, strict=True)},
        dev_qrels={q: set(by_label[item.label]) for q, item in zip(dev_ids, held, strict=True)},
        excluded={item.doc_id for item in held} if dev is None else set(),
        labels={item.doc_id: item.label for item in train},
        source=dict(source or {}),
    )


def labelled_texts(texts: CollectionTexts, label_field: str) -> list[LabelledText]:
    """The documents that carry a label; says which fields exist when none does."""
    items = [
        LabelledText(doc_id, text, label)
        for doc_id, text, label in zip(texts.ids, texts.texts, texts.labels, strict=True)
        if label is not None
    ]
    if not items:
        raise InvalidInput(
            f"No document of {texts.collection!r} has the metadata field {label_field!r}. Ingest the label as a "
            "column/key (it becomes metadata) or name the field that holds it with --label-field."
        )
    if len(items) < len(texts.ids):
        logger.warning(
            "%d of %d documents have no %r and are left out", len(texts.ids) - len(items), len(texts.ids), label_field
        )
    return items


def read_labelled_file(path: str | Path, *, text_field: str, label_field: str) -> list[LabelledText]:
    """Labelled texts from a CSV/TSV/JSONL file (a dev set for ``--dev``)."""
    from semsim_pg.inputs import read_documents

    items = []
    for number, doc in enumerate(read_documents(Path(path), text_field=text_field), start=1):
        label = doc.metadata.get(label_field)
        if label is None or not str(label).strip():
            raise InputFileError(f"{path}, record {number}: no {label_field!r} value.")
        items.append(LabelledText(f"dev:{doc.external_id}", doc.text, str(label)))
    return items


# queries and qrels ----------------------------------------------------------------------------
def task_from_qrels(
    texts: CollectionTexts,
    queries_path: str | Path,
    qrels_path: str | Path,
    *,
    dev_qrels_path: str | Path | None = None,
    dev_fraction: float = DEFAULT_DEV_FRACTION * 2,
    seed: int = 0,
) -> RetrievalTask:
    """BEIR queries and qrels over a collection's documents; ``dev_fraction`` of the judged queries
    (seeded) or those of ``dev_qrels_path`` form the dev part.

    Every judged document must be in the collection and every judged query in the queries file:
    a typo would quietly train on nothing.
    """
    from semsim_pg.evaluation.retrieval import read_qrels, read_queries

    corpus = texts.text_of()
    queries = read_queries(queries_path)
    judged = _positive(read_qrels(qrels_path, corpus=_Lines(corpus), queries=queries))
    if dev_qrels_path is not None:
        dev_judged = _positive(read_qrels(dev_qrels_path, corpus=_Lines(corpus), queries=queries))
        train_judged = {q: rel for q, rel in judged.items() if q not in dev_judged}
    else:
        if not 0 < dev_fraction < 1:
            raise InvalidInput(f"--dev-fraction must be between 0 and 1, got {dev_fraction}.")
        ids = sorted(judged)
        random.Random(seed).shuffle(ids)
        take = round(len(ids) * dev_fraction)
        if take < 1 or take >= len(ids):
            raise InvalidInput(
                f"{qrels_path} judges {len(ids)} queries: too few to hold out a dev part. Judge more queries or "
                "give --dev QRELS."
            )
        dev_judged = {q: judged[q] for q in ids[:take]}
        train_judged = {q: judged[q] for q in ids[take:]}
    if not train_judged:
        raise InvalidInput(f"{qrels_path}: every judged query is in the dev part; nothing is left to train on.")
    return RetrievalTask(
        kind="qrels",
        metric="ndcg@10",
        corpus=corpus,
        train_queries={q: queries[q] for q in train_judged},
        train_qrels=train_judged,
        dev_queries={q: queries[q] for q in dev_judged},
        dev_qrels=dev_judged,
        source={
            "collection": texts.collection,
            "queries": str(Path(queries_path).resolve()),
            "qrels": str(Path(qrels_path).resolve()),
            "dev_qrels": str(Path(dev_qrels_path).resolve()) if dev_qrels_path else None,
        },
    )


class _Lines(dict[str, int]):
    """The collection's ids in the shape ``read_qrels`` checks corpus ids against."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        super().__init__((doc_id, 0) for doc_id in texts)


def _positive(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, set[str]]:
    return {
        q: {d for d, grade in judged.items() if grade > 0}
        for q, judged in qrels.items()
        if any(g > 0 for g in judged.values())
    }
