"""``semsim bench``: quick performance figures from the command line (longer studies live in benchmarks/)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from semsim_pg.validation import visible

if TYPE_CHECKING:
    from semsim_pg.bench import EncoderBenchmark

__all__ = ["format_encoder_table", "plot_encoder_benchmark", "register"]


def _backends(value: str) -> list[str]:
    from semsim_pg.settings import BACKENDS

    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated backends from {', '.join(BACKENDS)}; got {value!r}")
    return names


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim bench`` and its ``encoders`` subcommand."""
    parser = subparsers.add_parser("bench", help="benchmarks: encoder speed", description="Performance figures.")
    benches = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    sub = benches.add_parser(
        "encoders",
        help="compare models and backends against plain sentence-transformers fp32, side by side",
        description="Encode the same texts with the plain sentence-transformers fp32 path and with each backend, "
        "in interleaved rounds: sentences/s and its ratio, one short query's latency, cosine to the reference, "
        "and Spearman on STS pairs (--sts). On a shared machine, compare rows of one run.",
    )
    sub.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M",
        help="model name or directory; repeat to compare (default: the configured model)",
    )
    sub.add_argument(
        "--backends",
        type=_backends,
        default=["torch", "onnx", "onnx-int8", "auto"],
        metavar="B,B",
        help="backends to compare (default torch,onnx,onnx-int8,auto)",
    )
    sub.add_argument(
        "--file",
        default=None,
        metavar="F",
        help="texts to encode: .txt (one a line), .jsonl, .csv or .tsv (default: the bundled sample corpus)",
    )
    sub.add_argument("--limit", type=int, default=1000, metavar="N", help="encode the first N texts (default 1000)")
    sub.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch size (default 64)")
    sub.add_argument(
        "--rounds", type=int, default=3, metavar="R", help="interleaved rounds; the best counts (default 3)"
    )
    sub.add_argument(
        "--sts", default=None, metavar="CSV", help="STS pairs (sentence1, sentence2, score), e.g. STS-B dev"
    )
    sub.add_argument("--json", action="store_true", help="print the figures as JSON")
    sub.add_argument("--plot", type=Path, default=None, metavar="PNG", help="draw speed ratio and cosine to a PNG")
    sub.set_defaults(func=_run_encoders)
    # Here rather than among the core commands: warming up is about speed, like the benchmarks.
    warm = subparsers.add_parser(
        "warmup",
        help="load the model and its backend and encode once (run before serving; auto measures here once)",
        description="Load the configured model with its backend (exporting it or choosing one if needed) and "
        "encode one text, so that the first request does not pay for it.",
    )
    warm.add_argument(
        "--model", default=None, metavar="M", help="model name or directory (default: the configured one)"
    )
    warm.add_argument(
        "--collections",
        nargs="*",
        default=None,
        metavar="NAME",
        help="also read these collections' HNSW indexes into PostgreSQL's memory (no name: every collection); "
        "once after each database restart",
    )
    warm.add_argument("--json", action="store_true", help="print what was loaded as JSON")
    warm.set_defaults(func=_run_warmup)


def _run_warmup(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from semsim_pg.encoder import get_encoder

    start = time.perf_counter()
    encoder = get_encoder(args.model)
    encoder.encode(["warm up"], show_progress_bar=False)
    info = encoder.describe() | {"warmup_seconds": round(time.perf_counter() - start, 3)}
    warmed = _warm_indexes(args.collections) if args.collections is not None else None
    if args.json:
        if warmed is not None:
            info["indexes"] = [dataclasses.asdict(w) | {"fits": w.fits} for w in warmed]
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    sys.stdout.write(
        f"{info['name']} ready in {info['warmup_seconds']:.1f} s: backend {info['backend']}"
        + (f" ({info['backend_choice']})" if info["backend_choice"] else "")
        + "\n"
    )
    for w in warmed or []:
        read = f"{w.visited:,} of {w.vectors:,} vectors" if w.visited is not None else f"{w.vectors:,} vectors"
        room = "" if w.fits else f"; larger than shared_buffers ({w.shared_buffers_bytes >> 20} MB), partly kept"
        sys.stdout.write(
            f"index of {visible(w.collection)} ({w.index_bytes >> 20} MB, {read}) in memory in {w.seconds:.1f} s "
            f"by {w.method}{room}\n"
        )
    return 0


def _warm_indexes(names: list[str]) -> list[Any]:
    """Each named collection's index warmed (every collection's with a valid index when no
    name is given: a named one without an index is an error)."""
    from semsim_pg.store import DocumentStore

    store = DocumentStore()
    if names:
        return [store.warm_index(name) for name in names]
    warmed = []
    for coll in store.list_collections():
        if coll.index != "valid":
            sys.stderr.write(
                f"skipped {visible(coll.name)}: its index is {coll.index} (semsim index rebuild {visible(coll.name)})\n"
            )
            continue
        warmed.append(store.warm_index(coll))
    return warmed


def _run_encoders(args: argparse.Namespace) -> int:
    from semsim_pg.bench import benchmark_backends, load_texts, machine_info
    from semsim_pg.fsutil import check_output_path
    from semsim_pg.settings import get_settings

    if args.plot:  # before the benchmark, not after it
        check_output_path(args.plot, "--plot")
    texts = load_texts(args.file, args.limit)
    pairs = None
    if args.sts:
        from semsim_pg.evaluation.files import read_sts_pairs

        pairs = read_sts_pairs(args.sts)
    results: list[EncoderBenchmark] = []
    for model in args.model or [get_settings().model]:
        results += benchmark_backends(
            model,
            args.backends,
            texts,
            batch_size=args.batch_size,
            rounds=args.rounds,
            sts_pairs=pairs,
            progress=False if args.quiet else None,
        )
    machine = machine_info()
    if args.plot:
        plot_encoder_benchmark(results, args.plot)
    if args.json:
        json.dump({"machine": machine, "rows": [r.to_dict() for r in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        format_encoder_table(results, sys.stdout, machine=machine)
    return 0


def format_encoder_table(
    results: list[EncoderBenchmark], out: TextIO, *, machine: dict[str, Any] | None = None
) -> None:
    """The rows as a table, under the machine they were measured on (``bench.machine_info()``)."""
    from semsim_pg.bench import describe_machine

    first = results[0]
    width = max(20, *(len(r.model) for r in results))
    sts = any(r.sts_spearman is not None for r in results)
    if machine is not None:
        out.write(describe_machine(machine) + "\n")
    out.write(
        f"{first.texts} texts, batch {first.batch_size}, best of {len(first.rounds)} interleaved rounds; "
        "ratios against plain sentence-transformers fp32\n"
    )
    out.write(
        f"{'model':<{width}} {'backend':<22} {'load s':>7} {'sent/s':>8} {'speed':>6} {'query ms':>8} "
        f"{'query':>6} {'cos mean':>8} {'cos min':>8}" + (f" {'STS rho':>7}" if sts else "") + "\n"
    )
    for r in results:
        backend = r.backend if r.requested == r.backend else f"{r.requested} -> {r.backend}"
        line = (
            f"{r.model:<{width}} {backend:<22} {r.load_seconds:7.2f} {r.sentences_per_second:8.1f} "
            f"{r.speedup:5.2f}x {r.query_ms:8.2f} {r.query_speedup:5.2f}x {r.mean_cosine:8.4f} {r.min_cosine:8.4f}"
        )
        if sts:
            line += f" {r.sts_spearman:7.2f}" if r.sts_spearman is not None else f" {'-':>7}"
        out.write(line + "\n")


def plot_encoder_benchmark(results: list[EncoderBenchmark], path: Path) -> None:
    """Two panels: speed ratio (throughput and one query) and cosine to the reference, per row."""
    from semsim_pg.errors import InvalidInput

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInput("--plot needs matplotlib: pip install 'semsim[eval]'.") from None
    labels = [f"{Path(r.model).name}\n{r.backend}" for r in results]
    positions = list(range(len(results)))
    fig, (speed, quality) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results)), 4))
    speed.bar([p - 0.2 for p in positions], [r.speedup for r in results], width=0.4, label="throughput")
    speed.bar([p + 0.2 for p in positions], [r.query_speedup for r in results], width=0.4, label="one query")
    speed.axhline(1.0, color="grey", linewidth=0.8)
    speed.set_ylabel("x sentence-transformers fp32")
    speed.legend()
    quality.bar([p - 0.2 for p in positions], [r.mean_cosine for r in results], width=0.4, label="mean")
    quality.bar([p + 0.2 for p in positions], [r.min_cosine for r in results], width=0.4, label="lowest")
    quality.set_ylim(min(0.9, *(r.min_cosine for r in results)) - 0.01, 1.001)
    quality.set_ylabel("cosine to the fp32 vectors")
    quality.legend()
    for ax in (speed, quality):
        ax.set_xticks(positions, labels, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Encoders, {results[0].texts} texts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
