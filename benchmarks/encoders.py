"""Encoder benchmark across models and weight precisions, with the quality cost of each precision.

For each (model, precision): dimension, load time, sentences/s at several batch sizes on the same
texts, and how close its vectors are to the float32 ones of the same model (mean and minimum
cosine), so a faster precision is never chosen blind. Prints a table; ``--plot`` draws
sentences/s against batch size; ``--json`` writes the figures.

    .venv/bin/python benchmarks/encoders.py --file ../shared/data/corpus/tatoeba-en-sentences.txt \\
        --limit 2000 --precisions float32,bfloat16 --batch-sizes 16,64,128 --plot /tmp/encoders.png

Machines here are shared: compare rows of one run, and use --repeats to take the best pass
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="model name or directory (repeatable)")
    parser.add_argument("--file", type=Path, default=None, help=".txt/.jsonl/.csv texts (default: sample corpus)")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--precisions", default="float32,bfloat16", help="comma-separated: float32,bfloat16,float16")
    parser.add_argument("--batch-sizes", default="16,64,128")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of sentences/s against batch size")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from semsim_pg.bench import benchmark_encoder, load_texts
    from semsim_pg.encoder import Encoder
    from semsim_pg.settings import configure, get_settings

    texts = load_texts(args.file, args.limit)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    base = get_settings()
    models = args.model or [base.model]
    rows: list[dict[str, Any]] = []
    for model in models:
        reference: np.ndarray | None = None
        for precision in precisions:
            configure(dataclasses.replace(base, precision=precision))
            result = benchmark_encoder(model, texts, batch_sizes, repeats=args.repeats)
            # Quality against float32 on a sample: cosine of the two vectors of each text.
            sample = texts[: min(len(texts), 500)]
            vectors = Encoder(model, cache_size=0).encode(sample)
            if precision == "float32":
                reference = vectors
            agreement = np.einsum("ij,ij->i", vectors, reference) if reference is not None else None
            row = result.to_dict()
            row["cosine_to_float32_mean"] = None if agreement is None else float(agreement.mean())
            row["cosine_to_float32_min"] = None if agreement is None else float(agreement.min())
            rows.append(row)
            print(f"done: {model} {precision}", file=sys.stderr)
    configure(base)

    print(f"{len(texts)} texts; sentences/s at each batch size (best of {args.repeats})")
    header = f"{'model':<28} {'precision':>9} {'dim':>4} {'load s':>7} " + " ".join(
        f"{'b=' + str(b):>8}" for b in batch_sizes
    )
    print(header + f" {'cos mean':>9} {'cos min':>8}")
    for row in rows:
        rates = " ".join(f"{row['sentences_per_second'][str(b)]:8.1f}" for b in batch_sizes)
        mean = row["cosine_to_float32_mean"]
        low = row["cosine_to_float32_min"]
        quality = f"{mean:9.5f} {low:8.5f}" if mean is not None else f"{'-':>9} {'-':>8}"
        print(
            f"{row['model'][-28:]:<28} {row['precision']:>9} {row['dimension']:>4} {row['load_seconds']:7.2f} {rates} {quality}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for row in rows:
            ax.plot(
                batch_sizes,
                [row["sentences_per_second"][str(b)] for b in batch_sizes],
                marker="o",
                label=f"{Path(row['model']).name} {row['precision']}",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("sentences / s")
        ax.set_title(f"Encoding speed, {len(texts)} texts")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
