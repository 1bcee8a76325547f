"""The `semsim` command line, run in-process against the session's database and model."""

from __future__ import annotations

import json

import pytest

from semsim_pg.cli import main

DOCS = [
    {"id": "cat", "text": "The dog chases the cat", "topic": "animals", "year": 2020},
    {"id": "feline", "text": "The feline is being pursued by the canine", "topic": "animals", "year": 2021},
    {"id": "rates", "text": "The central bank raised interest rates", "topic": "finance", "year": 2020},
    {"id": "login", "text": "How do I reset my password?", "topic": "tech", "year": 2022},
]


@pytest.fixture()
def docs_file(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(["-q", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_search_similar(capsys, store, collection_name, docs_file) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "ingest", str(docs_file), "-c", collection_name, "--json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["inserted"], summary["encoded"], summary["unchanged"]) == (4, 4, 0)

    code, out, _ = run(capsys, "ingest", str(docs_file), "-c", collection_name, "--json")
    summary = json.loads(out)
    assert (summary["inserted"], summary["encoded"], summary["unchanged"]) == (0, 0, 4)

    code, out, _ = run(capsys, "search", "a puppy chasing a kitten", "-c", collection_name, "-k", "2", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and {h["external_id"] for h in hits} == {"cat", "feline"}
    assert hits[0]["metadata"]["topic"] == "animals"

    # year=2020 matches the number 2020 stored in JSON
    code, out, _ = run(capsys, "search", "anything", "-c", collection_name, "--filter", "year=2020", "--json")
    assert {h["external_id"] for h in json.loads(out)["hits"]} == {"cat", "rates"}

    code, out, _ = run(capsys, "search", "pets", "-c", collection_name, "-k", "2")
    assert code == 0 and "cat" in out and "0." in out

    code, out, _ = run(capsys, "similar", "cat", "-c", collection_name, "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["external_id"] == "feline"

    code, out, _ = run(capsys, "search", "dogs", "-c", collection_name, "--explain")
    assert code == 0 and "Limit" in out

    code, out, _ = run(capsys, "collections", "--json")
    listed = {c["name"]: c for c in json.loads(out)}
    assert listed[collection_name]["documents"] == 4 and listed[collection_name]["embedded"] == 4


def test_batch_search_prints_one_json_line_per_query(capsys, store, collection_name, docs_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    queries = tmp_path / "queries.txt"
    queries.write_text("a dog chases a cat\n\nforgot my password\n")
    code, out, _ = run(capsys, "search", "--queries", str(queries), "-c", collection_name, "-k", "1", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["query"] for line in lines] == ["a dog chases a cat", "forgot my password"]
    assert [line["hits"][0]["external_id"] for line in lines] == ["cat", "login"]


def test_errors_are_one_line_and_nonzero(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "broken\n')
    code, _, err = run(capsys, "ingest", str(bad), "-c", collection_name)
    assert code == 1 and "line 2" in err and "Traceback" not in err
    # nothing was written: the collection does not even exist
    code, _, err = run(capsys, "search", "x", "-c", collection_name)
    assert code == 1 and "No collection named" in err and "Traceback" not in err

    code, _, err = run(capsys, "search", "x", "-c", collection_name, "--filter", "novalue")
    assert code == 1 and "KEY=VALUE" in err


def test_info_and_db_commands(capsys, engine) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    code, out, _ = run(capsys, "info", "--json", "--no-model")
    info = json.loads(out)
    with engine.connect() as conn:
        installed = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    assert code == 0 and info["pgvector"] == installed and info["schema_revision"] == info["schema_head"]
    with engine.connect() as conn:
        hnsw = conn.execute(
            sa.text(
                "SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_stat_user_indexes"
                " WHERE schemaname = 'semsim' AND indexrelname LIKE 'embeddings\\_hnsw\\_%'"
            )
        ).scalar()
    assert info["shared_buffers_bytes"] >= 128 << 20 and info["hnsw_index_bytes"] == hnsw
    assert info["pg_prewarm"] is False  # the embedded server has no pg_prewarm
    code, out, _ = run(capsys, "info", "--no-model")
    assert code == 0 and "shared_buffers" in out and "HNSW indexes" in out
    code, out, _ = run(capsys, "db", "current")
    assert code == 0 and "up to date" in out


def test_commands_without_a_model_run_without_the_encoders_extra(  # type: ignore[no-untyped-def]
    engine, store, encoder, collection_name, tmp_path
) -> None:
    """A bare `pip install semsim` (no [encoders]: no torch, transformers, sentence-transformers):
    `semsim --version`, `db current` and `info --no-model` run against a URL; a command that
    needs the model says which extra to install, in one line; an ONNX export made before runs
    without it, in every search mode (it ended in ModuleNotFoundError: torch, from the backend
    choice asking torch whether an accelerator was there)."""
    import os
    import subprocess
    import sys

    from semsim_pg.backends.export import ensure_export

    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'sentence_transformers'):\n"
        "    sys.modules[name] = None  # not installed\n"
        "from semsim_pg.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "SEMSIM_DATABASE_URL": engine.url.render_as_string(hide_password=False)}

    def semsim(*args: str, **more_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env={**env, **more_env},
            timeout=120,
        )

    from semsim_pg import __version__

    version = semsim("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"semsim {__version__}", version.stderr
    current = semsim("db", "current")
    assert current.returncode == 0 and "up to date" in current.stdout, current.stderr
    info = semsim("info", "--no-model")
    assert info.returncode == 0 and info.stdout.startswith(f"semsim       {__version__}\n"), info.stderr
    for backend in ("torch", "auto"):  # auto with nothing measured yet: torch is its reference
        encode = semsim("info", SEMSIM_BACKEND=backend, SEMSIM_DATA_DIR=str(tmp_path / "empty"))
        assert encode.returncode == 1 and "Traceback" not in encode.stderr, encode.stderr
        assert "pip install 'semsim[encoders]'" in encode.stderr and len(encode.stderr.strip().splitlines()) == 1

    ensure_export(
        "onnx", name=encoder.name, location=encoder.source.location, data_dir=tmp_path, load_fp32=lambda: encoder.model
    )
    store.create_collection(collection_name)
    store.upsert(collection_name, [("cat", "a cat sleeps on the sofa"), ("market", "stock markets fell sharply")])
    for mode in ("semantic", "lexical", "hybrid"):
        found = semsim(
            "search", "-c", collection_name, "the cat on a sofa", "--mode", mode, "-k", "1",
            SEMSIM_BACKEND="onnx", SEMSIM_DATA_DIR=str(tmp_path),
        )  # fmt: skip
        assert found.returncode == 0 and "Traceback" not in found.stderr, (mode, found.stderr)
        assert "cat" in found.stdout and "market" not in found.stdout, (mode, found.stdout)


def test_info_never_prints_the_password(capsys, settings, engine) -> None:  # type: ignore[no-untyped-def]
    """`semsim info` names the database without its password, in text and in JSON."""
    from sqlalchemy.engine import make_url

    from semsim_pg.settings import configure

    url = engine.url
    password = url.password or "s3cret-pw-for-the-test"  # the embedded server's peer login ignores it
    configure(settings.replace(database_url=url.set(password=password).render_as_string(hide_password=False)))
    try:
        code_json, out_json, err_json = run(capsys, "info", "--json", "--no-model")
        code_text, out_text, err_text = run(capsys, "info", "--no-model")
    finally:
        configure(settings)
    assert (code_json, code_text) == (0, 0), err_json + err_text
    assert password not in out_json + err_json + out_text + err_text
    shown = make_url(json.loads(out_json)["database_url"])
    assert (shown.username, shown.password) == (url.username, "***")  # the user is named, the password masked


def test_a_password_given_as_a_query_parameter_is_never_printed(capsys, settings, engine) -> None:  # type: ignore[no-untyped-def]
    """libpq also takes ``?password=``: `semsim info` (text and JSON), `semsim db upgrade` and the
    "cannot connect" error mask it as they mask the one before the host."""
    from sqlalchemy.engine import make_url

    from semsim_pg.settings import configure

    password = "s3cret-query-pw"  # the embedded server's peer login ignores it
    reachable = engine.url.update_query_dict({"password": password}).render_as_string(hide_password=False)
    unreachable = f"postgresql://app@127.0.0.1:1/appdb?password={password}&sslmode=disable"
    outputs = []
    try:
        configure(settings.replace(database_url=reachable))
        for args in (("info", "--json", "--no-model"), ("info", "--no-model"), ("db", "upgrade")):
            code, out, err = run(capsys, *args)
            assert code == 0, err
            outputs.append(out + err)
        configure(settings.replace(database_url=unreachable))
        code, out, err = run(capsys, "info", "--no-model")
        assert code == 1 and "Cannot connect to PostgreSQL at" in err, err
        outputs.append(out + err)
    finally:
        configure(settings)
    assert not [text for text in outputs if password in text]
    shown = make_url(json.loads(outputs[0])["database_url"])
    assert shown.query["password"] == "***" and shown.query["host"] == engine.url.query["host"]
    # the libpq URL (for psql) leaves the password out: a masked one would be sent as "***"
    libpq = json.loads(outputs[0])["libpq_url"]
    assert "password" not in libpq and "***" not in libpq and libpq.startswith("postgresql://")
    assert "password=***" in outputs[-1]


def test_search_with_rerank(capsys, store, collection_name, docs_file, tiny_cross_encoder_path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    query = "a puppy chasing a kitten"
    code, out, err = run(
        capsys,
        "search",
        query,
        "-c",
        collection_name,
        "-k",
        "2",
        "--candidates",
        "4",
        "--rerank",
        str(tiny_cross_encoder_path),
        "--json",
    )
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 2
    # the order is the cross-encoder's own order over the 4 candidates
    texts = [d["text"] for d in DOCS]
    scores = CrossEncoder(str(tiny_cross_encoder_path)).predict([(query, t) for t in texts])
    best = sorted(zip(scores, texts, strict=True), reverse=True)[:2]
    assert [h["text"] for h in hits] == [t for _, t in best]
    assert hits[0]["rerank_score"] >= hits[1]["rerank_score"]


def _lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.splitlines()]


def test_batch_search_applies_exact_explain_and_rerank(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tmp_path, tiny_cross_encoder_path
) -> None:
    """--queries FILE honours --exact, --explain and --rerank as a single query does (they were ignored)."""
    from sentence_transformers import CrossEncoder

    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    queries = tmp_path / "queries.txt"
    queries.write_text("a puppy chasing a kitten\nforgot my password\n")
    batch = ["search", "--queries", str(queries), "-c", collection_name]
    # --exact reaches the search: the exact scan's hits (whether the planner would have taken the
    # index for four rows depends on what else the table holds; the plans below show the scan)
    code, out, err = run(capsys, *batch, "-k", "3", "--exact")
    assert code == 0, err
    exact = store.search_many(collection_name, ["a puppy chasing a kitten", "forgot my password"], k=3, exact=True)
    assert [[h["external_id"] for h in line["hits"]] for line in _lines(out)] == [
        [h.external_id for h in hits] for hits in exact
    ]

    code, out, err = run(capsys, *batch, "--explain")
    plans = _lines(out)
    assert code == 0, err
    assert [p["query"] for p in plans] == ["a puppy chasing a kitten", "forgot my password"]
    # each query's plan is the one the store explains for it (whether the planner takes the index
    # for four rows depends on what else the table holds; an exact scan never does, below)
    for p in plans:
        lines = store.explain(collection_name, p["query"], 10).splitlines()
        assert [_no_timing(x) for x in p["plan"]] == [_no_timing(x) for x in lines]
    code, out, _ = run(capsys, *batch, "--explain", "--exact")
    assert code == 0 and not any("embeddings_hnsw" in line for p in _lines(out) for line in p["plan"])

    code, out, err = run(capsys, *batch, "-k", "2", "--candidates", "4", "--rerank", str(tiny_cross_encoder_path))
    assert code == 0, err
    texts = [d["text"] for d in DOCS]
    model = CrossEncoder(str(tiny_cross_encoder_path))
    for line in _lines(out):
        scores = model.predict([(line["query"], t) for t in texts])
        best = sorted(zip(scores, texts, strict=True), reverse=True)[:2]
        assert [h["text"] for h in line["hits"]] == [t for _, t in best]
        assert all("rerank_score" in h for h in line["hits"])


def test_rerank_keeps_min_similarity_and_exact(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tiny_cross_encoder_path
) -> None:
    """--rerank's first stage is the search the other flags describe (--min-similarity was dropped)."""
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    query = "a puppy chasing a kitten"
    plain = store.search(collection_name, query, 4, exact=True)
    floor = (plain[1].similarity + plain[2].similarity) / 2  # keeps the two animal texts only
    reranked = ["search", query, "-c", collection_name, "-k", "4", "--rerank", str(tiny_cross_encoder_path)]
    code, out, err = run(capsys, *reranked, "--min-similarity", str(floor), "--exact", "--json")
    assert code == 0, err
    assert {h["external_id"] for h in json.loads(out)["hits"]} == {h.external_id for h in plain[:2]}


def test_search_refuses_conflicting_flags(capsys, store, collection_name, docs_file) -> None:  # type: ignore[no-untyped-def]
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    search = ["search", "reset password", "-c", collection_name]
    for mode in ("lexical", "semantic"):
        code, out, err = run(capsys, *search, "--hybrid", "--mode", mode)
        assert code == 1 and out == "" and err.count("\n") == 1 and "not both" in err, err
    code, out, err = run(capsys, *search, "--hybrid", "--mode", "hybrid", "--json")  # they agree
    assert code == 0 and all(h["lexical_score"] is not None for h in json.loads(out)["hits"][:1]), err

    code, out, err = run(capsys, *search, "--explain", "--json")
    assert code == 0, err
    explained = json.loads(out)
    assert explained["query"] == "reset password" and any("Limit" in line for line in explained["plan"])

    code, out, err = run(capsys, *search, "--explain", "--rerank")
    assert code == 1 and out == "" and err.count("\n") == 1 and "--rerank" in err


def test_unknown_schema_revision_is_a_one_line_error(capsys, engine) -> None:  # type: ignore[no-untyped-def]
    for action in ("upgrade", "downgrade"):
        code, _, err = run(capsys, "db", action, "bogus")
        assert code == 1 and err.count("\n") == 1 and "'bogus'" in err and "head" in err, err
    code, out, _ = run(capsys, "db", "current")
    assert code == 0 and "up to date" in out


def test_faiss_ivfpq_on_too_few_vectors_says_what_to_use(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tmp_path
) -> None:
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    build = ["faiss", "build", "-c", collection_name, "--out", str(tmp_path / "pq"), "--index", "ivfpq"]
    code, _, err = run(capsys, *build)
    assert code == 1 and err.count("\n") == 1 and "256" in err and "4 vectors" in err and "--index hnsw" in err, err
    assert not (tmp_path / "pq").exists()
    code, _, err = run(capsys, *build, "--pq-bits", "2")  # the way out the message offers works
    assert code == 0, err


def test_unwritable_output_paths_are_refused_first(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tmp_path
) -> None:
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    missing = tmp_path / "nonexistent" / "x.png"
    for args in (
        # checked before anything else: the collection does not even exist
        ("faiss", "compare", "-c", "no_such_collection", "--plot", str(missing)),
        ("faiss", "compare", "-c", collection_name, "--sample", "2", "--plot", str(missing)),
        ("faiss", "compare", "-c", collection_name, "--sample", "2", "--plot", str(tmp_path)),  # a directory
        ("bench", "encoders", "--backends", "torch", "--rounds", "1", "--plot", str(missing)),
        ("faiss", "build", "-c", collection_name, "--out", "/proc/nope"),
        ("faiss", "build", "-c", collection_name, "--out", str(tmp_path / "a" / "b" / "c")),
    ):
        code, out, err = run(capsys, *args)
        assert code == 1 and out == "" and err.count("\n") == 1, (args, err)
        assert args[-1] in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]  # no probe or half-written file left


@pytest.mark.parametrize("command", ["eval", "ingest", "bench"])
def test_unknown_model_without_a_network_fails_at_once_in_one_line(  # type: ignore[no-untyped-def]
    capsys, monkeypatch, store, collection_name, docs_file, tmp_path, command
) -> None:
    """A mistyped model name, the hub unreachable: one line naming the fixes, at once (not the
    hub client's retries, each logged twice, and a message with a doubled period)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    if command == "eval":
        pairs = tmp_path / "sts.csv"
        pairs.write_text("sentence1,sentence2,score\nA cat sleeps.,A cat is asleep.,4.8\nA cat.,Stock prices.,0\n")
        args = ["eval", "sts", str(pairs), "--model", "nonexistent-model-xyz"]
    elif command == "bench":  # its reference, plain sentence-transformers, is loaded first
        args = ["bench", "encoders", "--model", "nonexistent-model-xyz", "--limit", "5", "--backends", "torch"]
    else:
        args = ["ingest", str(docs_file), "-c", collection_name, "--model", "nonexistent-model-xyz"]
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("semsim: error: Cannot load model 'nonexistent-model-xyz': ")
    assert ".." not in err and "unreachable" in err
    for fix in ("local model directory", "all-MiniLM-L6-v2", "HF_HUB_OFFLINE"):
        assert fix in err
    assert collection_name not in {c.name for c in store.list_collections()}  # nothing half-written


def test_hub_warnings_print_once_and_not_under_quiet() -> None:
    """huggingface_hub's loggers carry a handler of their own besides ours: each retry warning
    printed twice; -q ("only warnings and errors" of semsim) leaves the hub's retries out."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from semsim_pg.cli.main import _setup_logging\n"
        "_setup_logging(0, sys.argv[1] == 'quiet')\n"
        "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
    )
    for mode, expected in (("plain", 1), ("quiet", 0)):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120, check=True
        )
        assert done.stderr.count("Retrying in 1s") == expected, done.stderr


def test_ingest_files_with_a_byte_order_mark(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Excel's "CSV UTF-8" and Notepad's UTF-8 start with a byte-order mark: the header still has
    its 'text' column, and no stored text starts with U+FEFF."""
    table = tmp_path / "bom.csv"
    table.write_bytes("\ufefftext,category\r\nhello there,greeting\r\n".encode())
    lines = tmp_path / "bom.txt"
    lines.write_bytes("\ufeffgood morning\n".encode())
    for path in (table, lines):
        code, _, err = run(capsys, "ingest", str(path), "-c", collection_name)
        assert code == 0, err
    code, out, _ = run(capsys, "search", "hello", "-c", collection_name, "--json")
    hits = {h["text"]: h["metadata"] for h in json.loads(out)["hits"]}
    assert code == 0 and hits == {"hello there": {"category": "greeting"}, "good morning": {}}


def test_quiet_and_verbose_work_after_the_command_too() -> None:
    """`semsim ingest FILE -c X -q` was "unrecognized arguments: -q": the flags were the program's only."""
    from semsim_pg.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["ingest", "f.txt", "-c", "x", "-q"]).quiet is True
    assert parser.parse_args(["-q", "ingest", "f.txt", "-c", "x"]).quiet is True
    plain = parser.parse_args(["ingest", "f.txt", "-c", "x"])
    assert (plain.quiet, plain.verbose) == (False, 0)
    assert parser.parse_args(["faq", "ask", "a question", "-c", "x", "-vv"]).verbose_after == 2
    both = parser.parse_args(["-v", "collections", "-v"])
    assert both.verbose + both.verbose_after == 2  # main() adds them up
    assert parser.parse_args(["index", "rebuild", "-c", "x", "--quiet"]).quiet is True


def test_a_reranker_that_cannot_load_fails_before_any_search(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--rerank's model is loaded first: a bad one fails before the first stage searches (a whole
    --queries file used to be searched first); -k and --candidates are named as typed."""
    missing = tmp_path / "no-such-model"
    code, _, err = run(capsys, "search", "a question", "-c", "no-such-collection", "--rerank", str(missing))
    assert code == 1 and "no-such-collection" not in err and str(missing) in err, err
    code, _, err = run(capsys, "search", "a question", "-c", "x", "--rerank", str(missing), "--candidates", "0")
    assert code == 1 and "--candidates must be a whole number" in err, err


def _no_timing(line: str) -> str:
    """A plan line without its measured times and counts (EXPLAIN ANALYZE's, if any)."""
    import re

    return re.sub(r"\(actual[^)]*\)|\d+\.\d+ ms|Buffers:.*", "", line).strip()


def test_rerank_prints_the_score_its_order_follows_and_ranks_from_1(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tiny_cross_encoder_path, tmp_path
) -> None:
    """A tuned reranker orders by its blend with the first stage: the text shows that score (it
    showed the cross-encoder's alone, out of order) and --json's rank_before counts from 1."""
    import re
    import shutil

    from semsim_pg.finetune.records import RECORD_NAME

    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_cross_encoder_path, tuned)
    record: dict[str, object] = {
        "kind": "reranker",
        "base": "all-MiniLM-L6-v2",
        "metric": "ndcg@10",
        "collection": collection_name,
    }
    record.update(before={"ndcg@10": 60.0}, after={"ndcg@10": 61.0})
    (tuned / RECORD_NAME).write_text(json.dumps({**record, "fusion": {"weight": 0.5}}), encoding="utf-8")
    query = "a puppy chasing a kitten"
    args = ["search", query, "-c", collection_name, "-k", "4", "--candidates", "4", "--rerank", str(tuned)]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    first = [h.external_id for h in store.search(collection_name, query, 4)]
    assert [h["rank_before"] for h in hits] == [first.index(h["external_id"]) + 1 for h in hits]
    assert sorted(h["rank_before"] for h in hits) == [1, 2, 3, 4] and "original_rank" not in hits[0]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and scores != [h["rerank_score"] for h in hits]  # blended
    code, out, err = run(capsys, *args)
    assert code == 0, err
    printed = [re.search(r"score +(-?[0-9.]+)", line) for line in out.splitlines()]
    assert all(printed) and len(printed) == 4
    assert [float(m.group(1)) for m in printed if m] == pytest.approx(scores, abs=1e-3)


def test_a_batch_line_without_searchable_words_is_an_error_line_the_others_answered(  # type: ignore[no-untyped-def]
    capsys, store, collection_name, docs_file, tmp_path
) -> None:
    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    queries = tmp_path / "queries.txt"
    queries.write_text("the dog chases\nthe of and\nreset password\n")
    for extra in ([], ["--json"]):
        code, out, err = run(
            capsys, "search", "--queries", str(queries), "-c", collection_name, "--mode", "lexical", *extra
        )
        lines = _lines(out)
        assert [line["query"] for line in lines] == ["the dog chases", "the of and", "reset password"]
        assert lines[0]["hits"][0]["external_id"] == "cat" and lines[2]["hits"][0]["external_id"] == "login"
        assert "hits" not in lines[1] and "no searchable word" in lines[1]["error"]
        assert code == 1 and err.count("\n") == 1 and "1 of 3 queries" in err
    # an error of the options, not of a line, is still one line and nothing else
    code, out, err = run(capsys, "search", "--queries", str(queries), "-c", collection_name, "-k", "0")
    assert code == 1 and out == "" and err.count("\n") == 1


FORGED_NAME = "ev\x1b[31mRED\nt1    999    999  fake"


@pytest.mark.parametrize(
    "char", ["\x1b", "\n", "\t", "\r", "\x7f", "\x9b", "\u202e", "\u2066", "\u2028", "\u200e", "\u061c"]
)
def test_a_collection_name_with_a_control_character_is_refused(store, char: str) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.errors import InvalidInput

    with pytest.raises(InvalidInput, match="may not hold control characters") as refused:
        store.create_collection(f"ev{char}il")
    assert char not in str(refused.value) and "\n" not in str(refused.value)
    assert not any(c.name.startswith("ev") and c.name.endswith("il") for c in store.list_collections())


def test_hebrew_and_arabic_direction_marks_print_as_they_are(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LRM, RLM and ALM are ordinary characters of right-to-left text (they reorder nothing past
    their neighbours): search output shows them as typed; an override (U+202E) is still escaped."""
    docs = tmp_path / "rtl.jsonl"
    texts = {
        "he": "\u05e9\u05dc\u05d5\u05dd \u200e(ABC)\u200e cats",
        "ar": "\u0645\u062a\u0649 \u061c\u200f cats",
        "x": "cats \u202eevil",
    }
    docs.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()), encoding="utf-8")
    assert run(capsys, "ingest", str(docs), "-c", collection_name)[0] == 0
    code, out, _ = run(capsys, "search", "cats", "-c", collection_name, "-k", "3")
    assert code == 0 and texts["he"] in out and texts["ar"] in out
    assert "\u202e" not in out and "cats \\u202eevil" in out


def test_the_cli_refuses_a_forged_collection_name_in_one_line(capsys, store, docs_file) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "ingest", str(docs_file), "-c", FORGED_NAME)
    assert code == 1 and out == "" and err.count("\n") == 1 and "\x1b" not in err, err
    assert "may not hold control characters" in err
    assert FORGED_NAME not in [c.name for c in store.list_collections()]


def test_names_made_before_the_check_print_escaped(capsys, engine, store, collection_name, docs_file) -> None:  # type: ignore[no-untyped-def]
    """A collection named with controls by an older version (or by SQL) is listed, and named in
    the not-found message, with its controls escaped; --json keeps the exact name."""
    import sqlalchemy as sa

    run(capsys, "ingest", str(docs_file), "-c", collection_name)
    forged = collection_name + FORGED_NAME

    def rename(old: str, new: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE semsim.collections SET name = :new WHERE name = :old"), {"old": old, "new": new}
            )

    rename(collection_name, forged)
    try:
        code, out, _ = run(capsys, "collections")
        assert code == 0 and "\x1b" not in out and f"{collection_name}ev\\x1b[31mRED\\nt1    999" in out, out
        assert not any(line.startswith("t1 ") for line in out.splitlines())
        code, out, _ = run(capsys, "collections", "--json")
        assert forged in [c["name"] for c in json.loads(out)]
        code, out, err = run(capsys, "search", "x", "-c", "nope\x1b[2J")
        assert code == 1 and err.count("\n") == 1 and "\x1b" not in err, err
        assert f"{collection_name}ev\\x1b[31mRED\\nt1" in err and "semsim ingest FILE -c nope\\x1b[2J`" in err
        code, out, err = run(capsys, "log", "prune", "--older-than", "30d", "-c", "nope")
        assert code == 1 and err.count("\n") == 1 and f"{collection_name}ev\\x1b[31mRED\\nt1" in err, err
        # still writable: ingest (through create_collection) and the Python API reach it by its name
        code, out, err = run(capsys, "ingest", str(docs_file), "-c", forged)
        assert code == 0 and "unchanged" in out, err
        assert store.create_collection(forged).name == forged
        code, out, _ = run(capsys, "log", "prune", "--older-than", "30d", "-c", forged)
        assert code == 0 and "\x1b" not in out and "\\x1b[31mRED\\nt1" in out, out
    finally:
        rename(forged, collection_name)
