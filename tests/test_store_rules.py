"""One rule per input, whatever the path: ids repeated across batches, ids given as numbers,
arguments of the wrong type, and rows PostgreSQL refuses in the middle of an ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import DatabaseError, Document, InvalidInput
from semsim_pg.cli import main


def unit_vectors(n: int, dimension: int = 384) -> np.ndarray:  # type: ignore[type-arg]
    vectors = np.random.default_rng(0).normal(size=(n, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("batch_size", [1, 512])
def test_an_id_repeated_far_apart_in_a_list_is_refused_before_anything_is_written(  # type: ignore[no-untyped-def]
    store, collection_name, batch_size
) -> None:
    store.create_collection(collection_name)
    # #0 and #599 of 600: in two batches of the default size, the second used to win silently
    docs = [Document("dup" if i in (0, 599) else f"n{i}", f"text number {i}") for i in range(600)]
    with pytest.raises(InvalidInput, match=r"'dup' appears twice \(items #0 and #599\)"):
        store.upsert(collection_name, docs, vectors=unit_vectors(600), batch_size=batch_size)
    assert store.count(collection_name) == 0


def test_an_id_repeated_in_a_stream_is_refused_saying_which_batches_committed(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    texts = ["The cat sleeps", "Rates went up", "A dog barks", "Snow in April", "Trains are late", "Tea is hot"]
    ids = ["dup", "b", "c", "d", "dup", "f"]  # #0 and #4: the third batch of two

    def stream() -> Iterator[Document]:
        yield from (Document(i, t) for i, t in zip(ids, texts, strict=True))

    store.create_collection(collection_name)
    with pytest.raises(
        InvalidInput,
        match=r"'dup' appears twice \(items #0 and #4\).*Nothing of its batch was written; "
        r"the 4 documents before it were \(batches 1 to 2\)",
    ):
        store.upsert(collection_name, stream(), batch_size=2)
    assert store.count(collection_name) == 4
    assert store.get(collection_name, "dup").text == "The cat sleeps"  # not replaced by #4's


@pytest.fixture()
def refusing_database(store):  # type: ignore[no-untyped-def]
    """semsim.documents with a user's CHECK constraint (no id 'bad') and BEFORE INSERT trigger
    (raising for the id 'boom'), removed afterwards."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE semsim.documents ADD CONSTRAINT semsim_test_no_bad CHECK (external_id <> 'bad') NOT VALID"
        )
        conn.exec_driver_sql(
            "CREATE FUNCTION public.semsim_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.external_id = 'boom' THEN RAISE EXCEPTION 'boom is not welcome here'; END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER semsim_test_refuse BEFORE INSERT ON semsim.documents "
            "FOR EACH ROW EXECUTE FUNCTION public.semsim_test_refuse()"
        )
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER semsim_test_refuse ON semsim.documents")
            conn.exec_driver_sql("DROP FUNCTION public.semsim_test_refuse()")
            conn.exec_driver_sql("ALTER TABLE semsim.documents DROP CONSTRAINT semsim_test_no_bad")


def test_a_row_postgresql_refuses_stops_the_ingest_saying_what_was_committed(  # type: ignore[no-untyped-def]
    store, collection_name, refusing_database
) -> None:
    store.create_collection(collection_name)
    docs = [("a", "The cat sleeps"), ("b", "Rates went up"), ("c", "A dog barks"), ("bad", "Snow in April")]
    with pytest.raises(DatabaseError) as refused:
        store.upsert(collection_name, docs, batch_size=2, vectors=unit_vectors(4))
    message = str(refused.value)
    assert "\n" not in message
    assert "batch 2 (documents #2 to #3, ids 'c' to 'bad')" in message
    assert 'violates check constraint "semsim_test_no_bad"' in message
    assert "Nothing of that batch was written; the 2 documents before it were (batch 1)" in message
    assert isinstance(refused.value.__cause__, sa.exc.IntegrityError)  # the driver's error stays reachable
    assert store.count(collection_name) == 2  # batch 1 committed, nothing of batch 2 ('c' neither)
    with pytest.raises(
        DatabaseError, match=r"ids 'boom' to 'x'\): boom is not welcome here \(SQLSTATE P0001\)\. Nothing was written\."
    ):
        store.upsert(collection_name, [("boom", "A trigger says no"), ("x", "fine")], vectors=unit_vectors(2))
    assert store.count(collection_name) == 2


def test_cli_ingest_refused_by_a_trigger_is_one_line(  # type: ignore[no-untyped-def]
    store, collection_name, refusing_database, tmp_path, capsys
) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"id": "okA", "text": "The cat sleeps"}, {"id": "boom", "text": "A trigger says no"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["-q", "ingest", str(path), "-c", collection_name, "--batch-size", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    line = err.splitlines()[-1]  # one line (a model's loading bar may come before it)
    assert line.startswith("semsim: error: PostgreSQL refused a document of the ingest"), err
    assert "batch 2 (documents #1 to #1, id 'boom'): boom is not welcome here" in line
    assert "the 1 documents before it were (batch 1)" in line
    assert store.count(collection_name) == 1


def test_ids_given_as_numbers_are_found_as_they_were_stored(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    store.upsert(collection_name, [Document(42, "forty two apples"), (43, "forty three pears")])
    assert store.get(collection_name, 42).external_id == "42"
    assert [hit.external_id for hit in store.similar(collection_name, 42, k=1)] == ["43"]
    assert store.delete(collection_name, [42]) == 1
    assert store.count(collection_name) == 1


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda s, c: s.get(c, None), "document id must be a text or a whole number"),
        (lambda s, c: s.get(c, 4.2), "document id must be a text or a whole number"),
        (lambda s, c: s.similar(c, None), "document id must be a text or a whole number"),
        (lambda s, c: s.similar(c, True), "document id must be a text or a whole number"),
        (lambda s, c: s.delete(c, None), "delete"),
        (lambda s, c: s.delete(c, ["ok", None]), "document id #1 of delete"),
        (lambda s, c: s.get(None, "x"), "collection"),
        (lambda s, c: s.similar(42, "x"), "collection"),
        (lambda s, c: s.search(None, "x"), "collection"),
        (lambda s, c: s.delete(None, ["x"]), "collection"),
        (lambda s, c: s.drop_collection(None), "collection"),
    ],
)
def test_an_id_or_collection_of_another_type_is_a_one_line_invalid_input(  # type: ignore[no-untyped-def]
    store, collection_name, call, argument
) -> None:
    store.create_collection(collection_name)
    store.upsert(collection_name, [("ok", "a stored text")])
    with pytest.raises(InvalidInput, match=argument) as refused:
        call(store, collection_name)
    assert "\n" not in str(refused.value)
    assert store.count(collection_name) == 1


def test_cli_any_statement_postgresql_refuses_is_one_line(store, collection_name, capsys) -> None:  # type: ignore[no-untyped-def]
    """Not only an ingest: a drop a trigger of the user's refuses is one line too, not a traceback."""
    store.create_collection(collection_name)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION public.semsim_test_keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'collections are kept by the test'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER semsim_test_keep BEFORE DELETE ON semsim.collections "
            "FOR EACH ROW EXECUTE FUNCTION public.semsim_test_keep()"
        )
    try:
        code = main(["-q", "collections", "--drop", collection_name])
        err = capsys.readouterr().err
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER semsim_test_keep ON semsim.collections")
            conn.exec_driver_sql("DROP FUNCTION public.semsim_test_keep()")
    assert code == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(
        "semsim: error: PostgreSQL refused the statement: collections are kept by the test (SQLSTATE P0001)"
    )
    assert store.get_collection(collection_name).name == collection_name
