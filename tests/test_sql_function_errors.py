"""The SQL functions' errors carry a SQLSTATE of their kind (migration 0014), a filter value
matches a list that holds it (in SQL as in Python, through the GIN index), and the README's reader
role runs the CLI and the Python API too. Real server, real model."""

from __future__ import annotations

import json
import runpy
from typing import Any

import pytest
import sqlalchemy as sa

from semsim_pg.db import downgrade, get_engine, migrations_dir, upgrade
from semsim_pg.sql import vector_literal
from tests.catalog import assert_migrations_are_this_checkouts, semsim_functions
from tests.roles import README_READER_GRANTS, temporary_role
from tests.test_migrations import empty_database  # noqa: F401
from tests.test_privileges import cli_as  # noqa: F401

#: the revision before 0014
PREVIOUS = runpy.run_path(str(migrations_dir() / "versions" / "0014_sql_function_errcodes.py"))["down_revision"]

INVALID, UNDEFINED, NOT_READY = "22023", "42704", "55000"
SEARCH = "SELECT * FROM semsim.search(:c, CAST(:v AS vector), 5)"
SIMILAR = "SELECT * FROM semsim.similar(:c, :id, 5)"
HYBRID = "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 5)"
TAGGED = [
    ("both", "Notes on cells and atoms.", {"tags": ["cells", "atoms"], "n": 1}),
    ("cells", "Notes on cells alone.", {"tags": "cells", "n": 2}),
    ("rivers", "Notes on rivers.", {"tags": ["rivers"], "n": [1, 2]}),
    ("none", "Notes on nothing in particular.", {"n": 1}),
]


def test_migrations_are_this_checkouts() -> None:
    assert_migrations_are_this_checkouts("0014_sql_function_errcodes.py")


@pytest.fixture()
def tagged(store, collection_name) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Documents whose metadata holds lists and scalars, and a query vector for them."""
    store.create_collection(collection_name)
    store.upsert(collection_name, TAGGED, progress=False)
    return collection_name, vector_literal(store.query_vector(collection_name, "cells"))


def sqlstate(engine: sa.Engine, sql: str, **params: Any) -> tuple[str, str]:
    """The SQLSTATE and primary message of the error ``sql`` raises."""
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text(sql), params)
    orig = caught.value.orig
    return orig.sqlstate, str(orig.diag.message_primary)  # type: ignore[union-attr]


def errors(engine: sa.Engine, name: str, vector: str) -> dict[str, tuple[str, str]]:
    """What each bad call raises, by what is wrong with it."""
    short = "[1,2,3]"
    return {
        "search: unknown collection": sqlstate(engine, SEARCH, c="nope", v=vector),
        "search: NULL collection": sqlstate(engine, SEARCH, c=None, v=vector),
        "search: NULL vector": sqlstate(engine, SEARCH, c=name, v=None),
        "search: wrong dimension": sqlstate(engine, SEARCH, c=name, v=short),
        "similar: unknown collection": sqlstate(engine, SIMILAR, c="nope", id="both"),
        "similar: unknown id": sqlstate(engine, SIMILAR, c=name, id="zzz"),
        "similar: NULL id": sqlstate(engine, SIMILAR, c=name, id=None),
        "hybrid: unknown collection": sqlstate(engine, HYBRID, c="nope", t="cells", v=vector),
        "hybrid: NULL text": sqlstate(engine, HYBRID, c=name, t=None, v=vector),
        "hybrid: NULL vector": sqlstate(engine, HYBRID, c=name, t="cells", v=None),
        "hybrid: wrong dimension": sqlstate(engine, HYBRID, c=name, t="cells", v=short),
    }


EXPECTED = {
    "search: unknown collection": (UNDEFINED, 'semsim: no collection named "nope"'),
    "search: NULL collection": (INVALID, "semsim: collection_name is NULL: give the name of a collection"),
    "search: NULL vector": (INVALID, "semsim: the query vector is NULL"),
    "search: wrong dimension": (INVALID, "semsim: the query vector has 3 dimensions but collection"),
    "similar: unknown collection": (UNDEFINED, 'semsim: no collection named "nope"'),
    "similar: unknown id": (UNDEFINED, 'has no document with id "zzz"'),
    "similar: NULL id": (INVALID, "semsim: source_id is NULL: give the id of a stored document"),
    "hybrid: unknown collection": (UNDEFINED, 'semsim: no collection named "nope"'),
    "hybrid: NULL text": (INVALID, "semsim: hybrid_search needs the query as text and as a vector"),
    "hybrid: NULL vector": (INVALID, "semsim: hybrid_search needs the query as text and as a vector"),
    "hybrid: wrong dimension": (INVALID, "semsim: the query vector has 3 dimensions but collection"),
}


def test_every_argument_error_has_the_sqlstate_of_its_kind(admin, tagged) -> None:  # type: ignore[no-untyped-def]
    name, vector = tagged
    got = errors(admin, name, vector)
    assert {what: state for what, (state, _) in got.items()} == {what: s for what, (s, _) in EXPECTED.items()}
    for what, (_, words) in EXPECTED.items():
        assert words in got[what][1], what
    # a document stored without a vector of the collection's model: not an argument error
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO semsim.documents (collection_id, external_id, text)"
                " SELECT id, 'bare', 'no vector yet' FROM semsim.collections WHERE name = :c"
            ),
            {"c": name},
        )
    state, message = sqlstate(admin, SIMILAR, c=name, id="bare")
    assert state == NOT_READY and 'document "bare" has no vector for model' in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cells", {"both", "cells"}),  # a text: equal, or held by the list
        (["cells"], {"both", "cells"}),  # a list of alternatives, each read so
        (["atoms", "rivers"], {"both", "rivers"}),
        ([["cells"]], {"both"}),  # a list as an alternative: containment, as before
        ([["cells", "atoms"]], {"both"}),
        ("atoms and more", set()),
    ],
)
def test_a_filter_value_matches_a_list_that_holds_it_in_python_and_sql(  # type: ignore[no-untyped-def]
    admin, store, tagged, value: Any, expected: set[str]
) -> None:
    name, vector = tagged
    in_python = {h.external_id for h in store.search(name, "cells", 10, filter={"tags": value})}
    exact = {h.external_id for h in store.search(name, "cells", 10, filter={"tags": value}, exact=True)}
    hybrid = {h.external_id for h in store.search(name, "cells", 10, filter={"tags": value}, mode="hybrid")}
    f = json.dumps({"tags": value})
    with admin.connect() as conn:
        in_sql = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT * FROM semsim.search(:c, CAST(:v AS vector), 10, CAST(:f AS jsonb))"),
                {"c": name, "v": vector, "f": f},
            )
        }
        in_sql_hybrid = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT * FROM semsim.hybrid_search(:c, 'cells', CAST(:v AS vector), 10, CAST(:f AS jsonb))"),
                {"c": name, "v": vector, "f": f},
            )
        }
    assert in_python == exact == hybrid == in_sql == in_sql_hybrid == expected


def test_a_scalar_value_matches_what_it_matched_and_a_list_holding_it(store, tagged) -> None:  # type: ignore[no-untyped-def]
    name, _ = tagged
    # 1 matches n: 1, and now n: [1, 2] too; never n: 2
    assert {h.external_id for h in store.search(name, "cells", 10, filter={"n": 1})} == {"both", "none", "rivers"}
    assert {h.external_id for h in store.search(name, "cells", 10, filter={"n": 2})} == {"cells", "rivers"}
    assert {h.external_id for h in store.search(name, "cells", 10, filter={"n": "1"})} == set()  # JSON's types


def test_the_list_filter_is_answered_by_the_gin_index(admin) -> None:  # type: ignore[no-untyped-def]
    with admin.connect() as conn:
        condition = conn.execute(sa.text("""SELECT semsim._filter_condition('{"tags": "cells"}')""")).scalar_one()
        assert condition.count("@>") == 2
        conn.execute(sa.text("BEGIN"))
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(sa.text(f"EXPLAIN SELECT d.id FROM semsim.documents d WHERE {condition}")).scalars()
        )
        conn.execute(sa.text("ROLLBACK"))
    assert "Bitmap Index Scan on ix_documents_metadata" in plan and "BitmapOr" in plan, plan


def test_0014_sets_sqlstates_and_reads_lists_and_downgrades_exactly(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, PREVIOUS)

    def functions() -> dict[str, tuple[object, ...]]:
        with engine.connect() as conn:
            return semsim_functions(
                conn, "p.prosrc", "p.proconfig", "pg_get_function_arguments(p.oid)", "p.proacl::text"
            )

    before = functions()
    upgrade(engine)
    at_head = functions()
    assert set(at_head) == set(before)
    pinned = [
        f for f, (_, config, *_rest) in at_head.items() if config and "search_path=pg_catalog, semsim" in config[0]
    ]
    assert len(pinned) == 5  # search, similar, _search, hybrid_search, _filter_condition
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    store.create_collection("tagged")
    store.upsert("tagged", TAGGED, progress=False)
    vector = vector_literal(encoder.encode(["cells"])[0])
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")

    def behaviour() -> tuple[dict[str, str], int]:
        admin.dispose()  # a fresh session: plpgsql caches a function per session
        states = {what: state for what, (state, _) in errors(admin, "tagged", vector).items()}
        with admin.connect() as conn:
            found = conn.execute(
                sa.text(
                    """SELECT count(*) FROM semsim.search('tagged', CAST(:v AS vector), 10, '{"tags": "cells"}')"""
                ),
                {"v": vector},
            ).scalar_one()
        return states, found

    assert behaviour() == ({what: state for what, (state, _) in EXPECTED.items()}, 2)
    downgrade(engine, PREVIOUS)
    assert functions() == before  # restored exactly
    states, found = behaviour()
    assert found == 1 and set(states.values()) == {"P0001"}  # a plain RAISE; only the text "cells"
    upgrade(engine)
    assert functions() == at_head
    admin.dispose()


def test_the_readme_reader_role_searches_from_the_cli_and_python_too(  # type: ignore[no-untyped-def]
    capsys,
    admin,
    engine,
    encoder,
    tagged,
    cli_as,  # noqa: F811
) -> None:
    from semsim_pg.store import DocumentStore

    name, _ = tagged
    with temporary_role(admin, *README_READER_GRANTS) as role:
        # the role logs in as the session's user and takes the reader role on (tests/test_privileges.py)
        url = engine.url.update_query_dict({"options": f"-c role={role}"}).render_as_string(hide_password=False)
        code, out, err = cli_as(capsys, url, "search", "cells", "-c", name, "-k", "2", "--json")
        assert code == 0, err
        assert json.loads(out)["hits"][0]["external_id"] in {"both", "cells"}
        code, out, err = cli_as(capsys, url, "search", "cells", "-c", name, "--filter", "tags=cells", "--json")
        assert code == 0 and {h["external_id"] for h in json.loads(out)["hits"]} == {"both", "cells"}, err
        code, out, err = cli_as(capsys, url, "collections")
        assert code == 0 and name in out, err
        reader = DocumentStore(url, encoder=encoder)
        assert len(reader.search(name, "cells", 3)) == 3
        assert len(reader.similar(name, "both", 2)) == 2
        get_engine(url=url).dispose()
