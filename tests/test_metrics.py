"""Metrics against values computed by hand on tiny inputs (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from semsim_pg.errors import InvalidInput
from semsim_pg.evaluation.metrics import (
    accuracy_at_k,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    rankdata,
    recall_at_k,
    spearman,
)


def test_pearson_hand_values() -> None:
    # x = 1,2,3 ; y = 1,3,2: deviations (-1,0,1) and (-1,1,0): sum of products 1, norms sqrt2*sqrt2 -> 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert isinstance(pearson([1, 2], [2, 1]), float)


def test_pearson_is_not_spearman_on_a_nonlinear_monotone_relation() -> None:
    x = [1, 2, 3, 4]
    y = [1, 2, 3, 100]
    # Monotone -> rho exactly 1; Pearson: deviations (-1.5,-.5,.5,1.5) and (-25.5,-24.5,-23.5,73.5)
    # products 38.25+12.25-11.75+110.25 = 149; |x| = sqrt(5), |y| = sqrt(650.25+600.25+552.25+5402.25) = sqrt(7205)
    assert spearman(x, y) == pytest.approx(1.0)
    assert pearson(x, y) == pytest.approx(149 / math.sqrt(5 * 7205))


def test_rankdata_averages_ties() -> None:
    assert rankdata([10, 30, 20, 30]).tolist() == [1.0, 3.5, 2.0, 3.5]
    assert rankdata([5, 5, 5]).tolist() == [2.0, 2.0, 2.0]


def test_spearman_with_ties_hand_value() -> None:
    # ranks x = 1,2,3,4 ; y = 1, 2.5, 2.5, 4 -> deviations (-1.5,-.5,.5,1.5) and (-1.5,0,0,1.5)
    # products 2.25+0+0+2.25 = 4.5 ; |x|^2 = 5, |y|^2 = 4.5 -> 4.5 / sqrt(22.5)
    assert spearman([1, 2, 3, 4], [0, 7, 7, 9]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_constant_input_gives_nan() -> None:
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    # cosines of texts paired with themselves: equal but for float32 rounding, not a ranking
    rounding = [0.99999994, 1.0000001, 1.0]
    assert math.isnan(pearson(rounding, [5, 1, 3])) and math.isnan(spearman(rounding, [5, 1, 3]))
    # a real spread, however small in absolute terms, still correlates
    assert spearman([0.001, 0.002, 0.003], [1, 2, 3]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("x", "y"),
    [([1, 2, 3], [1, 2]), ([1], [1]), ([1, float("nan")], [1, 2])],
)
def test_correlation_bad_input(x: list[float], y: list[float]) -> None:
    with pytest.raises(InvalidInput):
        pearson(x, y)


RANKED = ["a", "b", "c", "d", "e"]


def test_ndcg_hand_values() -> None:
    # binary: relevant b (rank 2) and d (rank 4); DCG@5 = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(RANKED, {"b": 1, "d": 1}, 5) == pytest.approx(dcg / idcg)
    # @3 only b counts: (1/log2 3) / (1 + 1/log2 3)
    assert ndcg_at_k(RANKED, {"b": 1, "d": 1}, 3) == pytest.approx((1 / math.log2(3)) / idcg)
    # graded: c=2 at rank 3, a=1 at rank 1: DCG = 1 + 2/2 = 2; ideal c then a: 2 + 1/log2(3)
    assert ndcg_at_k(RANKED, {"a": 1, "c": 2}, 10) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(RANKED, {"a": 3}, 1) == pytest.approx(1.0)
    # a relevant document that was never retrieved only raises the ideal
    assert ndcg_at_k(RANKED, {"a": 1, "z": 1}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_k_smaller_than_relevant_set() -> None:
    # 3 relevant, k=1, first is relevant: ideal@1 = 1 -> perfect
    assert ndcg_at_k(RANKED, {"a": 1, "b": 1, "x": 1}, 1) == pytest.approx(1.0)


def test_mrr_hand_values() -> None:
    assert mrr_at_k(RANKED, {"c": 1}, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, {"c": 1, "e": 1}, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, {"c": 1}, 2) == 0.0
    assert mrr_at_k(RANKED, {"a": 1}, 1) == 1.0


def test_recall_and_accuracy_hand_values() -> None:
    relevant = {"b": 1, "e": 1, "z": 1}
    assert recall_at_k(RANKED, relevant, 1) == 0.0
    assert recall_at_k(RANKED, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, relevant, 5) == pytest.approx(2 / 3)
    assert accuracy_at_k(RANKED, relevant, 1) == 0.0
    assert accuracy_at_k(RANKED, relevant, 2) == 1.0


def test_grades_of_zero_are_not_relevant() -> None:
    # BEIR qrels may hold 0 = judged not relevant
    relevant = {"a": 0, "c": 1}
    assert mrr_at_k(RANKED, relevant, 10) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, relevant, 10) == 1.0


def test_duplicate_ids_count_once() -> None:
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == 1.0
    assert ndcg_at_k(["a", "a"], {"a": 1, "b": 1}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


@pytest.mark.parametrize("metric", [ndcg_at_k, mrr_at_k, recall_at_k, accuracy_at_k])
def test_ranking_bad_input(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="no relevant"):
        metric(RANKED, {"a": 0}, 10)
    with pytest.raises(InvalidInput, match="positive integer"):
        metric(RANKED, {"a": 1}, 0)
