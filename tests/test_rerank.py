"""Reranker: order equals the cross-encoder's own scores, edge cases, offline failures, two-stage search.

The tiny fixture cross-encoder has random weights: it checks plumbing, not quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from semsim_pg.errors import InvalidInput, InvalidQuery, ModelLoadError
from semsim_pg.rerank import RerankedHit, Reranker, get_reranker, search_and_rerank
from semsim_pg.store import SearchHit

QUERY = "how do I get my money back"
TEXTS = [
    "Refunds go back to your card within five days.",
    "The cat sleeps on the sofa.",
    "Return the parcel with the prepaid label.",
    "Express delivery arrives the next day.",
    "We accept PayPal and credit cards.",
    "Your money is refunded once we receive the item.",
    "A quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder_path: Path) -> Reranker:
    return get_reranker(str(tiny_cross_encoder_path))


@pytest.fixture(scope="module")
def reference_scores(tiny_cross_encoder_path: Path) -> np.ndarray:
    """The cross-encoder's own scores, computed straight through sentence-transformers."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_cross_encoder_path))
    return np.asarray(model.predict([(QUERY, t) for t in TEXTS]), dtype=np.float32)


def _hits(texts: list[str]) -> list[SearchHit]:
    # Descending bi-encoder similarity, as a search returns them.
    return [SearchHit(f"d{i}", t, {}, 0.9 - i * 0.05, 0.1 + i * 0.05) for i, t in enumerate(texts)]


def test_rerank_order_equals_cross_encoder_scores(reranker: Reranker, reference_scores: np.ndarray) -> None:
    # Random tiny weights give close but distinct scores; equal ones could not show an order.
    assert len(np.unique(reference_scores)) == len(TEXTS)
    result = reranker.rerank(QUERY, _hits(TEXTS), top_k=None)
    expected = [f"d{i}" for i in np.argsort(-reference_scores, kind="stable")]
    assert [r.hit.external_id for r in result] == expected
    np.testing.assert_allclose([r.rerank_score for r in result], np.sort(reference_scores)[::-1], rtol=1e-5)
    # both scores are kept: the bi-encoder's similarity travels with each hit
    for r in result:
        assert r.similarity == pytest.approx(r.hit.similarity)
        assert r.original_rank == int(r.hit.external_id[1:])
        assert r.external_id == r.hit.external_id  # attribute access reaches through to the hit
    assert [r.rerank_score for r in result] == sorted((r.rerank_score for r in result), reverse=True)


def test_rerank_top_k_and_candidates(reranker: Reranker, reference_scores: np.ndarray) -> None:
    hits = _hits(TEXTS)
    top = reranker.rerank(QUERY, hits, top_k=2)
    assert [r.hit.external_id for r in top] == [f"d{i}" for i in np.argsort(-reference_scores, kind="stable")[:2]]

    # candidates: only the bi-encoder's first 3 are read
    before = reranker.scored_count
    limited = reranker.rerank(QUERY, hits, top_k=10, candidates=3)
    assert reranker.scored_count - before == 3
    assert sorted(r.hit.external_id for r in limited) == ["d0", "d1", "d2"]
    assert [r.hit.external_id for r in limited] == [f"d{i}" for i in np.argsort(-reference_scores[:3], kind="stable")]


def test_fewer_hits_than_top_k_and_empty_input(reranker: Reranker) -> None:
    assert len(reranker.rerank(QUERY, _hits(TEXTS[:2]), top_k=5)) == 2
    assert reranker.rerank(QUERY, [], top_k=5) == []
    assert reranker.score(QUERY, []).shape == (0,)


def test_empty_input_does_not_load_the_model(tiny_cross_encoder_path: Path) -> None:
    fresh = Reranker(str(tiny_cross_encoder_path))
    assert fresh.rerank(QUERY, [], top_k=3) == []
    assert not fresh.loaded


@dataclass
class Article:
    title: str
    body: str


def test_generic_hits_with_text_of(reranker: Reranker, reference_scores: np.ndarray) -> None:
    articles = [Article(f"a{i}", t) for i, t in enumerate(TEXTS)]
    result = reranker.rerank(QUERY, articles, top_k=3, text_of=lambda a: a.body)
    assert all(isinstance(r, RerankedHit) for r in result)
    assert [r.hit.title for r in result] == [f"a{i}" for i in np.argsort(-reference_scores, kind="stable")[:3]]
    assert all(r.similarity is None for r in result)  # the objects carry no bi-encoder score
    assert result[0].title == result[0].hit.title
    # plain strings rerank too
    strings = reranker.rerank(QUERY, TEXTS, top_k=1)
    assert strings[0].hit == TEXTS[int(np.argmax(reference_scores))]


@dataclass
class SemanticRow:
    """Like a django_semsim SemanticModel instance: a semantic_text() and an annotated similarity."""

    body: str
    similarity: float
    text: str = "not the embedded text"

    def semantic_text(self) -> str:
        return self.body


def test_semantic_text_and_similarity_are_read_by_default(reranker: Reranker, reference_scores: np.ndarray) -> None:
    rows = [SemanticRow(t, 0.5 + i / 100) for i, t in enumerate(TEXTS)]
    result = reranker.rerank(QUERY, rows, top_k=None)
    assert [rows.index(r.hit) for r in result] == list(np.argsort(-reference_scores, kind="stable"))
    assert [r.similarity for r in result] == [r.hit.similarity for r in result]


def test_object_without_text_needs_text_of(reranker: Reranker) -> None:
    with pytest.raises(InvalidInput, match="text_of"):
        reranker.rerank(QUERY, [Article("a", "b")], top_k=1)


def test_bad_arguments(reranker: Reranker) -> None:
    with pytest.raises(InvalidQuery):
        reranker.rerank("  ", _hits(TEXTS), top_k=1)
    with pytest.raises(InvalidQuery):
        reranker.rerank(QUERY, _hits(TEXTS), top_k=0)
    with pytest.raises(InvalidQuery):
        reranker.rerank(QUERY, _hits(TEXTS), top_k=2, candidates=0)


def test_get_reranker_is_shared_and_lazy(tiny_cross_encoder_path: Path) -> None:
    a = get_reranker(str(tiny_cross_encoder_path))
    b = get_reranker(str(tiny_cross_encoder_path))
    assert a is b
    assert get_reranker(str(tiny_cross_encoder_path) + "/") is a  # same folder, same reranker


def test_hub_name_fails_with_clear_error_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = Reranker("cross-encoder/not-cached-anywhere-semsim-test")
    with pytest.raises(ModelLoadError) as info:
        reranker.score(QUERY, ["a text"])
    message = str(info.value)
    assert "not-cached-anywhere-semsim-test" in message
    assert "semsim finetune cross-encoder" in message
    assert "HF_HUB_OFFLINE" in message


def test_hub_name_fails_when_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not offline by configuration, but the endpoint refuses connections: the probe fails at once
    # instead of the hub client retrying for ~25 s.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match=r"unreachable.*semsim finetune cross-encoder"):
        Reranker("cross-encoder/not-cached-anywhere-semsim-test").score(QUERY, ["a text"])


def test_default_model_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tiny_cross_encoder_path: Path) -> None:
    from semsim_pg.settings import configure, get_settings

    saved = get_settings()
    try:
        configure(saved.replace(cross_encoder=str(tiny_cross_encoder_path)))
        assert Reranker().source.location == str(tiny_cross_encoder_path.resolve())
        assert get_reranker() is get_reranker(str(tiny_cross_encoder_path))
    finally:
        configure(saved)


def test_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Reranker(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="saved cross-encoder"):
        Reranker(str(tmp_path)).score(QUERY, ["x"])  # an empty folder


def test_search_and_rerank(store, collection_name: str, reranker: Reranker) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, [(f"d{i}", t, {"n": i % 2}) for i, t in enumerate(TEXTS)])
    hits = store.search(collection_name, QUERY, k=5)
    expected_scores = reranker.score(QUERY, [h.text for h in hits])

    result = search_and_rerank(store, collection_name, QUERY, candidates=5, top_k=3, reranker=reranker)
    assert len(result) == 3
    assert [r.hit.external_id for r in result] == [
        hits[i].external_id for i in np.argsort(-expected_scores, kind="stable")[:3]
    ]
    by_id = {h.external_id: h.similarity for h in hits}
    for r in result:
        assert r.similarity == pytest.approx(by_id[r.hit.external_id])

    # candidates < top_k: as many results as candidates; a filter applies in SQL before reranking
    assert len(search_and_rerank(store, collection_name, QUERY, candidates=2, top_k=5, reranker=reranker)) == 2
    filtered = search_and_rerank(store, collection_name, QUERY, top_k=10, reranker=reranker, filter={"n": 1})
    assert {r.hit.metadata["n"] for r in filtered} == {1}
    assert len(filtered) == 3

    # min_similarity and exact apply to the first stage, as in store.search
    floor = sorted(by_id.values(), reverse=True)[2]  # the third best similarity: three candidates pass
    kept = search_and_rerank(store, collection_name, QUERY, top_k=10, reranker=reranker, min_similarity=floor)
    assert {r.hit.external_id for r in kept} == {i for i, sim in by_id.items() if sim >= floor}
    exact = search_and_rerank(store, collection_name, QUERY, candidates=5, top_k=3, reranker=reranker, exact=True)
    assert [r.hit.external_id for r in exact] == [r.hit.external_id for r in result]


def test_bfloat16_precision(tiny_cross_encoder_path: Path, reranker: Reranker) -> None:
    import torch

    half = Reranker(str(tiny_cross_encoder_path), precision="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    scores = half.score(QUERY, TEXTS)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, reranker.score(QUERY, TEXTS), atol=1e-2)
    with pytest.raises(InvalidInput, match="precision"):
        Reranker(str(tiny_cross_encoder_path), precision="int4")


def test_weight_zero_is_exactly_the_candidates_order(
    tiny_cross_encoder_path: Path, reference_scores: np.ndarray
) -> None:
    zero = Reranker(str(tiny_cross_encoder_path), weight=0.0)
    hits = _hits(TEXTS)
    assert [r.original_rank for r in zero.rerank(QUERY, hits, top_k=None)] == list(range(len(TEXTS)))
    # hits not in similarity order (a hybrid search) or without one (texts): their rank is the first stage
    rising = list(reversed(hits))
    assert [r.hit for r in zero.rerank(QUERY, rising, top_k=None)] == rising
    assert [r.hit for r in zero.rerank(QUERY, TEXTS, top_k=3)] == TEXTS[:3]
    # ties in similarity keep their order too
    tied = [SearchHit(f"d{i}", t, {}, 0.5, 0.5) for i, t in enumerate(TEXTS)]
    assert [r.hit for r in zero.rerank(QUERY, tied, top_k=None)] == tied

    # a weight between: the order of the blended scores, computed here by hand
    half = Reranker(str(tiny_cross_encoder_path), weight=0.3)
    similarities = np.array([h.similarity for h in hits])
    blended = 0.7 * similarities + 0.3 * reference_scores.astype(np.float64)
    result = half.rerank(QUERY, hits, top_k=None)
    assert [r.original_rank for r in result] == list(np.argsort(-blended, kind="stable"))
    np.testing.assert_allclose([r.score for r in result], np.sort(blended)[::-1], rtol=1e-5)
    np.testing.assert_allclose(
        [r.rerank_score for r in result], reference_scores[[r.original_rank for r in result]], rtol=1e-5
    )
    # by rank when there is no similarity: 1 - rank/n
    by_rank = 0.7 * (1 - np.arange(len(TEXTS)) / len(TEXTS)) + 0.3 * reference_scores.astype(np.float64)
    assert [r.original_rank for r in half.rerank(QUERY, TEXTS, top_k=None)] == list(np.argsort(-by_rank, kind="stable"))


def test_the_weight_comes_from_the_record(tiny_cross_encoder_path: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from semsim_pg.finetune import RECORD_NAME

    folder = tmp_path / "tuned"
    shutil.copytree(tiny_cross_encoder_path, folder)
    record = {"kind": "reranker", "base": "x", "collection": "c", "metric": "ndcg@10", "before": {}, "after": {}}
    (folder / RECORD_NAME).write_text(json.dumps({**record, "fusion": {"weight": 0.0}}), encoding="utf-8")
    tuned = Reranker(str(folder))
    assert tuned.weight == 0.0 and tuned.describe()["weight"] == 0.0
    assert [r.original_rank for r in tuned.rerank(QUERY, _hits(TEXTS), top_k=4)] == [0, 1, 2, 3]
    # no record, or a record without a weight: the cross-encoder's own order (weight 1)
    assert Reranker(str(tiny_cross_encoder_path)).weight == 1.0
    (folder / RECORD_NAME).write_text(json.dumps(record), encoding="utf-8")
    assert Reranker(str(folder)).weight == 1.0
    (folder / RECORD_NAME).write_text(json.dumps({**record, "fusion": {"weight": 1.5}}), encoding="utf-8")
    with pytest.raises(InvalidInput, match="fusion weight"):
        Reranker(str(folder)).rerank(QUERY, _hits(TEXTS), top_k=1)
    with pytest.raises(InvalidInput, match="from 0"):
        Reranker(str(folder), weight=-0.1)
