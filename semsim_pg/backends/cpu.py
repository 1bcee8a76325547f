"""What the CPU can do, read from ``/proc/cpuinfo``, and how much of it is free: never assume one CPU.

bf16 weights are ~3x faster than fp32 on a CPU with AMX or AVX-512 BF16 and ~5x *slower* on one
without (both measured on machines of the same kind); int8 kernels gain most
with AVX-512 VNNI or AMX. The backend choice and its cache key depend on these flags.

How many threads a model runs with depends on the machine's load: :func:`free_cores` is the one
answer, for the encoders (:func:`encoder_threads`) and for fine-tuning (semsim_pg.finetune).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "cpu_info", "encoder_threads", "free_cores", "parse_cpuinfo"]

logger = logging.getLogger(__name__)

#: The flags that change which backend is fastest (the rest of /proc/cpuinfo's list does not).
RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """True when bf16 matrix products run in hardware (AMX or AVX-512 BF16)."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def int8_acceleration(self) -> str:
        """The best int8 instruction set: ``amx``, ``avx512_vnni``, ``avx_vnni``, ``avx2`` or ``none``."""
        for flag, name in (
            ("amx_int8", "amx"),
            ("avx512_vnni", "avx512_vnni"),
            ("avx_vnni", "avx_vnni"),
            ("avx2", "avx2"),
        ):
            if flag in self.flags:
                return name
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "flags": sorted(self.flags),
            "native_bf16": self.native_bf16,
            "int8": self.int8_acceleration,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """The model name and the relevant flags of the first processor in a /proc/cpuinfo text."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return CpuInfo(
        model=model or platform.processor() or platform.machine(), flags=frozenset(flags & set(RELEVANT_FLAGS))
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached for the process)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no flags known, so nothing that needs them is assumed
        text = ""
    return parse_cpuinfo(text)


def free_cores(own: float = 0.0) -> tuple[int, int]:
    """How many threads to run now, and how many cores there are: all cores when the rest of the
    machine is idle, one fewer for each core other processes keep busy, at least one.

    ``own`` is what this process adds to the 1-minute load average itself (its running threads).
    A core counts as busy from half a core of other load: a model's intra-op threads wait on each
    other when one of them shares its core. Measured on a 2-core AMD EPYC: fine-tuning
    all-MiniLM-L6-v2 (batch 32), idle, 2 threads took 2.0 s a step and 1 thread 3.3 s; at a load
    average of 4-13 (other jobs), 2 threads took 22-25 s a step and 1 thread 6 s. Encoding with
    onnx-int8 at a load of 9-11: 1 thread 122-221 texts/s, 2 threads 85-180, batch by batch.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    other = max(0.0, os.getloadavg()[0] - own) if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - other + 0.5))), cores


def encoder_threads(configured: int | None) -> int | None:
    """The intra-op threads of an encoder about to load: ``configured`` (``SEMSIM_THREADS``) when
    set; else None (the library's default, one per physical core) when every core is free now,
    and the free cores (:func:`free_cores`) when other processes keep some busy. Decided once,
    when the model loads: onnxruntime fixes its threads with the session."""
    if configured is not None:
        return configured
    free, cores = free_cores()
    if free >= cores:
        return None
    logger.info(
        "encoding with %d intra-op thread(s): %d of %d cores are busy with other work now "
        "(SEMSIM_THREADS fixes the number)",
        free,
        cores - free,
        cores,
    )
    return free
