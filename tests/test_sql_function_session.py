"""The SQL functions as a psql or BI user meets them (migration 0012): under a search_path without
pgvector's schema, inside a transaction whose settings they must leave alone, with a JSON list in
the filter, hybrid_search's defaults and refusals, a reader role with only the README's grants,
and psql on the libpq URL `semsim info` prints. Real server, real model."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from semsim_pg.cli import main
from semsim_pg.errors import InvalidQuery
from semsim_pg.sql import vector_literal
from semsim_pg.validation import check_hybrid
from tests.catalog import assert_migrations_are_this_checkouts
from tests.roles import README_READER_GRANTS, temporary_role

TOPICS = ("bio", "sci", "geo")
SEARCH = "SELECT * FROM semsim.search(:c, CAST(:v AS {vector}), :k, CAST(:f AS jsonb))"
SIMILAR = "SELECT * FROM semsim.similar(:c, 'd1', :k, CAST(:f AS jsonb))"
HYBRID = "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS {vector}), :k, CAST(:f AS jsonb))"


def test_migrations_are_this_checkouts() -> None:
    assert_migrations_are_this_checkouts("0012_sql_function_session.py")


@pytest.fixture()
def topics(store, collection_name) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """60 documents, 20 per topic, and the vector of a query for them."""
    store.create_collection(collection_name)
    docs = [
        (f"d{i}", f"Note {i} on {('cells', 'atoms', 'rivers')[i % 3]} and their study.", {"topic": TOPICS[i % 3]})
        for i in range(60)
    ]
    store.upsert(collection_name, docs, progress=False)
    return collection_name, vector_literal(store.query_vector(collection_name, "cells"))


@pytest.fixture()
def vector_schema(engine) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return str(
            conn.execute(
                sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
            ).scalar_one()
        )


@pytest.fixture()
def bare_schema(admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A schema of its own, for a search_path that leaves out pgvector's."""
    name = f"s_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))


def rows(conn: sa.Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    base = {"k": 5, "f": None, "t": "cells"}
    return [tuple(r) for r in conn.execute(sa.text(sql), {**base, **params})]


def test_every_function_works_when_the_search_path_leaves_out_pgvector(  # type: ignore[no-untyped-def]
    admin, topics, vector_schema, bare_schema
) -> None:
    name, vector = topics
    calls = [SEARCH.format(vector=f"{vector_schema}.vector"), SIMILAR, HYBRID.format(vector=f"{vector_schema}.vector")]
    with admin.connect() as conn:
        expected = [rows(conn, sql, c=name, v=vector) for sql in calls]
        conn.execute(sa.text(f"SET search_path = {bare_schema}"))
        assert conn.execute(sa.text("SELECT to_regtype('vector')")).scalar() is None  # pgvector is out of sight
        assert [rows(conn, sql, c=name, v=vector) for sql in calls] == expected
    assert all(len(r) == 5 for r in expected)


def test_semsim_connections_add_pgvector_to_a_search_path_without_it(  # type: ignore[no-untyped-def]
    capsys, settings, engine, encoder, topics, vector_schema, bare_schema
) -> None:
    """``options=-csearch_path=...`` in the URL: the CLI and the store search as with no option
    (register_vector failed with a traceback), and the user's schema stays first on the path."""
    from semsim_pg.db import get_engine
    from semsim_pg.settings import configure
    from semsim_pg.store import DocumentStore

    name, _ = topics
    url = engine.url.update_query_dict({"options": f"-csearch_path={bare_schema}"})
    text_url = url.render_as_string(hide_password=False)
    try:
        configure(settings.replace(database_url=text_url))
        code = main(["-q", "search", "cells", "-c", name, "-k", "3", "--json", "--filter", "topic=bio"])
    finally:
        configure(settings)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [h["metadata"]["topic"] for h in json.loads(out)["hits"]] == ["bio"] * 3
    try:
        store = DocumentStore(text_url, encoder=encoder, migrate=False)
        assert len(store.search(name, "cells", 4, mode="hybrid")) == 4
        store.upsert(name, [("new", "A note on cells.", {"topic": "bio"})], progress=False)
        with store.engine.connect() as conn:
            path = conn.execute(sa.text("SHOW search_path")).scalar_one()
        assert path == f"{bare_schema}, {vector_schema}"
    finally:
        get_engine(url=text_url).dispose()


def test_a_call_leaves_the_transactions_settings_as_it_found_them(admin, store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """search (a split collection: it raises ef_search while it reads) and hybrid_search set
    pgvector's settings for their own statements only: a later query of the transaction sees the
    caller's, whether the caller set them for the session, the transaction or not at all."""
    store.create_collection(collection_name, chunk=16, chunk_overlap=0)
    docs = [(f"d{i}", " ".join([f"Passage about cells number {i}."] * 6), {"topic": "bio"}) for i in range(12)]
    store.upsert(collection_name, docs, progress=False)
    vector = vector_literal(store.query_vector(collection_name, "cells"))
    calls = [SEARCH.format(vector="vector"), HYBRID.format(vector="vector")]

    def settings(conn: sa.Connection) -> tuple[str, str]:
        scan = conn.execute(sa.text("SHOW hnsw.iterative_scan")).scalar_one()
        return scan, conn.execute(sa.text("SHOW hnsw.ef_search")).scalar_one()

    with admin.connect() as conn:
        conn.execute(sa.text("SELECT '[1]'::vector"))  # pgvector's settings exist once its library is loaded
        for setup in (
            [],
            ["SET hnsw.ef_search = 33"],
            ["SET LOCAL hnsw.ef_search = 77", "SET LOCAL hnsw.iterative_scan = strict_order"],
        ):
            conn.execute(sa.text("BEGIN"))
            for statement in setup:
                conn.execute(sa.text(statement))
            before = settings(conn)
            for sql in calls:
                assert len(rows(conn, sql, c=collection_name, v=vector, k=200)) == 12
                assert settings(conn) == before, (setup, sql)
            conn.execute(sa.text("COMMIT"))
        conn.execute(sa.text("RESET hnsw.ef_search"))


@pytest.mark.parametrize("value", [["bio", "sci"], ["geo"], "bio", [{"nested": 1}, "sci"]])
def test_a_list_in_the_filter_means_any_of_its_values_as_in_python(admin, store, topics, value: Any) -> None:  # type: ignore[no-untyped-def]
    name, vector = topics
    expected = {h.external_id for h in store.search(name, "cells", 50, filter={"topic": value})}
    f = json.dumps({"topic": value})
    with admin.connect() as conn:
        searched = {r[0] for r in rows(conn, SEARCH.format(vector="vector"), c=name, v=vector, k=50, f=f)}
        hybrid = {r[0] for r in rows(conn, HYBRID.format(vector="vector"), c=name, v=vector, k=50, f=f)}
        similar = rows(conn, SIMILAR, c=name, k=50, f=f)
    values = value if isinstance(value, list) else [value]
    assert searched == hybrid == expected and len(expected) == 20 * sum(isinstance(v, str) for v in values)
    assert similar and {r[2]["topic"] for r in similar} <= {v for v in values if isinstance(v, str)}


def refusal(engine: sa.Engine, sql: str, **params: Any) -> str:
    """The primary message of the invalid_parameter_value ``sql`` raises."""
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        rows(conn, sql, **params)
    orig = caught.value.orig
    assert orig is not None and orig.sqlstate == "22023", orig  # type: ignore[attr-defined]
    return str(orig.diag.message_primary)  # type: ignore[attr-defined]


def in_sql(message: str) -> str:
    """The Python API's message as the SQL functions say it: after "semsim: ", no final stop."""
    return "semsim: " + message[0].lower() + message[1:].removesuffix(".")


@pytest.mark.parametrize("bad", ["[]", "null", '"bio"', "3", "[{}]"])
def test_a_filter_that_is_not_an_object_is_refused(admin, topics, bad: str) -> None:  # type: ignore[no-untyped-def]
    name, vector = topics
    kind = {"[": "array", "n": "null", '"': "string", "3": "number"}[bad[0]]
    for sql in (SEARCH.format(vector="vector"), SIMILAR, HYBRID.format(vector="vector")):
        message = refusal(admin, sql, c=name, v=vector, f=bad)
        assert message == f"semsim: filter must be a mapping of metadata key to value, got {kind}"


@pytest.mark.parametrize("bad", [{"": "bio"}, {"topic": []}])
def test_an_empty_key_or_list_is_refused_with_the_python_words(admin, store, topics, bad: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    name, vector = topics
    with pytest.raises(InvalidQuery) as python:
        store.search(name, "cells", 5, filter=bad)
    for sql in (SEARCH.format(vector="vector"), SIMILAR, HYBRID.format(vector="vector")):
        assert refusal(admin, sql, c=name, v=vector, f=json.dumps(bad)) == in_sql(str(python.value))


def test_no_filter_and_an_empty_object_filter_nothing(admin, topics) -> None:  # type: ignore[no-untyped-def]
    name, vector = topics
    with admin.connect() as conn:
        for sql in (SEARCH.format(vector="vector"), HYBRID.format(vector="vector")):
            assert (
                len(rows(conn, sql, c=name, v=vector, k=60))
                == len(rows(conn, sql, c=name, v=vector, k=60, f="{}"))
                == 60
            )


def test_hybrid_candidates_default_to_max_k_100_as_in_python(admin, store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """k 500 over 150 documents: every one of them, as the Python API gives (a fixed 100 per side
    gave at most 200, here 101: the 100 nearest and the one other document the words found)."""
    store.create_collection(collection_name)
    docs = [
        (f"d{i}", f"Item {i}: a {('red', 'blue', 'green')[i % 3]} thing." + (" Zebra." if i == 149 else ""))
        for i in range(150)
    ]
    store.upsert(collection_name, docs, progress=False)
    python = store.search(collection_name, "zebra", 500, mode="hybrid")
    vector = vector_literal(store.query_vector(collection_name, "zebra"))
    with admin.connect() as conn:
        default = rows(conn, HYBRID.format(vector="vector"), c=collection_name, v=vector, t="zebra", k=500)
        explicit = rows(
            conn,
            "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), :k, NULL, NULL)",
            c=collection_name,
            v=vector,
            t="zebra",
            k=500,
        )
    assert len(python) == len(default) == 150 and explicit == default
    assert {r[0] for r in default} == {h.external_id for h in python}


def test_hybrid_refuses_what_check_hybrid_and_the_encoder_refuse(admin, store, topics) -> None:  # type: ignore[no-untyped-def]
    name, vector = topics
    call = "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), :k, NULL, :n, 60, :dw, :lw)"

    def python(*args: Any) -> str:
        with pytest.raises(InvalidQuery) as caught:
            check_hybrid(*args)
        return in_sql(str(caught.value))

    message = refusal(admin, call, c=name, v=vector, k=50, n=10, dw=1.0, lw=1.0)
    assert message == python(50, 10, (1.0, 1.0))
    message = refusal(admin, call, c=name, v=vector, k=5, n=None, dw=0.0, lw=0.0)
    assert message == python(5, 100, (0.0, 0.0)).replace("(0.0, 0.0)", "(0, 0)")
    for empty in ("", "   "):
        with pytest.raises(InvalidQuery) as caught:
            store.search(name, empty, 5, mode="hybrid")
        assert refusal(admin, call, c=name, v=vector, t=empty, k=5, n=None, dw=1.0, lw=1.0) == in_sql(str(caught.value))
    with admin.connect() as conn:  # the bounds themselves answer
        assert len(rows(conn, call, c=name, v=vector, k=50, n=50, dw=0.0, lw=1.0)) == 50


@pytest.fixture()
def reader(admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A role with exactly the README's grants for a BI tool."""
    with temporary_role(admin, *README_READER_GRANTS) as role:
        yield role


def test_a_reader_with_the_readme_grants_calls_every_function_but_not_the_query_log(  # type: ignore[no-untyped-def]
    admin, reader, store, collection_name
) -> None:
    store.create_collection(collection_name, chunk=16, chunk_overlap=0)
    store.upsert(collection_name, [(f"d{i}", f"Cells divide, note {i}. " * 5) for i in range(6)], progress=False)
    vector = vector_literal(store.query_vector(collection_name, "cells"))
    with admin.connect() as conn:
        expected = [
            rows(conn, sql, c=collection_name, v=vector, k=3)
            for sql in (SEARCH.format(vector="vector"), SIMILAR, HYBRID.format(vector="vector"))
        ]
        conn.execute(sa.text(f"SET ROLE {reader}"))
        try:
            got = [
                rows(conn, sql, c=collection_name, v=vector, k=3)
                for sql in (SEARCH.format(vector="vector"), SIMILAR, HYBRID.format(vector="vector"))
            ]
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied for table query_log"):
                conn.execute(sa.text("SELECT count(*) FROM semsim.query_log"))
        finally:
            conn.execute(sa.text("RESET ROLE"))
    assert got == expected and all(len(r) == 3 for r in got)


def test_psql_searches_through_the_libpq_url_semsim_info_prints(capsys, settings, topics) -> None:  # type: ignore[no-untyped-def]
    """The README's recipe: the libpq URL from `semsim info`, the vector as a psql variable (:'vector')."""
    if not settings.embedded:
        pytest.skip("the password of a server of one's own is hidden in `semsim info`")
    from semsim_pg.server import _bin_dir

    name, vector = topics
    assert main(["-q", "info", "--json", "--no-model"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["libpq_url"].startswith("postgresql://") and "+psycopg" not in info["libpq_url"]
    script = f"SELECT external_id FROM semsim.search('{name}', :'vector', 3, '{{\"topic\": [\"bio\", \"geo\"]}}');\n"
    done = subprocess.run(
        [
            str(_bin_dir() / "psql"),
            info["libpq_url"],
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"vector={vector}",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = done.stdout.split()
    assert len(found) == 3 and all(int(i[1:]) % 3 in (0, 2) for i in found)
