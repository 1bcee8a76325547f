"""What the CPU can do, read from ``/proc/cpuinfo``: never assume one CPU.

bf16 weights are ~3x faster than fp32 on a CPU with AMX or AVX-512 BF16 and ~5x *slower* on one
without (both measured on machines of the same kind); int8 kernels gain most
with AVX-512 VNNI or AMX. The backend choice and its cache key depend on these flags.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "cpu_info", "parse_cpuinfo"]

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
