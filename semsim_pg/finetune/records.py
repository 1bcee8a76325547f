"""The record a fine-tuning run saves next to its model, and the rerank decision built on it.

``semsim-finetune.json`` in the model directory says what the model was made from (base model,
collection, data, hyper-parameters) and what it did on held-out data (the dev metric before and
after). A reranker's record also holds the weight of its score against the first stage's
(``fusion``, chosen on the dev queries, applied wherever it reranks: :func:`semsim_pg.rerank.fuse`).
A reranker is used by ``rerank="auto"`` only when its record shows that it raised the dev
metric on the very collection being searched: a cross-encoder tuned on one collection, or one
with no record at all, can make another collection worse (an STS-B cross-encoder took FAQ
accuracy from 0.904 to 0.731), so "auto" leaves it off and says why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from semsim_pg.errors import InvalidInput

__all__ = [
    "RECORD_NAME",
    "RerankDecision",
    "TrainingRecord",
    "decide_rerank",
    "format_record",
    "read_record",
    "write_record",
]

logger = logging.getLogger(__name__)

RECORD_NAME = "semsim-finetune.json"


@dataclass
class TrainingRecord:
    kind: str  # "bi-encoder" or "reranker"
    base: str
    collection: str | None
    metric: str
    before: dict[str, float]
    after: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    out: str = ""
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=dict)
    #: reranker: ``weight`` (the cross-encoder's share of the score, 0-1, chosen on dev), how the
    #: score is blended (``score``) and the dev metrics of the reranker's own order (``alone``)
    fusion: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """How much the dev metric rose (points x100; negative: it fell)."""
        return float(self.after.get(self.metric, 0.0) - self.before.get(self.metric, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": round(self.gain, 4)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def format_record(record: TrainingRecord) -> str:
    """The record as the lines a command prints: data, time, and the dev metrics before and after."""
    data = record.data
    source = record.collection or "the given data"
    lines = [
        f"{record.kind} tuned from {record.base} on {source} ({data.get('kind')})",
        f"  train: {data.get('train_queries')} queries/texts, {record.steps} steps, {record.seconds:.0f} s; "
        f"dev: {data.get('dev_queries')} held out",
    ]
    first = "first stage" if record.kind == "reranker" else "before"
    width = max(len(name) for name in record.before)
    lines.append(f"  {'dev metric':<{width}}  {first:>11}  {'after':>8}  {'change':>8}")
    for name, before in record.before.items():
        after = record.after.get(name, float("nan"))
        mark = "  <- decides" if name == record.metric else ""
        lines.append(f"  {name:<{width}}  {before:11.2f}  {after:8.2f}  {after - before:+8.2f}{mark}")
    if record.fusion:
        alone = record.fusion.get("alone", {}).get(record.metric)
        lines.append(
            f"  order: {1 - record.fusion['weight']:.2f} x first stage + {record.fusion['weight']:.2f} x reranker "
            f"(weight chosen on dev; the reranker's own order: {record.metric} "
            f"{'?' if alone is None else f'{alone:.2f}'})"
        )
    lines.append(f"saved to {record.out} (with its record, {RECORD_NAME})")
    return "\n".join(lines)


def write_record(directory: Path, record: TrainingRecord) -> Path:
    path = Path(directory) / RECORD_NAME
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_record(directory: str | Path) -> TrainingRecord | None:
    """The record in a model directory, or None when it has none."""
    path = Path(directory) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return TrainingRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{path} is not a semsim fine-tuning record ({exc}); train the model again.") from None


@dataclass(frozen=True)
class RerankDecision:
    """Whether ``rerank="auto"`` reranks a collection, with which model, and why (one line)."""

    use: bool
    model: str | None
    reason: str
    record: TrainingRecord | None = None

    def __bool__(self) -> bool:
        return self.use


def decide_rerank(collection: str, reranker: str | None = None) -> RerankDecision:
    """Use ``reranker`` (default: the configured cross-encoder) on ``collection`` only when its
    record shows a gain there. Never loads the model."""
    from semsim_pg.settings import get_settings

    name = reranker or get_settings().cross_encoder
    train = (
        f"train one with `semsim finetune reranker -c {collection} --queries Q.jsonl --qrels Q.tsv --out DIR` "
        "and set SEMSIM_CROSS_ENCODER=DIR"
    )
    path = Path(name).expanduser()
    if not path.is_dir():
        return RerankDecision(
            False, None, f"rerank off: the cross-encoder {name!r} is not a local model directory; {train}."
        )
    record = read_record(path)
    if record is None:
        return RerankDecision(
            False,
            None,
            f"rerank off: {path} has no {RECORD_NAME}, so its effect on {collection!r} was never measured; {train}.",
        )
    if record.kind != "reranker":
        return RerankDecision(False, None, f"rerank off: {path} is a {record.kind}, not a reranker.", record)
    if record.collection != collection:
        return RerankDecision(
            False,
            None,
            f"rerank off: {path} was measured on collection {record.collection!r}, not {collection!r}; {train}.",
            record,
        )
    change = (
        f"{record.metric} {record.before.get(record.metric, 0):.2f} -> {record.after.get(record.metric, 0):.2f} "
        f"on {record.data.get('dev_queries', '?')} held-out queries"
    )
    if "weight" in record.fusion:
        change += f", weight {record.fusion['weight']:.2f}"
    if record.gain <= 0:
        return RerankDecision(False, None, f"rerank off: {path} did not help on {collection!r} ({change}).", record)
    return RerankDecision(True, str(path.resolve()), f"rerank on: {path} helps {collection!r} ({change}).", record)
