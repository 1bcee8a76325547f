"""Turn ``SEMSIM_BACKEND`` into a runner: the one place that knows every backend's name."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsim_pg.backends.auto import BackendChoice, choose_backend, fingerprint, read_choice, record_path
from semsim_pg.backends.cpu import cpu_info, encoder_threads
from semsim_pg.backends.export import ONNX_BACKENDS, ensure_export, model_hash, remove_export
from semsim_pg.backends.runners import ExportCorrupted, OnnxRunner, Runner, TorchRunner
from semsim_pg.errors import BackendUnavailable
from semsim_pg.settings import BACKENDS

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["BACKENDS", "load_runner"]

logger = logging.getLogger(__name__)


#: ``load_torch(precision)``: the sentence-transformers model with weights in that dtype
LoadTorch = Callable[[str], "SentenceTransformer"]


def _on_cpu(device: str | None) -> bool:
    if device is not None:
        return device == "cpu"
    try:
        import torch
    except ImportError:
        # no [encoders] extra: nothing could use an accelerator, and an onnx export made before
        # runs without torch (onnxruntime and tokenizers); a backend that needs torch says which
        # extra to install when it loads the model (ModelLoadError)
        return True
    return not torch.cuda.is_available()


def load_runner(
    backend: str,
    *,
    name: str,
    location: str,
    data_dir: Path,
    precision: str,
    device: str | None,
    threads: int | None,
    load_torch: LoadTorch,
) -> tuple[Runner, BackendChoice | None]:
    """The runner for ``backend`` (one of :data:`BACKENDS`) and, for ``auto``, what it chose.

    ``threads`` is ``SEMSIM_THREADS``: None lets :func:`~semsim_pg.backends.cpu.encoder_threads`
    choose from the machine's load now; ``auto``'s record stays keyed by the setting, not by
    that choice (a busier moment must not measure the backends again)."""
    run_threads = encoder_threads(threads)
    make = functools.partial(
        _make, name=name, location=location, data_dir=data_dir, threads=run_threads, load_torch=load_torch
    )
    if backend == "auto":
        if not _on_cpu(device):  # onnx runs on the CPU here: on an accelerator torch is the fast path
            return make("torch", precision=precision), None
        try:
            choice, runner = choose_backend(
                name=name,
                location=location,
                data_dir=data_dir,
                threads=threads,
                make_runner=functools.partial(make, precision="float32"),
            )
        except Exception as exc:
            # whatever broke (a full disk, a corrupted cache, a library's own error), auto never
            # fails the user's request: the reference path always works
            reason = f"{type(exc).__name__}: {exc}"
            # loaded before warning: when the model itself cannot load (ModelLoadError: not
            # installed, missing files), that one-line error is the whole story
            reference = load_torch("float32")
            logger.warning(
                "SEMSIM_BACKEND=auto cannot choose a backend for %s (%s); encoding with torch fp32. "
                "Fix the cause and restart, or set SEMSIM_BACKEND=torch to skip the choice",
                name,
                reason,
            )
            fallback = BackendChoice(backend="torch", model=name, model_hash="", fingerprint={}, fallback=reason)
            return TorchRunner(reference, threads=run_threads), fallback
        return runner, choice
    if backend in ONNX_BACKENDS and not _on_cpu(device):
        raise BackendUnavailable(
            f"Backend {backend} runs on the CPU, but SEMSIM_DEVICE is {device or 'an accelerator'}. "
            "Set SEMSIM_BACKEND=torch to use the accelerator, or SEMSIM_DEVICE=cpu."
        )
    return make(backend, precision=precision), None


def _make(
    backend: str,
    *,
    name: str,
    location: str,
    data_dir: Path,
    precision: str,
    threads: int | None,
    load_torch: LoadTorch,
) -> Runner:
    if backend == "torch":
        if precision == "bfloat16" and not cpu_info().native_bf16:
            logger.warning(
                "SEMSIM_PRECISION=bfloat16 on a CPU without native bf16 (%s): expect it to be several times "
                "slower than float32 here",
                cpu_info().model,
            )
        return TorchRunner(load_torch(precision), precision=precision, threads=threads)
    if backend == "torch-bf16":
        return TorchRunner(load_torch("bfloat16"), precision="bfloat16", threads=threads)
    if backend not in ONNX_BACKENDS:
        raise BackendUnavailable(
            f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)} (auto chooses by measurement)."
        )

    def export() -> Path:
        return ensure_export(
            backend, name=name, location=location, data_dir=data_dir, load_fp32=lambda: load_torch("float32")
        ).path

    path = export()
    try:
        return OnnxRunner(path, threads=threads)
    except ExportCorrupted as exc:
        logger.warning("the cached %s export of %s is unusable (%s); exporting it again", backend, name, exc)
    try:
        remove_export(backend, location=location, data_dir=data_dir)
    except OSError as exc:
        raise BackendUnavailable(
            f"The cached {backend} export of {name} under {path} is unusable and cannot be removed ({exc}). "
            "Delete that directory, or set SEMSIM_BACKEND=torch."
        ) from exc
    return OnnxRunner(export(), threads=threads)


def describe_choice(
    choice: BackendChoice | None, *, data_dir: Path, location: str | None, threads: int | None
) -> dict[str, Any]:
    """What ``semsim info`` shows of the backend choice: the CPU (its relevant flags), the threads
    setting, ``auto``'s record for these settings (path, each candidate's figures, or why it was
    excluded) and, when auto fell back to torch fp32, why. ``choice`` is what the encoder got
    (None: it did not run auto, or the model was not loaded): the record is then read, if any."""
    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu.to_dict(),
        "threads": threads if threads is not None else "default",
        "record": None,
        "chosen": None,
        "measured_at": None,
        "candidates": [],
        "fallback": None,
    }
    path: str | None = None
    if location is not None:
        try:
            digest = model_hash(location)
            path = str(record_path(data_dir, digest, threads))
            if choice is None:
                choice = read_choice(Path(path), fingerprint(digest, threads))
        except (OSError, BackendUnavailable):  # the model's files cannot be read: no record to show
            pass
    info["record"] = path if path is not None and Path(path).is_file() else None
    if choice is not None:
        info.update(
            chosen=choice.backend,
            measured_at=choice.measured_at or None,
            candidates=list(choice.candidates),
            fallback=choice.fallback,
            summary=choice.summary(),
        )
    return info
