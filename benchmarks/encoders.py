"""Encoder backends side by side: the plain sentence-transformers fp32 path against semsim's
backends (torch, torch-bf16, onnx, onnx-int8, auto), in interleaved rounds, on the same texts.

The same as ``semsim bench encoders`` (one implementation: semsim_pg/bench.py); this script is the
recipe for the figures in the README ("How the model runs"):

    .venv/bin/python benchmarks/encoders.py --file ../shared/data/corpus/tatoeba-en-sentences.txt \\
        --limit 2000 --sts ../shared/data/stsb/stsb-en-dev.csv --backends torch,onnx,onnx-int8,auto \\
        --rounds 3 --plot /tmp/encoders.png

Machines here are shared: compare rows of one run, and name the CPU
(``lscpu | grep 'Model name'``); the script prints it and its relevant flags first.
"""

from __future__ import annotations

import sys


def main() -> int:
    from semsim_pg.backends import cpu_info
    from semsim_pg.cli.main import main as semsim

    cpu = cpu_info()
    print(f"CPU: {cpu.model}; flags: {', '.join(sorted(cpu.flags)) or 'none known'}", file=sys.stderr)
    return semsim(["bench", "encoders", *sys.argv[1:]])


if __name__ == "__main__":
    from _entry import run

    run(main)
