"""What a saved FAISS index is: its files, its manifest (what it was built from, compared with
the collection on load), and the FAISS metric that ranks like the collection's pgvector operator.

``faiss`` is imported inside functions (:func:`load_faiss`): importing semsim never loads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsim_pg.errors import DimensionMismatch, InputFileError, InvalidInput, ModelMismatch

if TYPE_CHECKING:
    from semsim_pg.store import Collection

__all__ = [
    "IDS_FILE",
    "INDEX_FILE",
    "INDEX_TYPES",
    "MANIFEST",
    "FaissManifest",
    "check_manifest",
    "faiss_metric",
    "load_faiss",
    "read_manifest",
]

INDEX_TYPES = ("flat", "ivfflat", "hnsw", "ivfpq")
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.jsonl"
FORMAT_VERSION = 1
# FAISS warns below ~39 training points per centroid; more buys little for k-means.
TRAIN_POINTS_PER_LIST = 64


@dataclass(frozen=True)
class FaissManifest:
    """What an index was built from and how: compared with the collection on load."""

    collection: str
    collection_id: int
    model: str
    dimension: int
    metric: str
    rows: int
    index_type: str
    parameters: dict[str, int]
    build_seconds: float
    faiss_version: str
    created_at: str
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> FaissManifest:
        wanted = {f for f in cls.__dataclass_fields__}
        missing = sorted(wanted - set(data) - {"format_version"})
        if missing:
            raise InputFileError(
                f"{source}: the manifest lacks {', '.join(missing)}. It was not written by `semsim faiss build`, "
                "or is damaged: rebuild the index."
            )
        return cls(**{k: v for k, v in data.items() if k in wanted})


def load_faiss() -> Any:
    """The ``faiss`` module, imported on first use."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise InvalidInput("FAISS is not installed: pip install faiss-cpu.") from exc
    return faiss


def faiss_metric(metric: str, index_type: str) -> int:
    """The FAISS metric that ranks like pgvector's operator for ``metric``.

    cosine and inner product both become METRIC_INNER_PRODUCT (cosine on L2-normalised vectors,
    which rank the same as ``<=>``); l2 is METRIC_L2 (FAISS reports it squared); l1 exists only
    for flat indexes in FAISS (the HNSW and IVF codecs here are built for L2/IP).
    """
    faiss = load_faiss()
    if metric in ("cosine", "inner_product"):
        return int(faiss.METRIC_INNER_PRODUCT)
    if metric == "l2":
        return int(faiss.METRIC_L2)
    if metric == "l1":
        if index_type != "flat":
            raise InvalidInput(
                f"Collection metric l1 (Manhattan) works only with --index flat in FAISS, not {index_type}: "
                "use --index flat, or a collection with metric cosine, inner_product or l2."
            )
        return int(faiss.METRIC_L1)
    raise InvalidInput(f"Unknown metric {metric!r}.")


def read_manifest(path: str | Path) -> FaissManifest:
    path = Path(path)
    if not path.is_dir():
        raise InputFileError(f"{path}: no such FAISS index directory. Build one with `semsim faiss build`.")
    source = path / MANIFEST
    if not source.is_file():
        raise InputFileError(
            f"{path}: holds no {MANIFEST}, so it is not a complete FAISS index. Build one with `semsim faiss build`."
        )
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{source}: cannot read the manifest ({exc}). Rebuild the index.") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{source}: the manifest must be a JSON object. Rebuild the index.")
    return FaissManifest.from_dict(data, source)


def check_manifest(manifest: FaissManifest, collection: Collection, rows: int | None, path: Path) -> None:
    """Raise, naming each difference, when the index was not built from this collection as it is now."""
    differences = []
    if manifest.collection != collection.name or manifest.collection_id != collection.id:
        differences.append(
            f"collection {manifest.collection!r} (id {manifest.collection_id}) vs {collection.name!r} (id {collection.id})"
        )
    if manifest.metric != collection.metric:
        differences.append(f"metric {manifest.metric} vs {collection.metric}")
    if rows is not None and manifest.rows != rows:
        differences.append(f"row count {manifest.rows} vs {rows} now")
    where = f"The FAISS index at {path} does not match collection {collection.name!r}"
    fix = f"Rebuild it: semsim faiss build -c {collection.name} --index {manifest.index_type} --out {path}"
    if manifest.model != collection.model_name:
        raise ModelMismatch(
            f"{where}: it holds vectors of model {manifest.model}, the collection of {collection.model_name}"
            + (f" (also {'; '.join(differences)})" if differences else "")
            + f". {fix}."
        )
    if manifest.dimension != collection.dimension:
        raise DimensionMismatch(
            f"{where}: {manifest.dimension} dimensions in the index, {collection.dimension} in the collection. {fix}."
        )
    if differences:
        raise InvalidInput(f"{where}: {'; '.join(differences)}. {fix}.")
