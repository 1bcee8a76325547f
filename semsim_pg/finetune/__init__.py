"""Fine-tuning: models tuned on the user's own data, measured on data they never saw.

* From a collection (:func:`finetune_collection_bi_encoder`, :func:`finetune_collection_reranker`):
  label groups, FAQ phrasings or query/qrels files become training rows with hard negatives
  mined from the collection's own index; a dev part is held out, the dev metric is measured
  before and after, and a model that is not better is not saved. Each saved model carries a
  :class:`TrainingRecord`; :func:`decide_rerank` reads a reranker's record to decide whether
  ``rerank="auto"`` uses it on a collection.
* From sentence-pair files (:func:`finetune_bi_encoder`, :func:`finetune_cross_encoder`): STS-style
  scored pairs or (query, positive) pairs.

Training needs the ``datasets`` and ``accelerate`` packages (sentence-transformers' trainers do);
they and torch are imported only when a run starts.
"""

from __future__ import annotations

from semsim_pg.finetune.bi_encoder import BiEncoderOptions
from semsim_pg.finetune.collection import (
    finetune_collection_bi_encoder,
    finetune_collection_reranker,
    finetune_labelled_bi_encoder,
)
from semsim_pg.finetune.data import CollectionTexts, LabelledText, RetrievalTask, task_from_labels
from semsim_pg.finetune.pairs import LOSSES, FinetuneResult, finetune_bi_encoder, finetune_cross_encoder
from semsim_pg.finetune.records import (
    RECORD_NAME,
    RerankDecision,
    TrainingRecord,
    decide_rerank,
    format_record,
    read_record,
)
from semsim_pg.finetune.reranker import RerankerOptions

__all__ = [
    "LOSSES",
    "RECORD_NAME",
    "BiEncoderOptions",
    "CollectionTexts",
    "FinetuneResult",
    "LabelledText",
    "RerankDecision",
    "RerankerOptions",
    "RetrievalTask",
    "TrainingRecord",
    "decide_rerank",
    "finetune_bi_encoder",
    "finetune_collection_bi_encoder",
    "finetune_collection_reranker",
    "finetune_cross_encoder",
    "finetune_labelled_bi_encoder",
    "format_record",
    "read_record",
    "task_from_labels",
]
