"""``semsim bench``: quick performance figures from the command line (longer studies live in benchmarks/)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from semsim_pg.bench import EncoderBenchmark

__all__ = ["format_encoder_table", "register"]


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 16,64,128; got {value!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers; got {value!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim bench`` and its ``encoders`` subcommand."""
    parser = subparsers.add_parser("bench", help="benchmarks: encoder speed", description="Performance figures.")
    benches = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    sub = benches.add_parser(
        "encoders",
        help="compare models: dimension, load time, sentences/s at several batch sizes",
        description="Load each model and encode the same texts at several batch sizes. On a shared machine, "
        "compare models within one run.",
    )
    sub.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M",
        help="model name or directory; repeat to compare (default: the configured model)",
    )
    sub.add_argument(
        "--file",
        default=None,
        metavar="F",
        help="texts to encode: .txt (one a line), .jsonl, .csv or .tsv (default: the bundled sample corpus)",
    )
    sub.add_argument("--batch-sizes", type=_batch_sizes, default=[16, 64, 128], metavar="16,64,128")
    sub.add_argument("--limit", type=int, default=1000, metavar="N", help="encode the first N texts (default 1000)")
    sub.add_argument("--repeats", type=int, default=1, metavar="R", help="best of R passes per batch size")
    sub.add_argument("--json", action="store_true", help="print the figures as JSON")
    sub.set_defaults(func=_run_encoders)


def _run_encoders(args: argparse.Namespace) -> int:
    from semsim_pg.bench import benchmark_encoders, load_texts
    from semsim_pg.settings import get_settings

    texts = load_texts(args.file, args.limit)
    models = args.model or [get_settings().model]
    results = benchmark_encoders(models, texts, args.batch_sizes, repeats=args.repeats, progress=not args.quiet)
    if args.json:
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        format_encoder_table(results, sys.stdout)
    return 0


def format_encoder_table(results: list[EncoderBenchmark], out: TextIO) -> None:
    batch_sizes = sorted({b for r in results for b in r.sentences_per_second})
    width = max(20, *(len(r.model) for r in results))
    rates = " ".join(f"{'b=' + str(b):>9}" for b in batch_sizes)
    out.write(f"{results[0].texts} texts; sentences per second at each batch size (best of the repeats)\n")
    out.write(f"{'model':<{width}} {'dim':>5} {'max tok':>7} {'precision':>9} {'load s':>7} {rates}\n")
    for r in results:
        cells = " ".join(
            f"{r.sentences_per_second[b]:9.1f}" if b in r.sentences_per_second else f"{'-':>9}" for b in batch_sizes
        )
        out.write(
            f"{r.model:<{width}} {r.dimension:>5} {r.max_seq_length:>7} {r.precision:>9} {r.load_seconds:7.2f} {cells}\n"
        )
