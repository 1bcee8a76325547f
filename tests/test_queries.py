"""The query layer against the facts written elsewhere as literals: migrations and PL/pgSQL."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import queries
from semsim_pg.sql import METRIC_NAMES, METRICS, vector_literal

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ("a", "The dog chases the cat", {"topic": "animals"}),
    ("b", "The feline is being pursued by the canine", {"topic": "animals"}),
    ("c", "Stock markets fell sharply", {"topic": "finance"}),
    ("d", "Boil the pasta for ten minutes", {"topic": "cooking"}),
    ("e", "A rocket launched a satellite", {"topic": "space"}),
]


def test_the_migration_check_lists_the_metrics(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        definition = conn.execute(
            sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname LIKE 'ck\\_collections%metric'")
        ).scalar_one()
    assert sorted(re.findall(r"'(\w+)'", definition)) == sorted(METRIC_NAMES)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_plpgsql_operator_and_similarity_match_the_metric_table(engine, metric: str) -> None:  # type: ignore[no-untyped-def]
    spec = METRICS[metric]
    with engine.connect() as conn:
        operator = conn.execute(sa.text("SELECT semsim.distance_operator(:m)"), {"m": metric}).scalar_one()
        plpgsql = conn.execute(sa.text("SELECT semsim.similarity(:m, 0.25)"), {"m": metric}).scalar_one()
        core = conn.execute(sa.select(spec.similarity(sa.literal(0.25, sa.Float)))).scalar_one()
    assert operator == spec.operator
    assert plpgsql == pytest.approx(core)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_sql_function_returns_what_the_query_layer_returns(store, collection_name, metric: str) -> None:  # type: ignore[no-untyped-def]
    coll = store.create_collection(collection_name, metric=metric)
    store.upsert(collection_name, DOCS)
    vector = store.query_vector(coll, "a kitten chased by a puppy")
    with store.engine.connect() as conn:
        sql_users = conn.execute(
            sa.text('SELECT * FROM semsim.search(:c, CAST(:v AS vector), 4, \'{"topic": "animals"}\')'),
            {"c": collection_name, "v": vector_literal(vector)},
        ).all()
        core = conn.execute(
            queries.search_statement(coll, vector_literal(vector), 4, filter={"topic": ["animals"]})
        ).all()
        unfiltered = conn.execute(queries.search_statement(coll, vector_literal(vector), 4)).all()
    assert [r[0] for r in sql_users] == [r[0] for r in core] == ["a", "b"]
    np.testing.assert_allclose([r[3] for r in sql_users], [r[3] for r in core], rtol=1e-6)
    np.testing.assert_allclose([r[4] for r in sql_users], [r[4] for r in core], rtol=1e-6)
    assert len(unfiltered) == 4


def test_only_the_query_layer_names_the_tables() -> None:
    found = subprocess.run(
        ["grep", "-rln", r"semsim\.\(collections\|documents\|embeddings\)", "semsim_pg", "--include=*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(path.startswith("semsim_pg/queries/") for path in found), found
