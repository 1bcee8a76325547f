"""Fine-tuning from a collection: training data from labels and qrels, hard negatives from the
collection's own index with the false-negative guard, the refusal to save a model that is not
better, the record saved next to a model, bad input, and the rerank="auto" decision.

Real PostgreSQL and the real all-MiniLM-L6-v2 (the collections' model, which mining searches);
the models trained are tiny (a 2-layer BERT) and run a few steps: these check the machinery,
benchmarks/finetune_*.py measure quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("datasets", reason="fine-tuning needs the datasets package (sentence-transformers' trainers)")
pytest.importorskip("accelerate", reason="fine-tuning needs the accelerate package (sentence-transformers' trainers)")

from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError, InvalidInput, ModelLoadError, NotImproved
from semsim_pg.finetune import (
    RECORD_NAME,
    BiEncoderOptions,
    LabelledText,
    RerankerOptions,
    TrainingRecord,
    decide_rerank,
    finetune_collection_bi_encoder,
    finetune_collection_reranker,
    read_record,
    task_from_labels,
)
from semsim_pg.finetune.mining import Candidates, guarded_negatives, label_negatives
from tests.finetune_data import TOPICS


def labelled_docs() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"{label}-{i}", text, {"category": label}) for label, texts in TOPICS.items() for i, text in enumerate(texts)
    ]


@pytest.fixture()
def intents(store: Any, collection_name: str) -> str:
    store.create_collection(collection_name)
    store.upsert(collection_name, labelled_docs(), progress=False)
    return collection_name


def test_label_groups_split_and_refusals() -> None:
    items = [LabelledText(doc_id, text, meta["category"]) for doc_id, text, meta in labelled_docs()]
    task = task_from_labels(items, dev_fraction=0.34, seed=3)
    # two of each six held out, the same ones for the same seed, never in the corpus
    assert len(task.dev_queries) == 8 and not set(task.dev_queries) & set(task.corpus)
    assert task.excluded == set(task.dev_queries)
    assert task_from_labels(items, dev_fraction=0.34, seed=3).dev_queries == task.dev_queries
    assert task_from_labels(items, dev_fraction=0.34, seed=4).dev_queries != task.dev_queries
    # a training text's relevant documents: the others with its label; a dev text's: all training ones
    for query_id, relevant in task.train_qrels.items():
        label = task.labels[query_id]
        assert query_id not in relevant
        assert relevant == {d for d, lab in task.labels.items() if lab == label} - {query_id}
    assert task.metric == "accuracy@1"
    assert all(len(relevant) == 4 for relevant in task.dev_qrels.values())

    with pytest.raises(InvalidInput, match=r"single document.*'lonely'"):
        task_from_labels([*items, LabelledText("x", "all alone", "lonely")])
    with pytest.raises(InvalidInput, match="at least two labels"):
        task_from_labels([i for i in items if i.label == "card"])
    # an FAQ entry without alternative phrasings stays an answer to find
    faq = task_from_labels([*items, LabelledText("x", "all alone", "lonely")], singletons="keep", dev_fraction=0.34)
    assert "x" in faq.corpus and "x" not in faq.train_qrels


@pytest.mark.slow
def test_mining_searches_the_index_and_guards_false_negatives(store: Any, intents: str) -> None:
    from semsim_pg.finetune.data import labelled_texts, read_collection
    from semsim_pg.finetune.mining import store_searcher, task_candidates

    texts = read_collection(store, intents, label_field="category")
    assert len(texts.ids) == 24 and texts.vectors.shape == (24, 384)
    task = task_from_labels(labelled_texts(texts, "category"), dev_fraction=0.34, seed=0)
    search, encode = store_searcher(store, intents)
    found = task_candidates(search, encode, texts, task, k=5, progress=False)
    for query_id, negatives in found.negatives.items():
        ids = [doc for doc, _ in negatives]
        assert ids and len(ids) <= 5
        # never the query itself, a document of its label, or a held-out dev text
        assert query_id not in ids
        assert not set(ids) & task.train_qrels[query_id]
        assert not set(ids) & task.excluded
        # nearest first, as the index returned them
        cosines = [c for _, c in negatives]
        assert cosines == sorted(cosines, reverse=True)

    # "before" from the stored vectors (the base is the collection's model) is what encoding gives
    from semsim_pg.finetune.bi_encoder import _before
    from semsim_pg.finetune.common import load_bi_encoder
    from semsim_pg.finetune.evaluators import RetrievalEvaluator

    evaluator = RetrievalEvaluator(task.dev_queries, task.corpus, task.dev_qrels, primary="accuracy@1")
    model = load_bi_encoder("all-MiniLM-L6-v2")
    assert _before(evaluator, model, "all-MiniLM-L6-v2", texts) == pytest.approx(evaluator(model), abs=1e-3)

    # the guard: candidates whose cosine reaches ratio x the positive's are skipped
    candidates = Candidates(
        negatives={"q": [("near", 0.90), ("close", 0.70), ("far", 0.30)]}, positives={"q": {"p": 0.80}}
    )
    assert guarded_negatives(candidates, "q", "p", ratio=0.95) == ["close"]
    assert guarded_negatives(candidates, "q", "p", ratio=0.95, count=5) == ["close", "far"]
    assert guarded_negatives(candidates, "q", "p", ratio=0.5) == ["far"]
    assert guarded_negatives(candidates, "q", "p", ratio=0.3) == []


def test_label_groups_keep_the_nearest_candidate_of_another_label() -> None:
    from semsim_pg.finetune.bi_encoder import build_triples

    items = [LabelledText(doc_id, text, meta["category"]) for doc_id, text, meta in labelled_docs()]
    task = task_from_labels(items, dev_fraction=0.34, seed=3)
    anchor = next(iter(task.train_queries))
    label = task.labels[anchor]
    # one training document of each other label
    others = list({lab: d for d, lab in sorted(task.labels.items(), reverse=True) if lab != label}.values())
    # an anchor whose nearest other-label documents score above its positives: the confusions
    # 1-NN gets wrong, true negatives since every document is labelled
    candidates = Candidates(
        negatives={anchor: [(others[0], 0.92), (others[1], 0.85), (others[2], 0.40)]},
        positives={anchor: {d: 0.50 for d in task.train_qrels[anchor]} | {min(task.train_qrels[anchor]): 0.90}},
    )
    assert label_negatives(candidates, anchor, task.labels, label) == [others[0]]
    assert label_negatives(candidates, anchor, task.labels, label, count=5) == others[:3]
    # with a ratio: below that share of the nearest same-label document (0.90), not a random one
    assert label_negatives(candidates, anchor, task.labels, label, ratio=0.95) == [others[1]]
    # a candidate with the anchor's own label is never a negative
    assert label_negatives(candidates, anchor, task.labels, task.labels[others[0]]) == [others[1]]
    # the score guard relative to a random positive (0.50) would have passed over all three
    assert guarded_negatives(candidates, anchor, max(task.train_qrels[anchor]), ratio=0.95) == [others[2]]
    columns, keys, stats = build_triples(task, candidates, ratio=None, seed=0)
    row = columns["anchor"].index(task.corpus[anchor])
    assert columns["negative"][row] == task.corpus[others[0]]
    assert stats["hard_negatives"] == 1 and stats["random_negatives"] == stats["rows"] - 1
    assert keys[row] == {f"label:{label}", f"label:{task.labels[others[0]]}"}


def test_small_data_trains_enough_steps_and_keeps_a_dev_part() -> None:
    from semsim_pg.finetune.common import MIN_STEPS, schedule

    # BANKING77-sized: one epoch; a small FAQ (40 rows): more epochs, up to the minimum of steps
    assert schedule(None, 7654, 32, None, 1) == (1.0, 240, 240)
    epochs, total, eval_steps = schedule(None, 40, 32, None, 1)
    assert total >= MIN_STEPS and epochs == MIN_STEPS / 2 and eval_steps == 2  # one dev evaluation an epoch
    assert schedule(3, 40, 32, None, 1)[:2] == (3, 6)  # --epochs is obeyed
    assert schedule(None, 40, 32, 5, 1)[1] == 5  # and --max-steps
    # options no run could use are refused when they are given, before any model loads
    from semsim_pg.finetune import BiEncoderOptions, RerankerOptions

    with pytest.raises(InvalidInput, match="--epochs must be above 0"):
        BiEncoderOptions(epochs=0)
    with pytest.raises(InvalidInput, match="--epochs must be above 0"):
        RerankerOptions(epochs=float("nan"))
    with pytest.raises(InvalidInput, match="--batch-size must be at least 1, got 0"):
        BiEncoderOptions(batch_size=0)
    for rate in (-1e-5, 1.0, 2.0, float("inf"), float("nan")):
        with pytest.raises(InvalidInput, match="--learning-rate must be a number from 0 to below 1"):
            RerankerOptions(learning_rate=rate)
    with pytest.raises(InvalidInput, match="--max-steps must be at least 1, got -3"):
        BiEncoderOptions(max_steps=-3)
    assert BiEncoderOptions(learning_rate=1e-4, max_steps=5).learning_rate == 1e-4
    # an FAQ entry with three phrasings gives one to dev (a tenth of three would round to none)
    items = [LabelledText(f"{e}-{i}", f"phrasing {i} of {e}", e) for e in "abcd" for i in range(3)]
    task = task_from_labels(items, kind="faq")
    assert len(task.dev_queries) == 4 and all(len(r) == 2 for r in task.dev_qrels.values())


def test_threads_follow_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from semsim_pg.backends.cpu import free_cores
    from semsim_pg.finetune import common

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, own, expected in [(0.2, 0, 2), (0.6, 0, 1), (7.0, 1, 1), (2.1, 2, 2), (3.0, 2, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert free_cores(own=own) == (expected, 2), (load, own)
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
        assert common.use_all_cores() == 1 and torch.get_num_threads() == 1
        assert common.adaptive_threads(None) is not None
        assert common.use_all_cores(2) == 2 and common.adaptive_threads(2) is None  # fixed: no adapting
        with pytest.raises(InvalidInput, match="at least 1"):
            common.use_all_cores(0)
    finally:
        torch.set_num_threads(before)


def test_disjoint_keys_batches() -> None:
    from datasets import Dataset

    from semsim_pg.finetune.sampler import DisjointKeysBatchSampler

    labels = ["a", "a", "b", "b", "c", "c", "d", "d"]
    keys = [frozenset({f"label:{label}"}) for label in labels]
    sampler = DisjointKeysBatchSampler(Dataset.from_dict({"x": labels}), 4, False, keys=keys)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(8))
    for batch in batches:
        assert len({labels[i] for i in batch}) == len(batch)  # no label twice in a batch


@pytest.mark.slow
def test_bi_encoder_from_labels_saves_a_better_model_with_its_record(
    store: Any, intents: str, tiny_bi_encoder_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from semsim_pg.encoder import Encoder

    out = tmp_path / "models" / "intents-v1"
    argv = ["-q", "finetune", "bi-encoder", "-c", intents, "--label-field", "category", "--out", str(out)]
    argv += ["--base", str(tiny_bi_encoder_path), "--epochs", "10", "--batch-size", "4", "--learning-rate", "5e-3"]
    argv += ["--dev-fraction", "0.34", "--threads", "1", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "Computing widget examples" not in captured.err and "it/s]" not in captured.err  # -q: no bar at all
    assert result["kind"] == "bi-encoder" and result["collection"] == intents
    assert result["metric"] == "accuracy@1" and result["after"]["accuracy@1"] > result["before"]["accuracy@1"]
    assert result["data"]["dev_queries"] == 8 and result["data"]["labels"] == 4
    assert result["data"]["mining"]["rows"] == 16 and result["data"]["mining"]["hard_negatives"] > 0
    assert result["hyperparameters"]["batch_size"] == 4 and result["base"] == str(tiny_bi_encoder_path)
    record = read_record(out)
    assert record is not None and record.gain == pytest.approx(result["gain"], abs=1e-3)
    assert not (out / "checkpoints").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert Encoder(str(out)).encode(["my card was declined"]).shape == (1, 32)


@pytest.mark.slow
def test_a_model_that_is_not_better_is_not_saved(
    store: Any, intents: str, tiny_bi_encoder_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "same"
    # a learning rate of 0 leaves the weights as they were: the dev metric cannot rise
    options = BiEncoderOptions(max_steps=2, batch_size=4, learning_rate=0.0, threads=1)
    with pytest.raises(NotImproved, match="not better on the dev part"):
        finetune_collection_bi_encoder(
            store, intents, out, label_field="category", base=str(tiny_bi_encoder_path), options=options, progress=False
        )
    assert not out.exists() and not list(tmp_path.iterdir())


def write_beir(folder: Path, *, unknown_doc: bool = False, unknown_query: bool = False) -> tuple[Path, Path]:
    queries = {f"q{label}{i}": text for label, texts in TOPICS.items() for i, text in enumerate(texts[:3])}
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8"
    )
    lines = ["query-id\tcorpus-id\tscore"]
    for label in TOPICS:
        for i in range(3):
            lines.append(f"q{label}{i}\t{label}-{i + 3}\t1")
    if unknown_doc:
        lines.append("qcard0\tno-such-doc\t1")
    if unknown_query:
        lines.append("no-such-query\tcard-3\t1")
    (folder / "qrels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "queries.jsonl", folder / "qrels.tsv"


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(
    store: Any,
    intents: str,
    tiny_bi_encoder_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    base = ["-q", "finetune", "bi-encoder", "-c", intents, "--out", str(out), "--base", str(tiny_bi_encoder_path)]

    def fails(*extra: str, match: str) -> None:
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("semsim: error:"), err
        assert match in err, err
        assert not out.exists()

    store.upsert(intents, [("lonely", "A single text of its own kind", {"category": "lonely"})], progress=False)
    fails("--label-field", "category", match="single document (first: 'lonely'")
    store.delete(intents, ["lonely"])
    fails("--label-field", "nothing", match="has the metadata field 'nothing'")
    queries, qrels = write_beir(tmp_path, unknown_doc=True)
    fails("--queries", str(queries), "--qrels", str(qrels), match="'no-such-doc' is not in the corpus")
    queries, qrels = write_beir(tmp_path, unknown_query=True)
    fails("--queries", str(queries), "--qrels", str(qrels), match="'no-such-query' is not in the queries file")
    fails("--label-field", "category", "--queries", str(queries), match="one of the two")
    # an --out that cannot be written is found before a model loads (it failed with mkdir's traceback)
    unwritable = [*base[:6], "/proc/semsim-no/model", *base[7:], "--label-field", "category"]
    assert main(unwritable) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("semsim: error: --out /proc/semsim-no: cannot write in /proc"), err
    fails("--label-field", "category", "--base", "no-such-org/no-such-model", match="Cannot load the base model")
    one = f"{intents}-one"
    store.create_collection(one)
    store.upsert(one, [d for d in labelled_docs() if d[2]["category"] == "card"], progress=False)
    assert main([*base[:4], one, *base[5:], "--label-field", "category"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at least two labels to tell apart, found only 'card'" in err, err
    assert not out.exists()
    store.drop_collection(one)
    (tmp_path / "valid").mkdir()
    valid_queries, valid_qrels = write_beir(tmp_path / "valid")
    rerank = ["-q", "finetune", "reranker", "-c", intents, "--out", str(out), "--queries", str(valid_queries)]
    assert main([*rerank, "--qrels", str(valid_qrels), "--base", "no-such-org/no-such-model"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Cannot load 'no-such-org/no-such-model' as a cross-encoder" in err, err
    assert not out.exists()
    out.mkdir()
    (out / "model.txt").write_text("an older model", encoding="utf-8")
    assert main([*rerank, "--qrels", str(valid_qrels), "--base", str(tiny_bi_encoder_path)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    shutil.rmtree(out)
    out.mkdir()
    (out / "model.txt").write_text("an older model", encoding="utf-8")
    assert main([*base, "--label-field", "category"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "model.txt").read_text(encoding="utf-8") == "an older model"
    shutil.rmtree(out)
    with pytest.raises(ModelLoadError, match="Cannot load the base model 'no-such-org/no-such-model'"):
        finetune_collection_bi_encoder(
            store, intents, out, label_field="category", base="no-such-org/no-such-model", progress=False
        )
    assert not out.exists()
    with pytest.raises(InputFileError):
        finetune_collection_reranker(
            store, intents, out, queries=queries, qrels=qrels, base=str(tiny_bi_encoder_path), progress=False
        )
    assert not out.exists()


@pytest.mark.slow
def test_reranker_never_saved_below_the_candidates(
    store: Any, intents: str, tiny_cross_encoder_path: Path, tmp_path: Path
) -> None:
    from semsim_pg.finetune.reranker import build_pairs

    queries, qrels = write_beir(tmp_path)
    out = tmp_path / "ce"
    # an untrained random head reorders the (near perfect) first stage worse: refused, nothing written
    options = RerankerOptions(max_steps=1, batch_size=8, learning_rate=0.0, candidates=10, threads=1)
    with pytest.raises(NotImproved, match="does not beat the first stage"):
        finetune_collection_reranker(
            store,
            intents,
            out,
            queries=queries,
            qrels=qrels,
            base=str(tiny_cross_encoder_path),
            dev_fraction=0.34,
            options=options,
            progress=False,
        )
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".ce")]

    # its training pairs: each relevant document (1) and mined negatives that are not relevant (0)
    from semsim_pg.finetune.data import read_collection, task_from_qrels
    from semsim_pg.finetune.mining import store_searcher, task_candidates

    texts = read_collection(store, intents)
    task = task_from_qrels(texts, queries, qrels, dev_fraction=0.34)
    search, encode = store_searcher(store, intents)
    columns, stats = build_pairs(
        task, task_candidates(search, encode, texts, task, k=10, progress=False), negatives=2, ratio=0.95
    )
    assert stats["positives"] == len(task.train_queries) and 0 < stats["negatives"] <= 2 * len(task.train_queries)
    by_text = {text: doc for doc, text in task.corpus.items()}
    for query, document, label in zip(columns["query"], columns["document"], columns["label"], strict=True):
        query_id = next(q for q, t in task.train_queries.items() if t == query)
        assert (by_text[str(document)] in task.train_qrels[query_id]) == (label == 1.0)


def test_the_rerank_weight_is_chosen_on_dev(tiny_cross_encoder_path: Path) -> None:
    """The dev metric at the best blend of the reranker's and the first stage's scores, 0 (the
    candidates' own order) among the weights: a reranker that only hurts gets weight 0."""
    from sentence_transformers import CrossEncoder

    from semsim_pg.finetune.evaluators import RerankEvaluator

    model = CrossEncoder(str(tiny_cross_encoder_path))
    query = "how do I get my money back"
    corpus = {f"d{i}": text for i, text in enumerate(TOPICS["card"] + TOPICS["transfer"])}
    scores = dict(zip(corpus, model.predict([(query, text) for text in corpus.values()]), strict=True))
    favourite, least = max(scores, key=scores.__getitem__), min(scores, key=scores.__getitem__)
    falling = [0.9 - i / 100 for i in range(len(corpus))]

    # the reranker's favourite is the relevant one, last of the candidates: a weight above 0 finds it
    last = [d for d in corpus if d != favourite] + [favourite]
    found = RerankEvaluator({"q": query}, {"q": last}, corpus, {"q": {favourite}}, similarities={"q": falling})
    assert found.first_stage()["ndcg@10"] < 100
    metrics = found(model)
    assert 0 < metrics["dev_weight"] <= 1 and metrics["dev_ndcg@10"] == 100 and metrics["dev_alone_ndcg@10"] == 100
    # the smallest weight that does it: the one below it leaves the favourite lower
    below = round(metrics["dev_weight"] - 0.05, 2)
    blocks = [np.asarray([scores[d] for d in last])]
    assert found.at_weight(blocks, below)["ndcg@10"] < 100

    # the reranker's least liked is the relevant one, first: weight 0, the first stage's order
    first = [least] + [d for d in corpus if d != least]
    kept = RerankEvaluator({"q": query}, {"q": first}, corpus, {"q": {least}}, similarities={"q": falling})
    metrics = kept(model)
    assert metrics["dev_weight"] == 0 and metrics["dev_ndcg@10"] == 100 and metrics["dev_alone_ndcg@10"] < 100


def save_reranker(folder: Path, source: Path, **record: Any) -> Path:
    shutil.copytree(source, folder)
    data = {"kind": "reranker", "base": "all-MiniLM-L6-v2", "metric": "ndcg@10", "data": {"dev_queries": 20}}
    (folder / RECORD_NAME).write_text(json.dumps({**data, **record}), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_rerank_auto_uses_only_a_reranker_that_helped_this_collection(
    store: Any, intents: str, tiny_cross_encoder_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from semsim_pg.settings import configure, get_settings

    helped = save_reranker(
        tmp_path / "helped",
        tiny_cross_encoder_path,
        collection=intents,
        before={"ndcg@10": 60.0},
        after={"ndcg@10": 64.5},
    )
    decision = decide_rerank(intents, str(helped))
    assert decision.use and decision.model == str(helped.resolve()) and "60.00 -> 64.50" in decision.reason
    other = decide_rerank("another-collection", str(helped))
    assert not other.use and "measured on collection" in other.reason
    worse = save_reranker(
        tmp_path / "worse", tiny_cross_encoder_path, collection=intents, before={"ndcg@10": 60.0}, after={"ndcg@10": 59}
    )
    assert not decide_rerank(intents, str(worse)).use and "did not help" in decide_rerank(intents, str(worse)).reason
    assert "no semsim-finetune.json" in decide_rerank(intents, str(tiny_cross_encoder_path)).reason
    assert "not a local model directory" in decide_rerank(intents, "cross-encoder/ms-marco-MiniLM-L-6-v2").reason
    record = TrainingRecord.from_dict(json.loads((helped / RECORD_NAME).read_text(encoding="utf-8")))
    assert record.gain == pytest.approx(4.5)

    previous = get_settings()
    try:
        # the default cross-encoder (a hub name, not available offline): rerank off, said in one line, hits still come
        assert (
            main(["-q", "search", "my card was declined", "-c", intents, "-k", "3", "--rerank", "auto", "--json"]) == 0
        )
        captured = capsys.readouterr()
        assert "rerank off" in captured.err and captured.err.count("\n") == 1
        hits = json.loads(captured.out)["hits"]
        assert len(hits) == 3 and "rerank_score" not in hits[0]
        configure(dataclasses.replace(previous, cross_encoder=str(helped)))
        assert (
            main(["-q", "search", "my card was declined", "-c", intents, "-k", "3", "--rerank", "auto", "--json"]) == 0
        )
        captured = capsys.readouterr()
        assert "rerank on" in captured.err
        assert len(json.loads(captured.out)["hits"]) == 3 and "rerank_score" in json.loads(captured.out)["hits"][0]
        # the API: reranker="auto"
        from semsim_pg.rerank import search_and_rerank

        reranked = search_and_rerank(store, intents, "my card was declined", top_k=3, reranker="auto")
        assert len(reranked) == 3 and {r.original_rank for r in reranked} <= set(range(50))
        configure(dataclasses.replace(previous, cross_encoder=str(worse)))
        plain = search_and_rerank(store, intents, "my card was declined", top_k=3, reranker="auto")
        assert [r.original_rank for r in plain] == [0, 1, 2]
        assert [r.rerank_score for r in plain] == [r.similarity for r in plain]
        # in the mode asked for: a hybrid first stage's top 3, in its fused order
        fused = search_and_rerank(store, intents, "my card was declined", top_k=3, reranker="auto", mode="hybrid")
        hybrid = store.search(intents, "my card was declined", k=3, mode="hybrid")
        assert [r.external_id for r in fused] == [h.external_id for h in hybrid]
        assert [r.to_dict()["score"] for r in fused] == [h.score for h in hybrid]

        # the record's weight applies wherever the reranker is used: at 0, the first stage's order
        first_only = save_reranker(
            tmp_path / "first-only",
            tiny_cross_encoder_path,
            collection=intents,
            before={"ndcg@10": 60.0},
            after={"ndcg@10": 61.0},
            fusion={"weight": 0.0},
        )
        configure(dataclasses.replace(previous, cross_encoder=str(first_only)))
        assert "weight 0.00" in decide_rerank(intents).reason
        kept = search_and_rerank(store, intents, "my card was declined", top_k=5, reranker="auto")
        assert [r.original_rank for r in kept] == [0, 1, 2, 3, 4] and kept[0].rerank_score != kept[0].similarity
        plain_ids = [h.external_id for h in store.search(intents, "my card was declined", k=5)]
        assert (
            main(["-q", "search", "my card was declined", "-c", intents, "-k", "5", "--rerank", "auto", "--json"]) == 0
        )
        assert [h["external_id"] for h in json.loads(capsys.readouterr().out)["hits"]] == plain_ids
    finally:
        configure(previous)


@pytest.mark.slow
def test_an_interrupted_run_leaves_no_model(
    store: Any, intents: str, tiny_bi_encoder_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C (the CLI turns SIGTERM into SystemExit, handled the same way)

    monkeypatch.setattr(SentenceTransformerTrainer, "train", interrupted)
    out = tmp_path / "models" / "v1"
    with pytest.raises(KeyboardInterrupt):
        finetune_collection_bi_encoder(
            store,
            intents,
            out,
            label_field="category",
            base=str(tiny_bi_encoder_path),
            options=BiEncoderOptions(max_steps=2, batch_size=4, threads=1),
            progress=False,
        )
    assert not out.exists() and not list(out.parent.iterdir())


@pytest.mark.slow
def test_faq_rerank_auto(store: Any, collection_name: str, tiny_cross_encoder_path: Path, tmp_path: Path) -> None:
    from semsim_pg.faq import FAQEntry, FAQMatcher

    matcher = FAQMatcher(store, collection_name)
    matcher.load([FAQEntry("pin", "I forgot my PIN", "Reset it in the app.", alternatives=("PIN blocked",))])
    assert matcher.reranker_for("auto") is None  # the default cross-encoder has no record here
    assert [m.entry.faq_id for m in matcher.match("I lost my PIN", k=1, rerank="auto")] == ["pin"]
    helped = save_reranker(
        tmp_path / "faq-ce",
        tiny_cross_encoder_path,
        collection=collection_name,
        before={"ndcg@10": 50.0},
        after={"ndcg@10": 60.0},
    )
    tuned = FAQMatcher(store, collection_name, reranker=str(helped))
    chosen = tuned.reranker_for("auto")
    assert chosen is not None and chosen.name == str(helped.resolve())
    assert tuned.match("I lost my PIN", k=1, rerank="auto")[0].rerank_score is not None

    # at the record's weight 0 the FAQ's own order and scores stand (the similarity), reranked or not
    matcher.load(
        [
            FAQEntry("card", "My card was declined", "Call us.", alternatives=("card refused",)),
            FAQEntry("rate", "What is the exchange rate?", "See the rates page."),
        ]
    )
    first_only = save_reranker(
        tmp_path / "faq-first-only",
        tiny_cross_encoder_path,
        collection=collection_name,
        before={"ndcg@10": 50.0},
        after={"ndcg@10": 60.0},
        fusion={"weight": 0.0},
    )
    plain = matcher.match("I lost my PIN", k=3)
    kept = FAQMatcher(store, collection_name, reranker=str(first_only)).match("I lost my PIN", k=3, rerank="auto")
    assert [m.entry.faq_id for m in kept] == [m.entry.faq_id for m in plain]
    assert [m.score for m in kept] == pytest.approx([m.score for m in plain])
    assert all(m.rerank_score is not None for m in kept)
