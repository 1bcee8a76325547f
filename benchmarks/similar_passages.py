"""More like this, for split documents: compare by the first passage, the mean of the passages, or the best pair?

    .venv/bin/python benchmarks/similar_passages.py --data ../shared/data/scifact [--distractors 1000] [--chunk 256] [--json]

A proxy with ground truth: SciFact train queries with two or more relevant abstracts. For each
such abstract, the other abstracts relevant to the same query should be among its most similar
ones. Each abstract is split as a collection with ``--chunk`` splits it
(:func:`semsim_pg.chunking.split_many`); the ways of comparing two documents are then ranked by
brute force (exact cosine, no index, so only the comparison differs):

- whole text: one vector of the unsplit text (what the model reads of it, as an unsplit collection);
- first passage: the source document's first passage against every passage, each document by
  its best (what ``similar()`` and ``similar_to()`` do today);
- mean of passages: the mean of the source's passage vectors against every passage, best per
  document (one search, as today, with another query vector);
- best pair: the best similarity of any source passage with any passage of the other document
  (one search per source passage).

Reports recall@10 of the co-relevant abstracts and the mean reciprocal rank of the first one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from semsim_pg.backends import cpu_info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument(
        "--distractors", type=int, default=1000, help="abstracts relevant to none of the pairs' queries"
    )
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from semsim_pg import get_encoder
    from semsim_pg.chunking import split_many
    from semsim_pg.evaluation.retrieval import read_qrels

    qrels = read_qrels(args.data / "qrels/train.tsv")
    groups = [sorted(docs) for docs in qrels.values() if len(docs) >= 2]
    wanted = {doc for docs in groups for doc in docs}
    records = [json.loads(line) for line in (args.data / "corpus.jsonl").read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(records)
    every_relevant = {doc for docs in qrels.values() for doc in docs}
    keep = [r for r in records if str(r["_id"]) in wanted]
    keep += [r for r in records if str(r["_id"]) not in every_relevant][: args.distractors]
    ids = [str(r["_id"]) for r in keep]
    texts = [f"{r.get('title') or ''}\n{r['text']}" for r in keep]

    encoder = get_encoder()
    whole = _normalised(encoder.encode(texts, show_progress_bar=False))
    split = split_many(texts, encoder, args.chunk)
    owner = np.array([i for i, passages in enumerate(split) for _ in passages])
    passages = _normalised(encoder.encode([p.text for ps in split for p in ps], show_progress_bar=False))
    first_of = {i: int(np.flatnonzero(owner == i)[0]) for i in range(len(keep))}

    def best_per_document(scores: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        best = np.full(len(keep), -np.inf)
        np.maximum.at(best, owner, scores)
        return best

    def ranking(i: int, method: str) -> list[int]:
        if method == "whole text":
            scores = whole @ whole[i]
        elif method == "first passage":
            scores = best_per_document(passages @ passages[first_of[i]])
        elif method == "mean of passages":
            scores = best_per_document(passages @ _normalised(passages[owner == i].mean(axis=0, keepdims=True))[0])
        else:  # best pair
            scores = best_per_document((passages @ passages[owner == i].T).max(axis=1))
        scores[i] = -np.inf  # itself excluded
        return [int(j) for j in np.argsort(-scores, kind="stable")[:100]]

    index = {doc: i for i, doc in enumerate(ids)}
    methods = ["whole text", "first passage", "mean of passages", "best pair"]
    figures: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in methods}
    split_sources = 0
    for docs in groups:
        for doc in docs:
            i = index[doc]
            others = {index[d] for d in docs if d != doc}
            split_sources += len(split[i]) > 1
            for method in methods:
                ranked = ranking(i, method)
                figures[method]["recall@10"].append(len(others & set(ranked[:10])) / len(others))
                rank = next((r for r, j in enumerate(ranked, 1) if j in others), None)
                figures[method]["mrr"].append(0.0 if rank is None else 1.0 / rank)
    result = {
        "sources": sum(len(g) for g in groups),
        "split_sources": split_sources,
        "documents": len(keep),
        "passages": len(passages),
        "chunk": args.chunk,
        "cpu": cpu_info().model,
        "load_average": os.getloadavg()[0],
        "methods": {m: {k: statistics.fmean(v) for k, v in f.items()} for m, f in figures.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['sources']} source abstracts ({split_sources} split) in {len(keep)} documents, "
        f"{len(passages)} passages of <= {args.chunk} tokens"
    )
    print(f"{'compare by':20} {'recall@10':>10} {'MRR':>8}")
    for method, values in result["methods"].items():
        print(f"{method:20} {values['recall@10']:10.4f} {values['mrr']:8.4f}")
    return 0


def _normalised(vectors: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(vectors, dtype=np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


if __name__ == "__main__":
    from _entry import run

    run(main)
