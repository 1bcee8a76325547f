"""Issue 14, item 6 leftovers: a database lost during a CLI ingest, and a Django query with a lone surrogate."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa


def test_a_database_lost_during_a_cli_ingest_is_one_line_naming_what_was_committed(  # type: ignore[no-untyped-def]
    store, collection_name, tmp_path: Path, monkeypatch, capsys
) -> None:
    from semsim_pg.cli.main import main
    from semsim_pg.store import ingest

    write_batch = ingest.write_batch
    calls = []

    def then_lose_the_server(store, batch):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # the server ends this session, as a killed or restarted server does
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return write_batch(store, batch)

    monkeypatch.setattr(ingest, "write_batch", then_lose_the_server)
    source = tmp_path / "docs.txt"
    source.write_text("".join(f"sentence number {i}\n" for i in range(6)), encoding="utf-8")
    assert main(["-q", "ingest", str(source), "-c", collection_name, "--batch-size", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "lost" in err and "first 2 documents were committed" in err and "run the same ingest again" in err
    assert store.count(collection_name) == 2
    # ... and running it again finishes the job, skipping what was stored.
    monkeypatch.setattr(ingest, "write_batch", write_batch)
    assert main(["-q", "ingest", str(source), "-c", collection_name, "--batch-size", "2", "--json"]) == 0
    assert store.count(collection_name) == 6
    assert '"unchanged": 2' in capsys.readouterr().out


@pytest.mark.django_db
def test_django_search_with_a_lone_surrogate_is_invalid_query() -> None:
    from semsim_pg.errors import InvalidQuery
    from tests.djangoapp.models import Article

    with pytest.raises(InvalidQuery, match="not valid UTF-8"):
        Article.objects.semantic_search("caf\udce9 opening hours", k=3)
    with pytest.raises(InvalidQuery, match="NUL"):
        Article.objects.semantic_search("opening\x00hours", k=3)


def test_an_index_build_that_fails_after_the_load_says_every_document_is_stored(  # type: ignore[no-untyped-def]
    store, collection_name, monkeypatch
) -> None:
    """A load whose batches all committed and whose deferred HNSW build then failed (a full disk, a
    server restarted): it said "the first N documents were committed, the rest were not"."""
    from semsim_pg.errors import DatabaseUnavailable

    build_index = store.build_index

    def fail_for_lack_of_space(name, **kwargs):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(store, "build_index", build_index)
        cause = Exception("could not extend file: No space left on device")
        raise sa.exc.OperationalError("CREATE INDEX", {}, cause)

    monkeypatch.setattr(store, "build_index", fail_for_lack_of_space)
    store.create_collection(collection_name)
    docs = [(f"d{i}", f"sentence number {i}", {}) for i in range(6)]
    with pytest.raises(DatabaseUnavailable) as error:
        store.upsert(collection_name, docs, defer_index=True, batch_size=2)
    message = str(error.value)
    assert "Building the HNSW index" in message and "the 6 documents loaded are stored" in message
    assert f"semsim index rebuild -c {collection_name}" in message and "rest were not" not in message
    assert store.count(collection_name) == 6
    store.build_index(collection_name)
    assert store.index_state(collection_name) == "valid"


def test_sigterm_during_a_cli_ingest_runs_the_ctrl_c_cleanup(  # type: ignore[no-untyped-def]
    store, collection_name, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`docker stop`, systemd and Kubernetes send SIGTERM: Python's default ends the process with no
    cleanup, so an ingest that had dropped its HNSW index for the load left the collection without
    one. It now runs what Ctrl-C runs: the batches written stay, the index is built, exit 143."""
    import os
    import signal

    from semsim_pg.cli.main import main
    from semsim_pg.store import ingest

    write_batch = ingest.write_batch
    calls = []

    def then_terminate(store, batch):  # type: ignore[no-untyped-def]
        result = write_batch(store, batch)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled in this (the main) thread, as kill's would be
        return result

    monkeypatch.setattr(ingest, "write_batch", then_terminate)
    monkeypatch.setattr(ingest, "DEFER_INDEX_MIN_ROWS", 4)  # so this small load drops the index first
    source = tmp_path / "docs.txt"
    source.write_text("".join(f"sentence number {i}\n" for i in range(40)), encoding="utf-8")
    before = signal.getsignal(signal.SIGTERM)
    assert main(["-q", "ingest", str(source), "-c", collection_name, "--batch-size", "2"]) == 143
    assert capsys.readouterr().err.strip() == "semsim: terminated"
    assert signal.getsignal(signal.SIGTERM) is before  # restored for whoever called main()
    assert 4 <= store.count(collection_name) < 40  # whole batches, written before the signal
    assert store.index_state(collection_name) == "valid"
