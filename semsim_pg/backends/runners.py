"""The things that turn texts into vectors: a sentence-transformers model run by torch, or an
ONNX export of it run by onnxruntime. Both return L2-normalised float32 rows in input order."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import BackendUnavailable, ConfigurationError
from semsim_pg.progress import progress_bar

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ExportCorrupted", "OnnxRunner", "Runner", "TorchRunner", "set_torch_threads"]

logger = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]


class ExportCorrupted(BackendUnavailable):
    """A cached export exists but cannot be loaded (truncated, edited, from an incompatible version)."""


class Runner(Protocol):
    """What an :class:`~semsim_pg.encoder.Encoder` needs from a backend."""

    #: the backend that runs: ``torch``, ``torch-bf16``, ``onnx`` or ``onnx-int8``
    name: str
    #: False: callers must serialise ``encode`` (the Encoder holds a lock around it)
    thread_safe: bool
    #: False: a text's vector depends on the texts encoded in the same batch (dynamic int8)
    batch_invariant: bool

    @property
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int, show_progress_bar: bool = False) -> Matrix: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]: ...

    def describe(self) -> dict[str, Any]: ...


def _unit_rows(matrix: Any) -> Matrix:
    rows = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32))
    # Normalised again in float32: a model run in bf16 or int8 normalises in its own precision.
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


_torch_threads_lock = threading.Lock()


def set_torch_threads(threads: int | None) -> None:
    """Apply ``SEMSIM_THREADS`` to torch (process-wide: torch has one intra-op pool)."""
    if not threads:
        return
    import torch

    with _torch_threads_lock:
        if torch.get_num_threads() != threads:
            logger.info("torch: %d intra-op threads (SEMSIM_THREADS)", threads)
            try:
                torch.set_num_threads(threads)
            except (TypeError, ValueError, OverflowError, RuntimeError):
                raise _bad_threads(threads) from None


def _bad_threads(threads: int | None) -> ConfigurationError:
    from semsim_pg.settings import MAX_THREADS

    return ConfigurationError(
        f"Cannot run {threads} intra-op threads: set SEMSIM_THREADS between 1 and {MAX_THREADS} "
        "(the number of cores or fewer), or unset it."
    )


class TorchRunner:
    """``SentenceTransformer.encode``: the reference path (fp32) or bf16 weights."""

    thread_safe = False  # a torch module shared by threads: serialise, the intra-op pool is shared anyway
    batch_invariant = True  # padding is masked out: a text's vector is the same in any batch

    def __init__(self, model: SentenceTransformer, *, precision: str = "float32", threads: int | None = None) -> None:
        self.model = model
        self.precision = precision
        self.name = "torch" if precision == "float32" else "torch-" + {"bfloat16": "bf16", "float16": "fp16"}[precision]
        set_torch_threads(threads)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension() or 0)

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 512)

    def encode(self, texts: Sequence[str], batch_size: int, show_progress_bar: bool = False) -> Matrix:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        if self.precision == "float32":
            return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        return _unit_rows(vectors)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True)
        return [len(ids) for ids in encoded["input_ids"]]

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        # verbose=False: a text longer than the model reads is what splitting is for, not a warning.
        encoded = self.model.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in encoded["offset_mapping"]]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.model.device), "precision": self.precision}


class OnnxRunner:
    """An exported model (see :mod:`semsim_pg.backends.export`) run by onnxruntime on the CPU.

    The graph holds the whole sentence-transformers pipeline (transformer, pooling, normalise);
    tokenisation uses the model's own ``tokenizer.json`` through the ``tokenizers`` library, with
    sentence-transformers' settings (strip, truncate to ``max_seq_length``, pad to the longest).
    """

    thread_safe = True  # InferenceSession.run and Tokenizer.encode_batch may be called concurrently
    batch_invariant = True

    def __init__(self, directory: Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise BackendUnavailable(
                f"The onnx backends need onnxruntime ({exc}): pip install 'semsim[onnx]', or set SEMSIM_BACKEND=torch."
            ) from None
        self.directory = directory
        self.threads = threads
        # Outside the try below: a bad setting is not a corrupted export (that one gets deleted).
        options = ort.SessionOptions()
        try:
            options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        except (TypeError, ValueError, OverflowError):
            raise _bad_threads(threads) from None
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
            self.name = str(manifest["backend"])
            # Dynamic int8 quantises each MatMul's activations with one scale for the whole batch:
            # a text's vector moves with its batch-mates and their padding (all-MiniLM-L6-v2,
            # 300 Tatoeba sentences in batches of 32: cosine to itself encoded alone down to 0.954).
            self.batch_invariant = self.name != "onnx-int8"
            self._dimension = int(manifest["dimension"])
            self._max_seq_length = int(manifest["max_seq_length"])
            self._lowercase = bool(manifest.get("lowercase", False))
            self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            self.tokenizer.enable_truncation(max_length=self._max_seq_length)
            self.tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=str(manifest["pad_token"]))
            self._counter = Tokenizer.from_file(str(directory / "tokenizer.json"))
            self._counter.no_truncation()
            self._counter.no_padding()
            self.session = ort.InferenceSession(
                str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):  # a part of the export is missing: rebuild it
                raise ExportCorrupted(
                    f"The export in {directory} is incomplete ({exc}). Delete that directory to export again, "
                    "or set SEMSIM_BACKEND=torch."
                ) from exc
            # unreadable here (permissions, I/O): not corrupted, and not to be deleted
            raise BackendUnavailable(
                f"Cannot read the export in {directory} ({exc}). Give this user read access to it, "
                "or set SEMSIM_BACKEND=torch."
            ) from exc
        except Exception as exc:  # onnxruntime's and tokenizers' parse errors have no common base but Exception
            raise ExportCorrupted(
                f"The export in {directory} cannot be read ({type(exc).__name__}: {exc}). Delete that directory "
                "to export again, or set SEMSIM_BACKEND=torch."
            ) from exc
        self.manifest: dict[str, Any] = manifest
        self._inputs = {i.name for i in self.session.get_inputs()}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    def _run(self, texts: list[str]) -> Matrix:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (output,) = self.session.run(["sentence_embedding"], feeds)
        return np.asarray(output, dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int, show_progress_bar: bool = False) -> Matrix:
        # As sentence-transformers does: strip, and batch texts of similar length to pad little.
        stripped = [self._prepare(t) for t in texts]
        order = np.argsort([-len(t) for t in stripped], kind="stable")
        out = np.empty((len(stripped), self._dimension), dtype=np.float32)
        with progress_bar(show_progress_bar, total=len(stripped), desc="Encoding", unit="text") as bar:
            for start in range(0, len(stripped), batch_size):
                index = order[start : start + batch_size]
                out[index] = self._run([stripped[i] for i in index])
                bar.update(len(index))
        return _unit_rows(out)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch([self._prepare(t) for t in texts])]

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        # The raw texts, so that the offsets point into them (the tokenizer's normaliser lower-cases).
        encodings = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [[(int(a), int(b)) for a, b in e.offsets] for e in encodings]

    def _prepare(self, text: str) -> str:
        return text.strip().lower() if self._lowercase else text.strip()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": "cpu",
            "precision": self.manifest.get("precision", "float32"),
            "onnxruntime_threads": self.threads or "default",
            "export": str(self.directory),
        }
