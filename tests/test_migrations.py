"""Alembic migrations upgrade and downgrade cleanly, in a database of their own."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from semsim_pg.db import current_revision, downgrade, ensure_schema, get_engine, head_revision, upgrade
from semsim_pg.errors import SchemaNotInstalled
from tests.catalog import semsim_functions
from tests.roles import README_READER_GRANTS, temporary_role


@pytest.fixture()
def empty_database(engine):  # type: ignore[no-untyped-def]
    name = f"migr_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    fresh = get_engine(url=engine.url.set(database=name).render_as_string(hide_password=False))
    yield fresh
    fresh.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def tables(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'semsim'")).scalars())


def insert_old_collection(conn, encoder) -> int:  # type: ignore[no-untyped-def]
    """A collection named ``old`` written with the columns every revision has (as an old semsim did)."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO semsim.collections (name, model_name, dimension, metric, hnsw_m, hnsw_ef_construction)"
                " VALUES ('old', :model, :dim, 'cosine', 16, 64) RETURNING id"
            ),
            {"model": encoder.name, "dim": encoder.dimension},
        ).scalar_one()
    )


def test_upgrade_downgrade_upgrade(empty_database) -> None:  # type: ignore[no-untyped-def]
    engine = empty_database
    assert current_revision(engine) is None
    with pytest.raises(SchemaNotInstalled, match="semsim db upgrade"):
        ensure_schema(engine, migrate=False)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == {"collections", "documents", "embeddings", "query_log"}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        functions = set(
            conn.execute(
                sa.text(
                    "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace WHERE nspname = 'semsim'"
                )
            ).scalars()
        )
    assert {"search", "similar"} <= functions
    upgrade(engine)  # idempotent
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert tables(engine) == set()
    upgrade(engine)
    assert tables(engine) == {"collections", "documents", "embeddings", "query_log"}


def test_upgrade_to_lexical_search_keeps_rows_and_searches_them(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """A database filled before lexical search (migration 0005) keeps its rows, and lexical search finds them."""
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, "0002")
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    docs = [("a", "Glaciers retreat as summers warm."), ("b", "The bakery sells rye bread.")]
    with engine.begin() as conn:
        cid = insert_old_collection(conn, encoder)
        for external_id, text in docs:
            conn.execute(
                sa.text("INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, :x, :t)"),
                {"c": cid, "x": external_id, "t": text},
            )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.documents WHERE tsv IS NOT NULL")).scalar() == 2
    assert store.get_collection("old").text_search_config == "english"
    store.upsert("old", docs)  # the vectors (no text changed)
    assert [h.external_id for h in store.search("old", "glacier", 2, mode="lexical")] == ["a"]
    downgrade(engine, "0002")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.documents")).scalar() == 2
    upgrade(engine)
    assert [h.external_id for h in store.search("old", "bread", 2, mode="lexical")] == ["b"]


def test_upgrade_to_recorded_backends_keeps_old_vectors_as_unknown(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """Vectors from before migration 0006 stay searchable with an unknown backend, and
    `reembed --backend` re-encodes just them."""
    from semsim_pg.db import migrations_dir
    from semsim_pg.reembed import reembed
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore

    assert (migrations_dir() / "versions" / "0006_embedding_backend.py").is_file()  # this checkout's scripts
    engine = empty_database
    upgrade(engine, "0005")
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    texts = {"a": "Glaciers retreat as summers warm.", "b": "The bakery sells rye bread."}
    with engine.begin() as conn:
        cid = insert_old_collection(conn, encoder)
        for external_id, text in texts.items():
            doc = conn.execute(
                sa.text(
                    "INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, :x, :t)"
                    " RETURNING id, text_hash"
                ),
                {"c": cid, "x": external_id, "t": text},
            ).one()
            conn.execute(
                sa.text(
                    "INSERT INTO semsim.embeddings (document_id, model_name, collection_id, text_hash, embedding)"
                    " VALUES (:d, :m, :c, :h, CAST(:v AS vector))"
                ),
                {"d": doc[0], "m": encoder.name, "c": cid, "h": doc[1], "v": vector_literal(encoder.encode([text])[0])},
            )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert store.list_collections()[0].backends == {"unknown": 2}
    assert [h.external_id for h in store.search("old", "ice melting", 1, exact=True)] == ["a"]
    store.upsert("old", [("c", "A new sentence about trains.")])
    assert store.list_collections()[0].backends == {"torch": 1, "unknown": 2}
    assert reembed(store, "old", backend="torch", encoder=encoder, progress=False).encoded == 2
    assert store.list_collections()[0].backends == {"torch": 3}
    downgrade(engine, "0005")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.embeddings")).scalar() == 3
    upgrade(engine)
    assert store.list_collections()[0].backends == {"unknown": 3}


def test_upgrade_to_passages_keeps_vectors_as_passage_0(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """Vectors stored before passages (migration 0007) become passage 0 of their document: search
    finds them with the whole text as their passage, and ingesting the same texts encodes nothing."""
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, "0006")
    docs = [("a", "Glaciers retreat as summers warm."), ("b", "The bakery sells rye bread.")]
    with engine.begin() as conn:
        cid = insert_old_collection(conn, encoder)
        for (external_id, text), vector in zip(docs, encoder.encode([t for _, t in docs]), strict=True):
            conn.execute(
                sa.text(
                    "WITH d AS (INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, :x, :t)"
                    " RETURNING id, text_hash)"
                    " INSERT INTO semsim.embeddings (document_id, model_name, collection_id, text_hash, embedding)"
                    " SELECT d.id, :m, :c, d.text_hash, CAST(:v AS vector) FROM d"
                ),
                {"c": cid, "x": external_id, "t": text, "m": encoder.name, "v": vector_literal(vector)},
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT passage, passage_start, passage_end FROM semsim.embeddings")).all()
    assert sorted(tuple(r) for r in rows) == [(0, 0, None), (0, 0, None)]
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    coll = store.get_collection("old")
    assert coll.chunk_size is None and store.stale_count(coll) == 0
    before = encoder.encoded_count
    assert store.upsert("old", docs).encoded == 0
    assert encoder.encoded_count == before
    (hit,) = store.search("old", "melting ice", 1)
    assert (hit.external_id, hit.passage, hit.passage_start, hit.passage_end) == ("a", 0, 0, len(docs[0][1]))
    downgrade(engine, "0006")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.embeddings")).scalar() == 2
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM semsim.search('old', (SELECT embedding FROM semsim.embeddings LIMIT 1), 2)"
                )
            ).scalar()
            == 2
        )
    upgrade(engine)
    assert [h.external_id for h in store.search("old", "bread", 1)] == ["b"]


def doc_indexes(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = 'semsim' AND tablename = 'documents'")
            ).scalars()
        )


def test_words_index_becomes_one_per_collection_and_back(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """0008: the GIN index over every collection's words becomes one partial index per existing
    collection (new collections get theirs when created, lose it when dropped); lexical search
    reads it."""
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, "0007")
    with engine.begin() as conn:
        cid = insert_old_collection(conn, encoder)
        conn.execute(
            sa.text("INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, 'a', :t)"),
            {"c": cid, "t": "Glaciers retreat as summers warm."},
        )
    assert "ix_documents_tsv" in doc_indexes(engine) and f"documents_tsv_c{cid}" not in doc_indexes(engine)
    upgrade(engine)
    assert f"documents_tsv_c{cid}" in doc_indexes(engine) and "ix_documents_tsv" not in doc_indexes(engine)
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    (hit,) = store.search("old", "glaciers", 1, mode="lexical")
    assert hit.external_id == "a"
    # The lexical statement reads the collection's own index (its predicate is proven) for a word
    # few of many documents hold (table scans and plain index scans off: a test database is
    # small enough to scan).
    from semsim_pg import queries
    from semsim_pg.sql import vector_literal

    coll = store.get_collection("old")
    statement = queries.lexical_statement(coll, "glaciers", vector_literal(encoder.encode(["glaciers"])[0]), 1)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO semsim.documents (collection_id, external_id, text)"
                " SELECT :c, 'n' || i, 'note ' || i || ' on rivers and lakes' FROM generate_series(1, 3000) i"
            ),
            {"c": cid},
        )
        conn.execute(sa.text("ANALYZE semsim.documents"))
        conn.execute(sa.text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off"))
        plan = "\n".join(conn.execute(queries.Explain(statement, analyze=False)).scalars())
    assert f"Bitmap Index Scan on documents_tsv_c{cid}" in plan, plan
    new = store.create_collection("new")
    assert f"documents_tsv_c{new.id}" in doc_indexes(engine)
    store.drop_collection("new")
    assert f"documents_tsv_c{new.id}" not in doc_indexes(engine)
    downgrade(engine, "0007")
    assert doc_indexes(engine) >= {"ix_documents_tsv"} and not any(
        i.startswith("documents_tsv_c") for i in doc_indexes(engine)
    )
    upgrade(engine)
    assert f"documents_tsv_c{cid}" in doc_indexes(engine)


def test_hybrid_function_reads_plain_tsvectors_from_0009(empty_database) -> None:  # type: ignore[no-untyped-def]
    def source(engine) -> str:  # type: ignore[no-untyped-def]
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT prosrc FROM pg_proc WHERE proname = 'hybrid_search'")).scalar())

    engine = empty_database
    upgrade(engine)
    assert "candidates AS MATERIALIZED" in source(engine) and "d.tsv || ''::tsvector AS tsv" in source(engine)
    downgrade(engine, "0008")
    assert "candidates AS (" in source(engine) and "''::tsvector" not in source(engine)
    upgrade(engine)
    assert "d.tsv || ''::tsvector AS tsv" in source(engine)


def test_sql_function_checks_from_0010_answer_good_calls_as_before(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """0010 adds the Python API's checks to the SQL functions: good calls return exactly the rows
    of 0009's functions, bad ones an invalid_parameter_value; downgrade restores 0009's text."""
    from semsim_pg.db import migrations_dir
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore

    assert (migrations_dir() / "versions" / "0010_sql_function_checks.py").is_file()  # this checkout's scripts
    engine = empty_database
    upgrade(engine)  # the store needs the head revision; 0010 changes functions, not rows
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    docs = [
        ("a", "Glaciers retreat as summers warm and the ice melts."),
        ("b", "The bakery sells rye bread and sourdough every morning."),
        ("c", " ".join(["The train to Vienna leaves at ten from platform four."] * 8) + " Glaciers melt."),
    ]
    store.create_collection("whole")
    store.create_collection("split", chunk=16, chunk_overlap=0)
    store.upsert("whole", docs)
    store.upsert("split", docs)
    vector = vector_literal(encoder.encode(["melting ice"])[0])
    good = [
        "SELECT * FROM semsim.search(:c, CAST(:v AS vector), 2)",
        "SELECT * FROM semsim.search(:c, CAST(:v AS vector), 1000, '{}')",
        "SELECT * FROM semsim.similar(:c, 'a', 3)",
        "SELECT * FROM semsim.hybrid_search(:c, 'ice glaciers', CAST(:v AS vector), 3)",
        "SELECT * FROM semsim.hybrid_search(:c, 'bread', CAST(:v AS vector), 2, NULL, 1, 0, 0.5, 2)",
        "SELECT * FROM semsim.hybrid_search(:c, 'train', CAST(:v AS vector), 1000, NULL, 1000, 60, 0, 0)",
    ]

    def answers() -> list[list[tuple[object, ...]]]:
        with engine.connect() as conn:
            return [
                [tuple(r) for r in conn.execute(sa.text(sql), {"c": c, "v": vector})]
                for c in ("whole", "split")
                for sql in good
            ]

    def sources() -> dict[str, str]:
        with engine.connect() as conn:
            return {name: str(source) for name, (source,) in semsim_functions(conn, "p.prosrc").items()}

    def error(sql: str) -> tuple[str, str]:
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(sql), {"v": vector})
        orig = caught.value.orig
        return orig.sqlstate, orig.diag.message_primary  # type: ignore[union-attr]

    huge_k = "SELECT count(*) FROM semsim.search('whole', CAST(:v AS vector), 600000000)"
    negative_rrf = "SELECT * FROM semsim.hybrid_search('whole', 'ice', CAST(:v AS vector), 3, NULL, 100, -1)"
    downgrade(engine, "0009")
    before, before_sources = answers(), sources()
    assert all(before) and error(huge_k) == ("22003", "integer out of range")
    assert error(negative_rrf) == ("22012", "division by zero")
    upgrade(engine, "0010")  # 0011 changes the passage a split hit shows: tests below
    assert current_revision(engine) == "0010"
    assert answers() == before
    assert set(sources()) == set(before_sources)  # the same functions, by signature
    assert error(huge_k) == ("22023", "semsim: k must be a whole number from 1 to 1000, got 600000000")
    assert error(negative_rrf) == ("22023", "semsim: rrf_k must be a whole number of at least 0, got -1")
    downgrade(engine, "0009")
    assert sources() == before_sources
    assert answers() == before and error(huge_k)[0] == "22003"
    upgrade(engine)
    assert error(huge_k)[0] == "22023"


def test_hybrid_function_shows_the_passage_holding_the_words_from_0011(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """0011 changes only the passage a split collection's hybrid_search() hit shows (the one that
    holds the words that found it, not the nearest): an unsplit collection answers as under 0010,
    the signature stays, and downgrade restores 0010's text exactly."""
    from semsim_pg.db import migrations_dir
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore
    from tests.test_passages import DOCS, WORDS_LATE

    assert (migrations_dir() / "versions" / "0011_hybrid_function_passage_choice.py").is_file()
    engine = empty_database
    upgrade(engine)
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    docs = [("late", WORDS_LATE), *DOCS[1:]]
    store.create_collection("whole")
    store.create_collection("split", chunk=32, chunk_overlap=4)
    store.upsert("whole", docs)
    store.upsert("split", docs)
    query = "municipal politicians debating public finances QV-4471Z"
    vector = vector_literal(encoder.encode([query])[0])
    calls = [
        "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 4)",
        "SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 5, NULL, 2, 0, 0.5, 2)",
    ]

    def answers(collection: str) -> list[list[tuple[object, ...]]]:
        with engine.connect() as conn:
            return [
                [tuple(r) for r in conn.execute(sa.text(sql), {"c": collection, "t": query, "v": vector})]
                for sql in calls
            ]

    def function() -> tuple[str, str]:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT oid::regprocedure::text, prosrc FROM pg_proc WHERE proname = 'hybrid_search'")
            ).one()
        return row[0], row[1]

    def late_passage() -> str:
        with engine.connect() as conn:
            start, end = conn.execute(
                sa.text(
                    "SELECT passage_start, passage_end FROM semsim.hybrid_search('split', :t, CAST(:v AS vector), 4)"
                    " WHERE external_id = 'late'"
                ),
                {"t": query, "v": vector},
            ).one()
        return WORDS_LATE[start:end]

    downgrade(engine, "0011")  # 0012 refuses the second call (candidates below k)
    now = function()
    assert "QV-4471Z" in late_passage()
    whole, split = answers("whole"), answers("split")
    downgrade(engine, "0010")
    before = function()
    assert before[0] == now[0] and before[1] != now[1]  # the same signature, another statement
    assert "QV-4471Z" not in late_passage()  # 0010 showed the nearest passage
    assert answers("whole") == whole  # an unsplit collection's one passage: nothing changes
    assert answers("split") != split
    upgrade(engine, "0011")
    assert current_revision(engine) == "0011" and function() == now
    assert answers("split") == split
    downgrade(engine, "0010")
    assert function() == before  # restored exactly


def test_sql_functions_from_0012_pin_their_path_and_settings_and_read_lists(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """0012: the functions run under a search_path without pgvector's schema, leave the
    transaction's settings alone, read a filter list as "any of" and default candidates to
    max(k, 100); downgrade restores 0011's functions exactly (text, SET clauses, defaults)."""
    from semsim_pg.db import migrations_dir
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore

    assert (migrations_dir() / "versions" / "0012_sql_function_session.py").is_file()
    engine = empty_database
    upgrade(engine, "0011")

    def functions() -> dict[str, tuple[object, ...]]:
        with engine.connect() as conn:
            return semsim_functions(conn, "p.prosrc", "p.proconfig", "pg_get_function_arguments(p.oid)")

    at_0011 = functions()
    upgrade(engine)
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    store.create_collection("whole")
    store.upsert(
        "whole", [(f"d{i}", f"Note {i} about cells.", {"topic": ("bio", "sci", "geo")[i % 3]}) for i in range(120)]
    )
    vector = vector_literal(encoder.encode(["cells"])[0])
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        vs = conn.execute(
            sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
    calls = {
        "search": f"SELECT count(*) FROM semsim.search('whole', CAST(:v AS {vs}.vector), 3)",
        "similar": "SELECT count(*) FROM semsim.similar('whole', 'd1', 3)",
        "hybrid": f"SELECT count(*) FROM semsim.hybrid_search('whole', 'cells', CAST(:v AS {vs}.vector), 3)",
    }
    any_of = """SELECT count(*) FROM semsim.search('whole', CAST(:v AS vector), 100, '{"topic": ["bio", "sci"]}')"""
    k_500 = "SELECT count(*) FROM semsim.hybrid_search('whole', 'zebra', CAST(:v AS vector), 500)"  # no word found

    def behaviour() -> dict[str, object]:
        seen: dict[str, object] = {}
        admin.dispose()  # a fresh session: plpgsql caches what it resolved per session
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS bare"))
            conn.execute(sa.text("SET search_path = bare"))
            for name, sql in calls.items():
                try:
                    seen[name] = conn.execute(sa.text(sql), {"v": vector}).scalar()
                except sa.exc.ProgrammingError as exc:
                    seen[name] = type(exc.orig).__name__
            conn.execute(sa.text("RESET search_path"))
            conn.execute(sa.text("BEGIN"))
            seen["any of"] = conn.execute(sa.text(any_of), {"v": vector}).scalar()
            seen["k 500"] = conn.execute(sa.text(k_500), {"v": vector}).scalar()
            seen["after"] = conn.execute(sa.text("SHOW hnsw.iterative_scan")).scalar()
            conn.execute(sa.text("COMMIT"))
        return seen

    assert behaviour() == {"search": 3, "similar": 3, "hybrid": 3, "any of": 80, "k 500": 120, "after": "off"}
    at_head = functions()
    assert set(at_head) == set(at_0011) | {"semsim._filter_condition(jsonb)", "semsim.nfc(text)"}  # 0013's too
    pinned = [
        f
        for f in at_head
        if f.split("(")[0].replace('"', "")
        in ("semsim.search", "semsim.similar", "semsim._search", "semsim.hybrid_search")
    ]
    assert len(pinned) == 4 and all(f"search_path=pg_catalog, semsim, {vs}, pg_temp" in at_head[f][1] for f in pinned)  # type: ignore[operator]
    downgrade(engine, "0011")
    assert functions() == at_0011  # restored exactly
    assert behaviour() == {
        "search": "UndefinedFunction",  # vector_dims(public.vector) does not exist
        "similar": "UndefinedObject",  # type "vector" does not exist
        "hybrid": "UndefinedFunction",
        "any of": 0,  # a list matched only a list
        "k 500": 100,  # 100 candidates a side
        "after": "relaxed_order",  # set_config(..., true) lasted the transaction
    }
    upgrade(engine)
    assert functions() == at_head
    admin.dispose()


def test_a_schema_newer_than_this_semsim_is_named_and_never_migrated(empty_database, capsys, settings) -> None:  # type: ignore[no-untyped-def]
    """A newer semsim migrated the database to a revision this one does not know: every command
    (read-only ones too) says so in one line, and nothing tries to migrate from it."""
    from semsim_pg.cli import main
    from semsim_pg.errors import SchemaTooNew
    from semsim_pg.settings import configure

    engine = empty_database
    upgrade(engine)
    head = head_revision()
    newer = f"{int(head) + 1:04d}"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE public.semsim_alembic_version SET version_num = :v"), {"v": newer})
    expected = f"the database's schema {newer} is newer than this semsim (head {head}): upgrade semsim"
    for migrate in (False, True):
        with pytest.raises(SchemaTooNew, match=re.escape(expected)):
            ensure_schema(engine, migrate=migrate)
    with pytest.raises(SchemaTooNew, match=re.escape(expected)):
        upgrade(engine)
    configure(settings.replace(database_url=engine.url.render_as_string(hide_password=False)))
    try:
        results = {args: (main(["-q", *args]), *capsys.readouterr()) for args in (("collections",), ("db", "upgrade"))}
        assert main(["-q", "db", "current"]) == 0
        current = capsys.readouterr().out
    finally:
        configure(settings)
    for args, (code, out, err) in results.items():
        assert code == 1 and out == "" and err.count("\n") == 1 and expected in err, (args, err)
    assert current == f"{newer} (head: {head}; newer than this semsim: upgrade semsim (pip install -U semsim))\n"
    assert current_revision(engine) == newer  # untouched


def test_downgrade_past_0007_marks_split_texts_stale(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """Passage 0 of a split text stands for its first passage only: after a downgrade (and an
    upgrade back) it must not pass for the whole text's vector. A text in one passage keeps its."""
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine)
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    long_text = " ".join(f"Sentence {i} of a long note about cats and the budget." for i in range(12))
    store.create_collection("split", chunk=32, chunk_overlap=4)
    store.upsert("split", [("long", long_text), ("short", "A cat naps.")], progress=False)
    downgrade(engine, "0006")

    def stale() -> set[str]:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text(
                        "SELECT d.external_id FROM semsim.documents d JOIN semsim.embeddings e ON e.document_id = d.id"
                        " WHERE e.text_hash <> d.text_hash"
                    )
                ).scalars()
            )

    assert stale() == {"long"}
    with engine.connect() as conn:  # one vector per document, still searchable meanwhile
        assert conn.execute(sa.text("SELECT count(*) FROM semsim.embeddings")).scalar() == 2
    upgrade(engine)
    assert stale() == {"long"} and store.stale_count("split") == 1
    assert store.reconcile("split", progress=False) == 1
    assert stale() == set() and store.stale_count("split") == 0


def test_cli_downgrade_says_what_it_drops_and_wants_yes(empty_database, capsys, settings) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli import main
    from semsim_pg.cli.main import build_parser
    from semsim_pg.settings import configure

    engine = empty_database
    upgrade(engine)
    head = head_revision()

    def run(*args: str) -> tuple[int, str, str]:
        configure(settings.replace(database_url=engine.url.render_as_string(hide_password=False)))
        try:
            code = main(["-q", "db", "downgrade", *args])
        finally:
            configure(settings)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("0002")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    for revision, lost in (
        ("0007", "passage settings"),
        ("0006", "backend"),
        ("0005", "language"),
        ("0004", "query log"),
    ):
        assert lost in err and f"({revision})" in err, (revision, err)
    assert "--yes" in err and current_revision(engine) == head  # nothing was changed
    code, out, err = run("head-4")  # a form Alembic takes but semsim cannot judge: refused too
    assert code == 1 and "Cannot tell what a downgrade to 'head-4' drops" in err and current_revision(engine) == head
    code, out, err = run("-1")  # the head's downgrade loses nothing: no --yes needed
    from alembic.script import ScriptDirectory

    from semsim_pg.db import _alembic_config

    previous = ScriptDirectory.from_config(_alembic_config()).get_revision(head).down_revision
    assert code == 0 and current_revision(engine) == previous and "dropped" not in out, err
    code, out, err = run("0002", "--yes")
    assert code == 0 and current_revision(engine) == "0002" and "dropped: " in out and "query log (0004)" in out, err
    code, out, err = run("base")
    assert code == 1 and "every collection" in err and current_revision(engine) == "0002", err
    code, out, err = run("base", "--yes")
    assert code == 0 and current_revision(engine) is None, err

    # the help names every revision whose downgrade loses something
    lossy = [
        s.revision
        for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
        if hasattr(s.module, "DOWNGRADE_LOSES")
    ]
    assert sorted(lossy) == ["0001", "0004", "0005", "0006", "0007"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["db", "downgrade", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert all(rev in shown for rev in lossy[:-1]) and "'base'" in shown and "--yes" in shown


def test_0012_keeps_a_hardened_sites_reader_and_sets_no_hnsw_parameter_on_its_functions(  # type: ignore[no-untyped-def]
    empty_database, encoder
) -> None:
    """A site that revoked EXECUTE from PUBLIC and granted its reader the functions at 0011: after
    the upgrade the reader still searches (the new filter helper gets _search's grants). And no
    function carries an hnsw.* SET clause: a pg_dump of such a function restores for a superuser
    only (the parameter is unknown until pgvector's library loads), so a schema owner lost them."""
    from semsim_pg.sql import vector_literal
    from semsim_pg.store import DocumentStore

    engine = empty_database
    upgrade(engine, "0011")
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    hardened = (
        "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",  # this database's
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA semsim FROM PUBLIC",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA semsim TO {role}",
        *README_READER_GRANTS,
    )
    try:
        with temporary_role(admin, *hardened) as role:
            upgrade(engine)
            store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
            store.create_collection("notes")
            docs = [(f"d{i}", f"Note {i} about cells.", {"topic": ("bio", "sci")[i % 2]}) for i in range(10)]
            store.upsert("notes", docs)
            vector = vector_literal(encoder.encode(["cells"])[0])
            with admin.connect() as conn:
                conn.execute(sa.text(f"SET ROLE {role}"))
                found = conn.execute(
                    sa.text(
                        """SELECT count(*) FROM semsim.search('notes', CAST(:v AS vector), 10, '{"topic": ["bio"]}')"""
                    ),
                    {"v": vector},
                ).scalar()
                # 0013's semsim.nfc, new since the default privileges were revoked, is callable too
                hybrid = conn.execute(
                    sa.text("SELECT count(*) FROM semsim.hybrid_search('notes', 'cellulés', CAST(:v AS vector), 3)"),
                    {"v": vector},
                ).scalar()
                conn.execute(sa.text("RESET ROLE"))
                settings = conn.execute(
                    sa.text(
                        "SELECT s FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, unnest(p.proconfig) s"
                        " WHERE n.nspname = 'semsim'"
                    )
                ).scalars()
                assert not [s for s in settings if s.startswith("hnsw.")]
            assert found == 5 and hybrid == 3
    finally:
        admin.dispose()
