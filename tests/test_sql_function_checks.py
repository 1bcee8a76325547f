"""The SQL functions (semsim.search, semsim.similar, semsim.hybrid_search) refuse what the Python
API refuses, with its bounds and words and SQLSTATE 22023, on the real server; good calls answer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg.errors import InvalidQuery
from semsim_pg.sql import METRICS, vector_literal
from semsim_pg.validation import MAX_K, check_fusion, check_hybrid, check_k, check_vectors
from tests.catalog import assert_migrations_are_this_checkouts

DOCS = [
    ("cat", "The cat sleeps on the warm windowsill all afternoon."),
    ("rain", "Heavy rain is expected in the mountains this weekend."),
    ("bread", "A recipe for bread with sourdough starter and rye flour."),
]
SEARCH = "SELECT * FROM semsim.search(:c, CAST(:v AS vector), :k)"
SIMILAR = "SELECT * FROM semsim.similar(:c, 'cat', :k)"
HYBRID = (
    "SELECT * FROM semsim.hybrid_search(:c, 'warm cat', CAST(:v AS vector), :k, NULL, :candidates, :rrf_k,"
    " CAST(:dense AS double precision), CAST(:lexical AS double precision))"
)
GOOD = {"k": 3, "candidates": 100, "rrf_k": 60, "dense": "1", "lexical": "1"}


def test_migrations_are_this_checkouts() -> None:
    assert_migrations_are_this_checkouts()


@pytest.fixture()
def cats(store, collection_name) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A cosine collection and the pgvector text of a query for it."""
    store.create_collection(collection_name)
    store.upsert(collection_name, DOCS)
    return collection_name, vector_literal(store.query_vector(collection_name, "a warm cat"))


def refusal(engine, sql: str, params: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    """The primary message of the error ``sql`` raises, which must be an invalid_parameter_value."""
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text(sql), params)
    orig = caught.value.orig
    assert orig is not None and orig.sqlstate == "22023", orig  # type: ignore[attr-defined]
    return str(orig.diag.message_primary)  # type: ignore[attr-defined]


def python_message(check: Any, *args: Any) -> str:
    """What the Python API says for the same value, without its final full stop."""
    with pytest.raises(InvalidQuery) as caught:
        check(*args)
    return str(caught.value).removesuffix(".")


@pytest.mark.parametrize("sql", [SEARCH, SIMILAR, HYBRID], ids=["search", "similar", "hybrid"])
@pytest.mark.parametrize("k", [0, -5, MAX_K + 1, 600_000_000])
def test_k_out_of_range_is_refused_with_the_python_bound_and_words(store, cats, sql: str, k: int) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    message = refusal(store.engine, sql, {**GOOD, "c": name, "v": vector, "k": k})
    assert message == "semsim: " + python_message(check_k, k)


def test_k_null_is_refused(store, cats) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    assert "k must be a whole number from 1 to 1000" in refusal(
        store.engine, SEARCH, {"c": name, "v": vector, "k": None}
    )


@pytest.mark.parametrize("candidates", [0, MAX_K + 1, 2_000_000_000])
def test_candidates_out_of_range_are_refused(store, cats, candidates: int) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    message = refusal(store.engine, HYBRID, {**GOOD, "c": name, "v": vector, "candidates": candidates})
    assert message == "semsim: " + python_message(check_k, candidates, "candidates")


def test_negative_rrf_k_is_refused_not_a_division_by_zero(store, cats) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    for rrf_k in (-1, -60):
        message = refusal(store.engine, HYBRID, {**GOOD, "c": name, "v": vector, "rrf_k": rrf_k})
        assert message == "semsim: " + python_message(check_fusion, rrf_k, (1.0, 1.0))


@pytest.mark.parametrize(
    ("dense", "lexical"), [("-1", "1"), ("1", "-0.5"), ("NaN", "1"), ("1", "NaN"), ("Infinity", "1"), (None, "1")]
)
def test_negative_or_non_finite_weights_are_refused(store, cats, dense: str | None, lexical: str) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    message = refusal(store.engine, HYBRID, {**GOOD, "c": name, "v": vector, "dense": dense, "lexical": lexical})
    python = python_message(check_fusion, 60, (float(dense or "nan"), float(lexical)))
    assert python.startswith("weights must be two numbers >= 0 (dense, lexical), got")
    assert message.startswith("semsim: weights must be two numbers >= 0 (dense_weight, lexical_weight), got ")
    assert message.endswith(f"got {dense or '<NULL>'} and {lexical}")


@pytest.mark.parametrize("metric", list(METRICS))
def test_a_zero_vector_is_refused_where_the_metric_needs_a_direction(store, collection_name, metric: str) -> None:  # type: ignore[no-untyped-def]
    coll = store.create_collection(collection_name, metric=metric)
    store.upsert(collection_name, DOCS)
    zero = np.zeros(coll.dimension, dtype=np.float32)
    params = {**GOOD, "c": collection_name, "v": vector_literal(zero)}
    python_refuses = METRICS[metric].needs_direction
    try:
        check_vectors(zero, "query vector", InvalidQuery, metric=metric)
    except InvalidQuery:
        assert python_refuses
    else:
        assert not python_refuses
    for sql in (SEARCH, HYBRID):
        if python_refuses:
            message = refusal(store.engine, sql, params)
            assert message == f"semsim: the query vector is all zeros: {metric} similarity is undefined for it"
        else:
            with store.engine.connect() as conn:
                rows = conn.execute(sa.text(sql), params).all()
            assert len(rows) == 3 and all(math.isfinite(r.similarity) for r in rows)


def test_nan_and_infinity_never_reach_the_functions(store, cats) -> None:  # type: ignore[no-untyped-def]
    """pgvector's type refuses them when the vector is made, whatever the function."""
    name, vector = cats
    for bad in ("NaN", "Infinity"):
        broken = "[" + bad + vector[vector.index(",") :]
        with store.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="not allowed in vector"):
            conn.execute(sa.text(SEARCH), {"c": name, "v": broken, "k": 3})


def test_the_bounds_themselves_are_accepted(store, cats) -> None:  # type: ignore[no-untyped-def]
    name, vector = cats
    with store.engine.connect() as conn:
        assert len(conn.execute(sa.text(SEARCH), {"c": name, "v": vector, "k": MAX_K}).all()) == 3
        assert len(conn.execute(sa.text(SIMILAR), {"c": name, "k": MAX_K}).all()) == 2
        edge = {**GOOD, "c": name, "v": vector, "k": MAX_K, "candidates": MAX_K, "rrf_k": 0, "dense": "0"}
        rows = conn.execute(sa.text(HYBRID), {**edge, "lexical": "2.5"}).all()
    assert rows[0].external_id == "cat" and rows[0].score == pytest.approx(2.5)
    assert check_fusion(0, (0.0, 2.5)) == (0, (0.0, 2.5))  # the Python API takes them too
    check_hybrid(MAX_K, MAX_K, (0.0, 2.5))
    # both weights 0 score every hit 0 (an arbitrary order): refused since 0012, as in Python
    message = refusal(store.engine, HYBRID, {**edge, "lexical": "0"})
    assert message.startswith("semsim: weights (0, 0) give every hit the score 0")
