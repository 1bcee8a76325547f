"""One call from stored data to a tuned model: read the data, split off dev, mine, train, record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsim_pg.errors import InvalidInput
from semsim_pg.finetune import common
from semsim_pg.finetune.bi_encoder import BiEncoderOptions, train_bi_encoder
from semsim_pg.finetune.data import (
    DEFAULT_DEV_FRACTION,
    CollectionTexts,
    LabelledText,
    RetrievalTask,
    labelled_texts,
    read_collection,
    read_labelled_file,
    task_from_labels,
    task_from_qrels,
)
from semsim_pg.finetune.mining import Encode, Searcher, store_searcher, task_candidates
from semsim_pg.finetune.records import TrainingRecord
from semsim_pg.finetune.reranker import RerankerOptions, train_reranker

if TYPE_CHECKING:
    from semsim_pg.store import DocumentStore

__all__ = [
    "DEFAULT_RERANK_BASE",
    "finetune_collection_bi_encoder",
    "finetune_collection_reranker",
    "finetune_labelled_bi_encoder",
]

logger = logging.getLogger(__name__)

#: a cross-encoder starts from these weights (a new one-score head on the packaged MiniLM body):
#: no cross-encoder ships with semsim and none can be downloaded offline
DEFAULT_RERANK_BASE = "all-MiniLM-L6-v2"
FAQ_FIELD = "faq_id"


def _qrels_task(
    texts: CollectionTexts,
    queries: str | Path,
    qrels: str | Path,
    dev: str | Path | None,
    dev_fraction: float | None,
    seed: int,
) -> RetrievalTask:
    """BEIR queries and qrels over the collection's documents, for both kinds of model; without a dev
    qrels file twice the labels' default share of queries is held out."""
    return task_from_qrels(
        texts,
        queries,
        qrels,
        dev_qrels_path=dev,
        dev_fraction=dev_fraction or 2 * DEFAULT_DEV_FRACTION,
        seed=seed,
    )


def _mine_and_train(
    task: RetrievalTask,
    search: Searcher,
    encode: Encode | None,
    texts: CollectionTexts,
    *,
    base: str,
    out: Path,
    options: BiEncoderOptions,
    progress: bool,
    overwrite: bool,
) -> TrainingRecord:
    """Load the base before any mining, so that a base that cannot load fails at once with nothing
    written; then mine the candidates and train."""
    common.require_training()
    model = common.load_bi_encoder(base)
    candidates = task_candidates(search, encode, texts, task, k=options.candidates, progress=progress)
    return train_bi_encoder(
        task,
        candidates,
        model=model,
        base=base,
        out=out,
        options=options,
        progress=progress,
        overwrite=overwrite,
        collection=texts.collection,
        stored=texts,
    )


def finetune_labelled_bi_encoder(
    items: list[LabelledText],
    texts: CollectionTexts,
    search: Searcher,
    out: str | Path,
    *,
    base: str,
    faq: bool = False,
    dev: list[LabelledText] | None = None,
    dev_fraction: float | None = None,
    options: BiEncoderOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
) -> TrainingRecord:
    """Tune ``base`` on label groups (``faq``: an FAQ's phrasings, whose entries with a single
    phrasing stay as answers to find) with negatives mined through ``search``, an index over
    ``texts``. The entry point for data that is not a core collection (the Django FAQ)."""
    options = options or BiEncoderOptions()
    out = Path(out).expanduser().resolve()
    common.check_out(out, overwrite)
    task = task_from_labels(
        items,
        dev=dev,
        dev_fraction=dev_fraction or DEFAULT_DEV_FRACTION,
        seed=options.seed,
        kind="faq" if faq else "labels",
        what=f"{texts.collection!r}",
        singletons="keep" if faq else "error",
        source=source,
    ).limit_training(options.max_anchors, options.seed)
    return _mine_and_train(
        task, search, None, texts, base=base, out=out, options=options, progress=progress, overwrite=overwrite
    )


def finetune_collection_bi_encoder(
    store: DocumentStore,
    collection: str,
    out: str | Path,
    *,
    label_field: str | None = None,
    faq: bool = False,
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
    dev: str | Path | None = None,
    text_field: str = "text",
    base: str | None = None,
    dev_fraction: float | None = None,
    options: BiEncoderOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingRecord:
    """Tune a bi-encoder on what ``collection`` stores and save it to ``out`` if it beats ``base``.

    The data is one of: label groups (``label_field``: documents sharing a value are positives),
    an FAQ collection (``faq``: phrasings of one entry are positives), or BEIR ``queries`` and
    ``qrels`` over the collection's documents. ``dev`` is a labelled file (labels) or a qrels
    file (queries); without it a seeded part is held out. ``base`` defaults to the collection's
    model.
    """
    options = options or BiEncoderOptions()
    out = Path(out).expanduser().resolve()
    common.check_out(out, overwrite, engine=store.engine)
    if faq:
        label_field = label_field or FAQ_FIELD
    if bool(label_field) == (queries is not None or qrels is not None):
        raise InvalidInput("Give either --label-field (or --faq) or --queries with --qrels, one of the two.")
    coll = store.get_collection(collection)
    base = base or coll.model_name
    search, encode = store_searcher(store, coll.name)
    if label_field:
        texts = read_collection(store, coll.name, label_field=label_field)
        source = {"collection": coll.name, "label_field": label_field, "dev_file": str(dev) if dev else None}
        return finetune_labelled_bi_encoder(
            labelled_texts(texts, label_field),
            texts,
            search,
            out,
            base=base,
            faq=faq,
            dev=read_labelled_file(dev, text_field=text_field, label_field=label_field) if dev else None,
            dev_fraction=dev_fraction,
            options=options,
            progress=progress,
            overwrite=overwrite,
            source=source,
        )
    if queries is None or qrels is None:
        raise InvalidInput("--queries and --qrels go together: give both.")
    texts = read_collection(store, coll.name)
    task = _qrels_task(texts, queries, qrels, dev, dev_fraction, options.seed).limit_training(
        options.max_anchors, options.seed
    )
    return _mine_and_train(
        task, search, encode, texts, base=base, out=out, options=options, progress=progress, overwrite=overwrite
    )


def finetune_collection_reranker(
    store: DocumentStore,
    collection: str,
    out: str | Path,
    *,
    queries: str | Path,
    qrels: str | Path,
    dev: str | Path | None = None,
    base: str | None = None,
    dev_fraction: float | None = None,
    options: RerankerOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingRecord:
    """Tune a cross-encoder to rerank ``collection``'s first-stage hits for queries like ``queries``;
    saved to ``out`` only if it reorders the dev queries' candidates better than the index does."""
    options = options or RerankerOptions()
    out = Path(out).expanduser().resolve()
    common.check_out(out, overwrite, engine=store.engine)
    coll = store.get_collection(collection)
    texts = read_collection(store, coll.name)
    task = _qrels_task(texts, queries, qrels, dev, dev_fraction, options.seed)
    base = base or DEFAULT_RERANK_BASE
    common.require_training()
    model = common.load_cross_encoder(base)  # before any work: a base that cannot load fails at once
    search, encode = store_searcher(store, coll.name)
    train_candidates = task_candidates(search, encode, texts, task, k=options.candidates, progress=progress)
    dev_candidates = task_candidates(search, encode, texts, task, k=options.candidates, progress=progress, dev=True)
    return train_reranker(
        task,
        train_candidates,
        dev_candidates,
        model=model,
        base=base,
        out=out,
        options=options,
        progress=progress,
        overwrite=overwrite,
        collection=coll.name,
    )
