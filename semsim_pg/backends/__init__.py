"""How an encoder runs its model: torch (fp32, or bf16 where the CPU has it), an ONNX export run by
onnxruntime (fp32 or int8), or ``auto``: the fastest of those that pass a quality gate against torch
fp32, measured once per machine and recorded in the data dir.

Vectors of every backend of one model stay comparable (the gate bounds how far they may move), so
a collection may hold vectors of several; re-encode with one backend for bit-identical vectors.
"""

from __future__ import annotations

from semsim_pg.backends.auto import BackendChoice, candidate_backends, choose_backend
from semsim_pg.backends.cpu import CpuInfo, cpu_info
from semsim_pg.backends.export import Export, ensure_export, model_hash
from semsim_pg.backends.gate import (
    GATE_MAX_SPEARMAN_DROP,
    GATE_MEAN_COSINE,
    GATE_MIN_COSINE,
    GateResult,
    GateSample,
    cosine_stats,
    gate_sample,
)
from semsim_pg.backends.runners import ExportCorrupted, OnnxRunner, Runner, TorchRunner
from semsim_pg.backends.select import BACKENDS, describe_choice, load_runner

__all__ = [
    "BACKENDS",
    "GATE_MAX_SPEARMAN_DROP",
    "GATE_MEAN_COSINE",
    "GATE_MIN_COSINE",
    "BackendChoice",
    "CpuInfo",
    "Export",
    "ExportCorrupted",
    "GateResult",
    "GateSample",
    "OnnxRunner",
    "Runner",
    "TorchRunner",
    "candidate_backends",
    "choose_backend",
    "cosine_stats",
    "cpu_info",
    "describe_choice",
    "ensure_export",
    "gate_sample",
    "load_runner",
    "model_hash",
]
