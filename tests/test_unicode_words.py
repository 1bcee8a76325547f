"""Lexical search compares words after Unicode NFC normalisation: a text stored as NFD ("cafe" +
a combining accent, as macOS and some PDFs write it) is found by the NFC query a keyboard types,
and the reverse, in every mode that reads words, in the SQL functions and in split documents;
migration 0013 recomputes the words stored before it; a database that cannot normalise keeps working."""

from __future__ import annotations

import unicodedata
import uuid

import pytest
import sqlalchemy as sa

from semsim_pg.db import current_revision, downgrade, get_engine, head_revision, migrations_dir, upgrade
from semsim_pg.sql import vector_literal
from tests.catalog import semsim_functions


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


#: one document stored decomposed, one composed, one without accents
DOCS = [
    ("decomposed", nfd("Our café by the station serves espresso from seven.")),
    ("composed", nfc("Naïve questions are welcome at the Zürich meeting.")),
    ("plain", "Trains leave from platform four every hour."),
]
#: a long text (split into passages) whose last passage alone holds the accented word
LONG = nfd(
    "The city council met on Monday to discuss the new budget for road repairs. "
    "Several members asked for more money for bicycle lanes in the old town. "
    "The mayor promised a decision before the summer holidays begin. "
    "Residents complained about potholes on the main street near the station. "
    "Dessert news, unrelated to all that: the crème brûlée of the corner shop won a prize."
)
#: by meaning the council passage is nearest; by words only the last passage holds "brûlée"
SPLIT_QUERY = nfc("municipal politicians debating public finances brûlée")


@pytest.fixture()
def spelled(store, collection_name):  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, DOCS)
    return collection_name


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
@pytest.mark.parametrize(("query", "found"), [(nfc("café"), "decomposed"), (nfd("naïve Zürich"), "composed")])
def test_either_spelling_finds_the_other(store, spelled, mode, query, found) -> None:  # type: ignore[no-untyped-def]
    hits = store.search(spelled, query, 3, mode=mode)
    by_words = [h.external_id for h in hits if h.lexical_rank is not None]
    assert by_words == [found], (mode, [(h.external_id, h.lexical_rank) for h in hits])
    assert next(h for h in hits if h.external_id == found).lexical_score > 0


def test_stored_text_stays_as_written(store, spelled, engine) -> None:  # type: ignore[no-untyped-def]
    """Only the words are normalised: the text (and its hash) are the bytes the user wrote."""
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.text(
                    "SELECT d.external_id, d.text FROM semsim.documents d JOIN semsim.collections c"
                    " ON c.id = d.collection_id WHERE c.name = :c"
                ),
                {"c": spelled},
            ).all()
        )
    assert stored == dict(DOCS)
    assert "cafe\u0301" in stored["decomposed"] and "\u00fc" in stored["composed"]  # two spellings
    hit = store.search(spelled, "café", 1, mode="lexical")[0]
    assert hit.text == DOCS[0][1]


def test_sql_functions_normalise_the_query(store, spelled, engine, encoder) -> None:  # type: ignore[no-untyped-def]
    vector = vector_literal(encoder.encode(["café"])[0])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT external_id, lexical_rank FROM semsim.hybrid_search(:c, :q, CAST(:v AS vector), 3)"),
            {"c": spelled, "q": nfc("café"), "v": vector},
        ).all()
        assert [r.external_id for r in rows if r.lexical_rank is not None] == ["decomposed"]
        for query, found in ((nfc("café"), "decomposed"), (nfd("Zürich"), "composed")):
            matched = conn.execute(
                sa.text(
                    "SELECT d.external_id FROM semsim.documents d JOIN semsim.collections c ON c.id = d.collection_id"
                    " WHERE c.name = :c AND d.tsv @@ semsim.any_words_query(c.text_search_config, :q)"
                ),
                {"c": spelled, "q": query},
            ).scalars()
            assert list(matched) == [found], query


def test_words_stay_normalised_when_the_language_changes(store, spelled) -> None:  # type: ignore[no-untyped-def]
    store.set_text_search_config(spelled, "simple")  # the collections' trigger recomputes every tsv
    hits = store.search(spelled, nfc("café"), 3, mode="lexical")
    assert [h.external_id for h in hits] == ["decomposed"]


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_a_split_document_shows_the_passage_holding_the_other_spelling(store, collection_name, mode) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, [("long", LONG), *DOCS])
    nearest = store.search(collection_name, SPLIT_QUERY, 1)[0]
    assert nearest.external_id == "long" and "brûlée" not in nfc(nearest.passage_text)  # the premise
    hit = store.search(collection_name, SPLIT_QUERY, 4, mode=mode)[0]
    assert hit.external_id == "long" and hit.lexical_rank == 1, (mode, hit)
    assert "brûlée" in nfc(hit.passage_text) and hit.passage_text == LONG[hit.passage_start : hit.passage_end]


def test_split_hybrid_function_shows_the_passage_holding_the_other_spelling(store, collection_name, engine) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, [("long", LONG), *DOCS])
    vector = vector_literal(store.query_vector(collection_name, SPLIT_QUERY))
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM semsim.hybrid_search(:c, :q, CAST(:v AS vector), 4)"),
            {"c": collection_name, "q": SPLIT_QUERY, "v": vector},
        ).first()
    assert row is not None and row.external_id == "long" and row.lexical_rank == 1
    assert "brûlée" in nfc(LONG[row.passage_start : row.passage_end])


# the upgrade ---------------------------------------------------------------------------------------
def _database(engine, **options: str):  # type: ignore[no-untyped-def]
    """A new database (dropped after the test) on the suite's server; ``options`` of CREATE DATABASE."""
    name = f"nfc_{uuid.uuid4().hex[:8]}"
    extra = "".join(f" {key} '{value}'" for key, value in options.items())
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{extra}'))
    fresh = get_engine(url=engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield fresh
    finally:
        fresh.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def empty_database(engine):  # type: ignore[no-untyped-def]
    yield from _database(engine)


@pytest.fixture()
def latin1_database(engine):  # type: ignore[no-untyped-def]
    yield from _database(engine, TEMPLATE="template0", ENCODING="LATIN1", LC_COLLATE="C", LC_CTYPE="C")


def test_upgrade_recomputes_the_words_of_texts_stored_decomposed(empty_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """A document stored as NFD before 0013 is found by the NFC query after the upgrade (and the SQL
    function finds it too); the downgrade restores 0012's functions and words exactly."""
    from semsim_pg.store import DocumentStore

    assert (migrations_dir() / "versions" / "0013_words_nfc.py").is_file()  # this checkout's scripts
    engine = empty_database
    upgrade(engine, "0012")
    with engine.begin() as conn:
        cid = conn.execute(
            sa.text(
                "INSERT INTO semsim.collections (name, model_name, dimension, metric, hnsw_m, hnsw_ef_construction)"
                " VALUES ('old', :model, :dim, 'cosine', 16, 64) RETURNING id"
            ),
            {"model": encoder.name, "dim": encoder.dimension},
        ).scalar_one()
        for external_id, text in DOCS:
            conn.execute(
                sa.text("INSERT INTO semsim.documents (collection_id, external_id, text) VALUES (:c, :x, :t)"),
                {"c": cid, "x": external_id, "t": text},
            )

    def state() -> tuple[dict[str, tuple[object, ...]], dict[str, str], list[str]]:
        with engine.connect() as conn:
            functions = semsim_functions(conn, "p.prosrc", "p.proconfig", "p.proacl::text")
            words = dict(conn.execute(sa.text("SELECT external_id, tsv::text FROM semsim.documents")).all())
            found = conn.execute(
                sa.text(
                    "SELECT d.external_id FROM semsim.documents d"
                    " WHERE d.tsv @@ semsim.any_words_query('english', :q) ORDER BY 1"
                ),
                {"q": nfc("café naïve")},
            ).scalars()
            return functions, words, list(found)

    before = state()
    assert before[2] == ["composed"]  # the premise: 0012 misses the decomposed café
    upgrade(engine)
    assert current_revision(engine) == head_revision()  # 0013 and any revision after it
    after = state()
    assert after[2] == ["composed", "decomposed"]
    assert after[1]["plain"] == before[1]["plain"] and after[1]["composed"] == before[1]["composed"]
    assert "semsim.nfc(text)" in after[0]
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    store.upsert("old", DOCS)  # the vectors (no text changed)
    assert [h.external_id for h in store.search("old", "café", 3, mode="lexical")] == ["decomposed"]
    hybrid = store.search("old", nfd("café"), 3, mode="hybrid")
    assert [h.external_id for h in hybrid if h.lexical_rank is not None] == ["decomposed"]
    downgrade(engine, "0012")
    assert state() == before  # functions (text, search_path, grants) and words as 0012 left them
    upgrade(engine)
    assert state() == after


def test_a_database_that_cannot_normalise_keeps_its_words_as_written(latin1_database, encoder) -> None:  # type: ignore[no-untyped-def]
    """normalize() needs a UTF8 database: in another encoding semsim.nfc gives the text back, and
    the upgrade, ingest and lexical search work as before."""
    from semsim_pg.store import DocumentStore

    engine = latin1_database
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW server_encoding")).scalar() == "LATIN1"
        assert conn.execute(sa.text("SELECT semsim.nfc('café')")).scalar() == "café"
        body = conn.execute(sa.text("SELECT prosrc FROM pg_proc WHERE oid = 'semsim.nfc(text)'::regprocedure"))
        assert "normalize" not in body.scalar()
    store = DocumentStore(url=engine.url.render_as_string(hide_password=False), encoder=encoder, migrate=False)
    store.create_collection("latin")
    store.upsert("latin", [("a", "Le café de la gare ouvre à sept heures."), ("b", "Trains leave every hour.")])
    assert [h.external_id for h in store.search("latin", "café", 2, mode="lexical")] == ["a"]
    assert [h.external_id for h in store.search("latin", "café", 2, mode="hybrid") if h.lexical_rank] == ["a"]
    downgrade(engine, "0012")
    upgrade(engine)
