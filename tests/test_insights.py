"""Search insights: the query log, stats and drift, unanswered groups and their promotion.

A synthetic log of a few thousand rows is written straight into semsim.query_log (its drift is
known by construction); the unanswered questions carry the real model's vectors so that their
groups are the groups of meaning the test names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import insights, queries
from semsim_pg.cli import main
from semsim_pg.errors import AlreadyResolved, ConfigurationError, InvalidInput, QueryLogEmpty
from semsim_pg.faq import FAQEntry, FAQMatcher
from semsim_pg.insights.log import QueryLogWriter, log_key
from semsim_pg.settings import Settings, configure
from semsim_pg.store import DocumentStore

NOW = dt.datetime.now(dt.UTC)

ENTRIES = [
    FAQEntry("returns", "How do I return an item?", "Use the returns form within 30 days.", "orders"),
    FAQEntry("delivery-time", "How long does delivery take?", "Three to five working days.", "shipping"),
    FAQEntry("cards", "Which credit cards do you accept?", "Visa and Mastercard.", "payment"),
]

# Unanswered questions of three meanings (and how often each was asked), plus two loners.
GROUPS = {
    "password": {
        "How do I reset my password?": 6,
        "I forgot my password, how can I change it?": 3,
        "password reset not working": 2,
        "Can't log in, need a new password": 1,
        "how to recover my account password": 2,
    },
    "paypal": {
        "Can I pay with PayPal?": 4,
        "Do you accept PayPal payments?": 2,
        "is paypal an option at checkout": 1,
        "paying via paypal possible?": 1,
    },
    "canada": {
        "Do you ship to Canada?": 2,
        "Can I get my order delivered in Canada?": 1,
        "shipping to canada available?": 1,
    },
}
LONERS = {"What is the airspeed velocity of an unladen swallow?": 1}


def _name() -> str:
    return f"log_{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def logged(settings: Settings) -> Iterator[Settings]:
    """The process settings with the query log on (the CLI reads them), restored after."""
    on = configure(settings.replace(query_log=True))
    yield on
    configure(settings)


def _rows(engine: sa.engine.Engine, collection: str) -> list[Any]:
    insights.flush()
    table = queries.insert_log().table
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(table.c.collection == collection).order_by(table.c.id)))


def _insert(engine: sa.engine.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(queries.insert_log(), rows)


def _row(collection: str, when: dt.datetime, score: float | None, **extra: Any) -> dict[str, Any]:
    text = extra.pop("text", f"question {uuid.uuid4().hex[:8]}")
    return {
        "created_at": when,
        "collection": collection,
        "kind": extra.pop("kind", "faq"),
        "mode": "faq",
        "k": 3,
        "query_text": text,
        "query_hash": insights.query_hash(text),
        "model_name": extra.pop("model_name", "all-MiniLM-L6-v2"),
        "embedding": extra.pop("embedding", None),
        "result_ids": ["returns"],
        "result_scores": [score] if score is not None else [],
        "top_score": score,
        "answered": extra.pop("answered", None if score is None else score >= 0.55),
        "latency_ms": extra.pop("latency_ms", 12.0),
    }


# settings and windows ---------------------------------------------------------------------------
def test_log_settings_from_the_environment() -> None:
    assert Settings.from_env({}).query_log is False
    on = Settings.from_env({"SEMSIM_QUERY_LOG": "1", "SEMSIM_QUERY_LOG_TEXT": "false"})
    assert (on.query_log, on.query_log_text) == (True, False)
    assert Settings.from_env({"SEMSIM_QUERY_LOG_SAMPLE_RATE": "0.25"}).query_log_sample_rate == 0.25
    with pytest.raises(ConfigurationError, match="SEMSIM_QUERY_LOG must be 1/0"):
        Settings.from_env({"SEMSIM_QUERY_LOG": "maybe"})
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        Settings(query_log_sample_rate=1.5)


def test_since_and_durations() -> None:
    now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    assert insights.parse_since("7d", now=now) == now - dt.timedelta(days=7)
    assert insights.parse_since("12h", now=now) == now - dt.timedelta(hours=12)
    assert insights.parse_since("2w", now=now) == now - dt.timedelta(weeks=2)
    assert insights.parse_since("2026-11-01", now=now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    # another offset is the same instant, in UTC (the header printed its wall time as UTC)
    start = insights.parse_since("2026-11-28T10:05+05:00", now=now)
    assert start == dt.datetime(2026, 11, 28, 5, 5, tzinfo=dt.UTC) and start.utcoffset() == dt.timedelta(0)
    assert f"{start:%Y-%m-%d %H:%M}" == "2026-11-28 05:05"
    assert insights.parse_since("0001-01-01T00:00+05:00", now=now) == dt.datetime.min.replace(tzinfo=dt.UTC)
    for bad in ("seven days", "7x", "0d", "-3d", ""):
        with pytest.raises(InvalidInput, match="--since takes a length of time"):
            insights.parse_since(bad, now=now)
    with pytest.raises(InvalidInput, match="in the future"):
        insights.parse_since("2027-01-01", now=now)
    for too_long in ("99999999d", "9999999999d", "10**30d".replace("10**30", "1" + "0" * 30)):
        with pytest.raises(InvalidInput, match="at most 100000d"):  # was OverflowError (a 500 in the admin)
            insights.parse_since(too_long, now=now)
    assert insights.parse_since("100000d", now=now).year == 1753
    for option, too_long in (("--baseline", "400000d"), ("--older-than", "99999999d")):
        with pytest.raises(InvalidInput, match=f"{option} {too_long} is longer than semsim looks back"):
            insights.parse_duration(too_long, option)
    with pytest.raises(InvalidInput, match="--older-than"):
        insights.parse_duration("ninety", "--older-than")


# the log ----------------------------------------------------------------------------------------
@pytest.fixture()
def faq(store: DocumentStore, collection_name: str) -> FAQMatcher:
    matcher = FAQMatcher(store, collection_name)
    matcher.load(ENTRIES, progress=False)
    return matcher


def test_search_and_answer_are_logged_once_each(engine, encoder, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    off = faq.store
    off.search(faq.collection, "how to send something back", k=2)
    FAQMatcher(off, faq.collection).answer("how to send something back")
    assert _rows(engine, faq.collection) == []  # off by default

    on = DocumentStore(settings=off.settings.replace(query_log=True), encoder=encoder)
    hits = on.search(faq.collection, "how to send something back", k=2)
    matcher = FAQMatcher(on, faq.collection)
    answered = matcher.answer("how long until my parcel arrives")
    unanswered = matcher.answer("what is the capital of Mongolia")
    rows = _rows(engine, faq.collection)
    assert [r.kind for r in rows] == ["search", "faq", "faq"]  # the FAQ's own searches are not logged
    search, yes, no = rows
    assert search.query_text == "how to send something back" and search.answered is None and search.k == 2
    assert search.result_ids == [h.external_id for h in hits]
    assert search.result_scores == pytest.approx([h.similarity for h in hits])
    assert search.top_score == pytest.approx(hits[0].similarity) and search.latency_ms > 0
    assert np.allclose(np.asarray(search.embedding), encoder.encode_query("how to send something back"), atol=1e-5)
    assert search.query_hash == insights.query_hash("how to send something back", key=log_key(on.settings))
    assert (yes.answered, yes.result_ids[0], yes.mode) == (True, "delivery-time", "faq")
    assert yes.top_score == pytest.approx(answered.score)
    assert no.answered is False and not unanswered.answered
    # the writer encoded the FAQ question off the request path, with the collection's model
    assert yes.model_name == "all-MiniLM-L6-v2"
    assert np.allclose(np.asarray(yes.embedding), encoder.encode_query("how long until my parcel arrives"), atol=1e-5)


def test_hash_only_and_sampling(engine, encoder, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    base = faq.store.settings.replace(query_log=True)
    hashed = FAQMatcher(DocumentStore(settings=base.replace(query_log_text=False), encoder=encoder), faq.collection)
    secret = "a secret question about my account"
    hashed.answer(secret)
    (row,) = _rows(engine, faq.collection)
    assert row.query_text is None and row.query_hash == insights.query_hash(secret, key=log_key(base))
    # keyed: hashing a guess (the plain SHA-256 of it) does not confirm it
    assert row.query_hash != hashlib.sha256(secret.encode()).hexdigest() == insights.query_hash(secret)
    assert row.embedding is not None  # still groupable
    never = DocumentStore(settings=base.replace(query_log_sample_rate=0.0), encoder=encoder)
    for _ in range(5):
        never.search(faq.collection, "returns", k=1)
    assert len(_rows(engine, faq.collection)) == 1


def test_a_failing_log_never_reaches_the_search(caplog: pytest.LogCaptureFixture) -> None:
    broken = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    writer = QueryLogWriter(broken, interval=0.05)
    record = insights.LoggedQuery(
        "c", "search", "q", np.ones(3, dtype=np.float32), "m", ["a"], [0.5], 0.5, None, 1.0, created_at=NOW
    )
    with caplog.at_level(logging.WARNING, logger="semsim_pg.insights.log"):
        writer.submit(record)
        assert writer.flush(timeout=30)
    writer.close()
    assert (writer.written, writer.failed) == (0, 1)
    assert "query log: 1 queries not written" in caplog.text
    # a record that cannot even be built is a warning too, not an exception
    settings = Settings(query_log=True)
    with caplog.at_level(logging.WARNING, logger="semsim_pg.insights.log"):
        insights.log.log_search(settings, broken, object(), "q", np.ones(3), [object()], 3, "semantic", 0.0)
    assert "could not log a search" in caplog.text


def test_an_exhausted_pool_is_told_in_one_line(settings, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """The log writer, stats, prune and promotion opened connections with engine.connect(): a pool
    with no connection free raised sqlalchemy's raw TimeoutError ("QueuePool limit of size 1
    overflow 0 reached"), not the store's PoolExhausted that names the settings to raise."""
    from semsim_pg.db import get_engine
    from semsim_pg.errors import PoolExhausted

    small = get_engine(settings.replace(pool_size=1, pool_max_overflow=0, pool_timeout=0.2))
    writer = QueryLogWriter(small, interval=0.05)
    record = insights.LoggedQuery(
        "c", "search", "q", np.ones(3, dtype=np.float32), "m", ["a"], [0.5], 0.5, None, 1.0, created_at=NOW
    )
    since = NOW - dt.timedelta(days=7)
    held = small.connect()  # the pool's one connection in use
    with held, caplog.at_level(logging.WARNING, logger="semsim_pg.insights.log"):
        writer.submit(record)  # never raises: the write fails in the writer's thread, a warning
        assert writer.flush(timeout=30)
        refused = []
        for call in (
            lambda: insights.query_stats(small, "c", since),
            lambda: insights.unanswered_groups(small, "c", since),
            lambda: insights.resolve_group(small, "c", ["h"], "x", lambda: None),
            lambda: insights.prune(small, NOW, progress=False),
        ):
            with pytest.raises(PoolExhausted) as error:
                call()
            refused.append(str(error.value))
    writer.close()
    assert (writer.written, writer.failed) == (0, 1)
    assert "query log: 1 queries not written (PoolExhausted: No connection to PostgreSQL" in caplog.text
    for message in [caplog.text, *refused]:
        assert "all 1 of semsim's pool (pool_size 1 + max_overflow 0) were in use" in message
        assert "SEMSIM_POOL_SIZE" in message and "QueuePool" not in message
    assert all("\n" not in message for message in refused)


def test_a_full_queue_drops_instead_of_blocking(engine) -> None:  # type: ignore[no-untyped-def]
    writer = QueryLogWriter(engine, queue_size=2, interval=5.0)
    record = insights.LoggedQuery("c", "search", None, None, None, [], [], None, None, 1.0, created_at=NOW)
    writer._stop.set()  # no thread draining: the queue fills
    writer._thread.join()
    for _ in range(5):
        writer.submit(record)
    assert writer.dropped == 3


def test_the_query_hash_key(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """SEMSIM_QUERY_LOG_KEY, else a key generated once into the data directory, its owner's alone."""
    from semsim_pg.insights.log import KEY_FILE, _key_file

    settings = Settings(data_dir=tmp_path / "data")
    key = log_key(settings)
    path = tmp_path / "data" / KEY_FILE
    assert len(key) == 64 and path.read_text().strip().encode() == key
    assert path.stat().st_mode & 0o777 == 0o600
    _key_file.cache_clear()  # another process: the same key, read back
    assert log_key(settings) == key and [p.name for p in path.parent.iterdir()] == [KEY_FILE]
    own = Settings.from_env({"SEMSIM_QUERY_LOG_KEY": "s3cret-of-mine"}, data_dir=tmp_path / "other")
    assert log_key(own) == b"s3cret-of-mine" and not (tmp_path / "other").exists()
    assert "s3cret" not in repr(own)
    same, other = (insights.query_hash("where is my parcel", key=k) for k in (key, b"s3cret-of-mine"))
    assert same == insights.query_hash("where is my parcel", key=key) != other  # identical queries still group
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigurationError, match="set SEMSIM_QUERY_LOG_KEY"):
        log_key(Settings(data_dir=tmp_path / "a_file"))


def test_a_key_file_open_to_others_is_tightened_or_warned_about(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Like ssh's check of a private key, but a warning rather than a refusal (the log of a whole
    service would stop): tightened to 0600 when the process owns the file, else the fix named."""
    from semsim_pg.insights.log import KEY_FILE, _key_file

    data = tmp_path / "data"
    data.mkdir()
    path = data / KEY_FILE
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o644)
    settings = Settings(data_dir=data)
    _key_file.cache_clear()
    with caplog.at_level(logging.WARNING, logger="semsim_pg.insights.log"):
        assert log_key(settings) == b"ab" * 32
        assert log_key(settings) == b"ab" * 32  # once per process, not per query
    assert path.stat().st_mode & 0o777 == 0o600
    (warned,) = [r.getMessage() for r in caplog.records]
    assert f"the key file {path} was open to other users (mode 644): made it 600" in warned, warned
    if os.geteuid() != 0:
        return  # a file of another user: only root can make one here
    caplog.clear()
    path.chmod(0o640)
    os.chown(path, 65534, 65534)
    _key_file.cache_clear()
    with caplog.at_level(logging.WARNING, logger="semsim_pg.insights.log"):
        assert log_key(settings) == b"ab" * 32
    assert path.stat().st_mode & 0o777 == 0o640  # not ours to change
    (warned,) = [r.getMessage() for r in caplog.records]
    assert f"the key file {path} is open to other users (mode 640)" in warned and f"chmod 600 {path}" in warned


# stats and drift --------------------------------------------------------------------------------
def _synthetic(engine: sa.engine.Engine, collection: str, *, drift: bool, model_now: str = "all-MiniLM-L6-v2") -> None:
    """2000 queries over the 7 days before last week and 2000 over the last 7 days. The
    baseline's top-1 scores ~ N(0.72, 0.07); with ``drift`` 40% of this week's come from a new
    topic the FAQ does not cover, ~ N(0.42, 0.06)."""
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(2000):
        when = NOW - dt.timedelta(days=7, seconds=1) - dt.timedelta(seconds=int(rng.integers(0, 7 * 86400 - 60)))
        rows.append(_row(collection, when, float(rng.normal(0.72, 0.07)), latency_ms=float(rng.uniform(5, 25))))
    for i in range(2000):
        when = NOW - dt.timedelta(seconds=int(rng.integers(60, 7 * 86400 - 60)))
        new_topic = drift and i % 5 < 2
        score = float(rng.normal(0.42, 0.06) if new_topic else rng.normal(0.72, 0.07))
        rows.append(_row(collection, when, score, model_name=model_now, latency_ms=float(rng.uniform(5, 25))))
    _insert(engine, rows)


def test_stats_and_drift_on_a_synthetic_log(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    drifted, steady, swapped = _name(), _name(), _name()
    _synthetic(engine, drifted, drift=True)
    _synthetic(engine, steady, drift=False)
    _synthetic(engine, swapped, drift=True, model_now="some-other-model")
    since = NOW - dt.timedelta(days=7)

    stats = insights.query_stats(engine, drifted, since, now=NOW)
    assert stats.window.queries == 2000 == sum(d.queries for d in stats.days)
    assert len(stats.days) in (7, 8) and sum(stats.histogram_counts) == 2000
    assert 10 < stats.window.latency_p50_ms < 20 and stats.window.latency_p95_ms > stats.window.latency_p50_ms
    assert stats.window.answer_rate == pytest.approx(0.6, abs=0.04)  # the new topic falls below 0.55
    assert stats.drift.baseline.queries == 2000
    assert stats.drift.flagged and stats.drift.psi > 0.2 and stats.drift.ks_pvalue < 1e-6
    assert "scores fell" in stats.drift.message and "new topics" in stats.drift.message
    assert "model changed" not in stats.drift.message

    calm = insights.query_stats(engine, steady, since, now=NOW)
    assert not calm.drift.flagged and calm.drift.psi < 0.05 and calm.drift.message.startswith("no drift")

    model = insights.query_stats(engine, swapped, since, now=NOW)
    assert model.drift.flagged and "encoder model changed" in model.drift.message

    # a window from the year 1 has no room for the one before it: that one is all time (was an OverflowError)
    everything = insights.query_stats(engine, drifted, insights.parse_since("0001-01-02", now=NOW), now=NOW)
    assert everything.window.queries == 4000 and everything.drift.baseline.queries == 0

    png = insights.plot_stats(stats, tmp_path / "stats.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "stats.png").read_bytes() == png
    json.dumps(stats.to_dict())  # JSON-ready


def test_stats_command(capsys, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    _synthetic(engine, name, drift=True)
    code = main(["-q", "stats", "-c", name, "--since", "7d", "--json", "--plot", str(tmp_path / "s.png")])
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert code == 0 and data["drift"]["flagged"] and data["window"]["queries"] >= 1990
    assert (tmp_path / "s.png").stat().st_size > 1000
    missing = tmp_path / "missing" / "s.png"  # refused before the statistics, not by a traceback after them
    code = main(["-q", "stats", "-c", name, "--plot", str(missing)])
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1 and str(missing) in err and not missing.parent.exists()
    code = main(["-q", "stats", "-c", name])
    out, _ = capsys.readouterr()
    assert code == 0 and "DRIFT: PSI" in out and "latency p50" in out

    local = (NOW - dt.timedelta(days=2)).astimezone(dt.timezone(dt.timedelta(hours=5)))
    code = main(["-q", "stats", "-c", name, "--since", local.isoformat(timespec="minutes")])
    out, _ = capsys.readouterr()
    assert code == 0 and f"queries since {local.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" in out.splitlines()[0]

    code = main(["-q", "stats", "-c", name, "--since", "last tuesday"])
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1 and "--since takes a length of time" in err
    code = main(["-q", "stats", "-c", "never_logged_anything"])
    _, err = capsys.readouterr()  # a typo: the usual one-liner with the collections, not "turn the log on"
    assert code == 1 and err.count("\n") == 1 and "No collection named 'never_logged_anything' (collections: " in err
    assert "SEMSIM_QUERY_LOG" not in err


def test_a_pruned_collection_is_told_so(capsys, engine, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    """All of a collection's rows pruned: not "nothing was ever logged, turn the log on"."""
    _insert(engine, [_row(faq.collection, NOW - dt.timedelta(days=d), 0.3, answered=False) for d in (40, 50)])
    assert main(["-q", "log", "prune", "--older-than", "30d", "-c", faq.collection]) == 0
    capsys.readouterr()
    for command in (["stats"], ["faq", "unanswered"]):
        assert main(["-q", *command, "-c", faq.collection]) == 1
        _, err = capsys.readouterr()
        assert (
            err.count("\n") == 1
            and f"The query log keeps no query of {faq.collection!r}: the ones logged were pruned" in err
        )
        assert "off by default" not in err
    assert main(["-q", "faq", "unanswered", "-c", "no_such_faq"]) == 1
    assert "No collection named 'no_such_faq' (collections: " in capsys.readouterr().err


def test_a_log_table_never_written_asks_to_turn_the_log_on(engine) -> None:  # type: ignore[no-untyped-def]
    """The table's id sequence tells "never written" (the hint) from "written, then pruned"."""
    table = queries.log_table(f"semsim_test_{_name()}")
    table.create(engine)
    try:
        with pytest.raises(QueryLogEmpty, match="Nothing was ever logged for 'faqs': the query log is off by default"):
            insights.query_stats(engine, "faqs", NOW - dt.timedelta(days=7), table=table)
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [_row("faqs", NOW - dt.timedelta(days=60), 0.5)])
        assert insights.prune(engine, NOW - dt.timedelta(days=30), table=table) == 1
        for call in (insights.query_stats, insights.unanswered_groups):
            with pytest.raises(
                QueryLogEmpty, match="The query log keeps no query of 'faqs': the ones logged were pruned"
            ):
                call(engine, "faqs", NOW - dt.timedelta(days=7), table=table)
    finally:
        table.drop(engine)


def test_prune(capsys, engine) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    _insert(engine, [_row(name, NOW - dt.timedelta(days=d), 0.7) for d in (1, 30, 91, 100, 200)])
    code = main(["-q", "log", "prune", "--older-than", "90d", "-c", name, "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["deleted"] == 3
    assert len(_rows(engine, name)) == 2
    code = main(["-q", "log", "prune", "--older-than", "soon"])
    _, err = capsys.readouterr()
    assert code == 1 and "--older-than takes a length of time" in err


def test_prune_of_an_unknown_collection_is_refused(capsys, engine) -> None:  # type: ignore[no-untyped-def]
    """`semsim log prune -c nosuch` said "pruned 0", exit 0: a typo in a cron line pruned nothing
    every night. A collection that exists, or only has queries left in the log, is pruned."""
    assert main(["-q", "log", "prune", "--older-than", "90d", "-c", "no_such_collection"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert "No collection named 'no_such_collection' (collections: " in err and "nothing was pruned" in err
    dropped = _name()  # no collection of that name, but its queries are still in the log
    _insert(engine, [_row(dropped, NOW - dt.timedelta(days=d), 0.7) for d in (1, 100)])
    assert main(["-q", "log", "prune", "--older-than", "90d", "-c", dropped]) == 0
    assert capsys.readouterr().out.startswith(f"pruned 1 logged queries of {dropped} older than 90d")
    assert main(["-q", "log", "prune", "--older-than", "90d", "-c", dropped]) == 0  # nothing old left: fine
    assert "warning" not in capsys.readouterr().out


def test_prune_of_a_label_never_logged_warns(engine) -> None:  # type: ignore[no-untyped-def]
    """The Django app's log (a table of its own) has labels, not collections: one that the log
    holds nothing of is pruned (of nothing) with a warning, in both commands' summary and JSON."""
    table = queries.log_table(f"semsim_test_{_name()}")
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [_row("faqs", NOW - dt.timedelta(days=d), 0.5) for d in (1, 100)])
        pruned = insights.prune_older_than(engine, "90d", collection="fqas", table=table, progress=False)
        assert pruned.deleted == 0 and pruned.summary().endswith(
            "; warning: the log holds no query of 'fqas' (a typo in the name?)"
        )
        assert pruned.to_dict()["warning"] == "the log holds no query of 'fqas' (a typo in the name?)"
        pruned = insights.prune_older_than(engine, "90d", collection="faqs", table=table, progress=False)
        assert pruned.deleted == 1 and "warning" not in pruned.summary() and "warning" not in pruned.to_dict()
    finally:
        table.drop(engine)


def test_prune_of_a_log_table_never_migrated_says_so(engine) -> None:  # type: ignore[no-untyped-def]
    """`manage.py semsim_log_prune` before the insights app was migrated printed 62 lines of
    SQLAlchemy traceback (UndefinedTable): the Django command turns a SemsimError into one line."""
    from semsim_pg.errors import SchemaNotInstalled

    name = f"semsim_test_{_name()}"
    with pytest.raises(SchemaNotInstalled) as raised:
        insights.prune_older_than(engine, "90d", table=queries.log_table(name), progress=False)
    message = str(raised.value)
    assert f"The query log table {name} does not exist in this database: run the migrations" in message
    assert "manage.py migrate" in message and "nothing was pruned" in message and "\n" not in message


# unanswered groups ------------------------------------------------------------------------------
def _unanswered_log(engine, encoder, collection: str) -> None:  # type: ignore[no-untyped-def]
    questions = {t: n for group in GROUPS.values() for t, n in group.items()} | LONERS
    vectors = dict(zip(questions, encoder.encode(list(questions)), strict=True))
    rows = []
    for text, times in questions.items():
        for i in range(times):
            when = NOW - dt.timedelta(days=1 + i % 20, minutes=i)
            rows.append(_row(collection, when, 0.3, text=text, embedding=vectors[text], answered=False))
    # an answered question, and an unanswered one older than the window, stay out of the groups
    paypal = vectors["Can I pay with PayPal?"]
    rows.append(_row(collection, NOW - dt.timedelta(days=2), 0.9, text="How do I return an item?", embedding=paypal))
    old = _row(collection, NOW - dt.timedelta(days=60), 0.2, text="old", embedding=paypal, answered=False)
    rows.append(old)
    _insert(engine, rows)


def test_unanswered_groups_by_meaning(engine, encoder, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    _unanswered_log(engine, encoder, faq.collection)
    groups = insights.unanswered_groups(engine, faq.collection, NOW - dt.timedelta(days=30))
    assert [{q.text for q in g.questions} for g in groups[:3]] == [
        set(GROUPS[k]) for k in ("password", "paypal", "canada")
    ]
    assert [g.size for g in groups] == [14, 8, 4, 1]
    password = groups[0]
    assert password.representative.text in GROUPS["password"]
    assert password.examples[0].text == "How do I reset my password?" and password.examples[0].times == 6
    nearest = insights.nearest_faq_entries(faq, groups[1])
    assert nearest[0].faq_id == "cards" and 0 < nearest[0].score < 1  # PayPal is nearest to the cards entry
    assert len({n.faq_id for n in nearest}) == len(nearest) == 3
    assert insights.find_group(groups, password.id) is password
    assert insights.unanswered_groups(engine, faq.collection, NOW - dt.timedelta(hours=1)) == []
    # other collections were logged: "turn the log on" would be wrong (see test_a_log_table_never_written...)
    with pytest.raises(QueryLogEmpty, match="The query log keeps no query of 'nothing_logged_here'"):
        insights.unanswered_groups(engine, "nothing_logged_here", NOW)


def test_promote_a_group(engine, encoder, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    _unanswered_log(engine, encoder, faq.collection)
    since = NOW - dt.timedelta(days=30)
    password, paypal, *_ = insights.unanswered_groups(engine, faq.collection, since)
    entry = insights.promote_group(faq, password, faq_id="password", answer="Use the 'forgot password' link.")
    assert entry.question == password.representative.text
    assert faq.answer("I forgot my password").entry.faq_id == "password"
    left = insights.unanswered_groups(engine, faq.collection, since)
    assert [g.size for g in left] == [8, 4, 1]
    with pytest.raises(AlreadyResolved, match="already promoted, as FAQ entry password"):
        insights.promote_group(faq, password, faq_id="password2", answer="again")
    assert "password2" not in {e.faq_id for e in faq.entries()}  # nothing half-written

    # as a phrasing of an existing entry: two promoters at once, exactly one wins
    outcomes: list[str] = []

    def promote() -> None:
        try:
            insights.promote_group(faq, paypal, faq_id="cards", question="Can I pay with PayPal?")
            outcomes.append("promoted")
        except AlreadyResolved:
            outcomes.append("already")

    threads = [threading.Thread(target=promote) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already", "promoted"]
    cards = {e.faq_id: e for e in faq.entries()}["cards"]
    assert cards.alternatives == ("Can I pay with PayPal?",)
    assert [g.size for g in insights.unanswered_groups(engine, faq.collection, since)] == [4, 1]
    with pytest.raises(InvalidInput, match="is new: give its answer"):
        insights.promote_group(faq, password, faq_id="brand-new")


def test_unanswered_and_promote_commands(capsys, engine, encoder, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    _unanswered_log(engine, encoder, faq.collection)
    code = main(["-q", "faq", "unanswered", "-c", faq.collection, "--since", "30d", "--json"])
    out, _ = capsys.readouterr()
    groups = json.loads(out)
    assert code == 0 and [g["size"] for g in groups] == [14, 8, 4, 1]
    assert groups[1]["nearest"][0]["faq_id"] == "cards"
    code = main(["-q", "faq", "unanswered", "-c", faq.collection])
    out, _ = capsys.readouterr()
    assert code == 0 and f"[{groups[0]['id']}] 14 asked" in out and "nearest:" in out
    args = ["-q", "faq", "promote", groups[2]["id"], "-c", faq.collection, "--id", "canada", "--answer", "Yes."]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "promoted already" in err


def test_cli_search_and_ask_log_when_turned_on(capsys, engine, logged, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    assert main(["-q", "search", "sending an item back", "-c", faq.collection, "-k", "2"]) == 0
    assert main(["-q", "faq", "ask", "sending an item back", "-c", faq.collection]) == 0
    capsys.readouterr()
    rows = _rows(engine, faq.collection)
    assert [(r.kind, r.k, r.answered) for r in rows] == [("search", 2, None), ("faq", 3, True)]
    assert all(r.query_text == "sending an item back" for r in rows)


FORGED = "what colour is the sky\n[aaa] 99 asked, 1 distinct: \x1b[31mRED\u202eevil"


def test_control_characters_of_logged_texts_are_shown_not_obeyed(capsys, engine, logged, faq: FAQMatcher) -> None:  # type: ignore[no-untyped-def]
    """A question holding ESC sequences, a newline or a bidi override prints as escapes in the
    human output (it recoloured the terminal and forged a line); --json keeps the exact text."""
    faq.load([FAQEntry("sky\x1b]0;pwned\x07", "Why is the \x1b[2Jsky blue?", "Light\r\nscatters.\x1b[0m")])
    assert main(["-q", "faq", "ask", FORGED, "-c", faq.collection]) == 0
    assert main(["-q", "faq", "ask", "why is the sky blue", "-c", faq.collection]) == 0
    asked = capsys.readouterr().out
    assert "\x1b" not in asked and "\r" not in asked
    assert "[sky\\x1b]0;pwned\\x07] Why is the \\x1b[2Jsky blue?" in asked and "  Light\nscatters.\\x1b[0m\n" in asked
    assert main(["-q", "faq", "list", "-c", faq.collection]) == 0
    assert main(["-q", "search", "sky", "-c", faq.collection, "-k", "4"]) == 0
    listed = capsys.readouterr().out
    assert "\x1b" not in listed and "sky\\x1b]0;pwned\\x07" in listed and "Why is the \\x1b[2Jsky" in listed
    insights.flush()
    assert main(["-q", "faq", "unanswered", "-c", faq.collection]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\u202e" not in shown
    assert "what colour is the sky [aaa] 99 asked, 1 distinct: \\x1b[31mRED\\u202eevil" in shown
    assert not any(line.startswith("[aaa]") for line in shown.splitlines())
    assert main(["-q", "faq", "unanswered", "-c", faq.collection, "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)
    assert group["representative"] == FORGED


# promoted phrasings and the FAQ file -------------------------------------------------------------
def _faq_file(path: Any, entries: list[FAQEntry]) -> Any:
    lines = ["faq_id\tquestion\tanswer\tcategory\talternatives"]
    lines += [f"{e.faq_id}\t{e.question}\t{e.answer}\t{e.category or ''}\t{'|'.join(e.alternatives)}" for e in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_keeps_the_phrasings_promotion_added(engine, encoder, store, collection_name, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # the reported sequence: import a file, promote a group as a phrasing, import the same file again
    faqs = _faq_file(tmp_path / "faqs.tsv", ENTRIES)
    assert main(["-q", "faq", "import", str(faqs), "-c", collection_name]) == 0
    faq = FAQMatcher(store, collection_name)
    _unanswered_log(engine, encoder, collection_name)
    since = NOW - dt.timedelta(days=30)
    paypal = insights.unanswered_groups(engine, collection_name, since)[1]
    insights.promote_group(faq, paypal, faq_id="cards", question="Can I pay with PayPal?")
    assert {e.faq_id: e for e in faq.entries()}["cards"].alternatives == ("Can I pay with PayPal?",)
    capsys.readouterr()

    assert main(["-q", "faq", "import", str(faqs), "-c", collection_name]) == 0
    line = capsys.readouterr().out
    assert "0 removed" in line, line
    cards = {e.faq_id: e for e in faq.entries()}["cards"]
    assert cards.alternatives == ("Can I pay with PayPal?",)
    best = faq.match("Can I pay with PayPal?", k=1)[0]
    assert best.entry.faq_id == "cards" and best.matched_text == "Can I pay with PayPal?" and best.score > 0.99
    assert "kept 1 promoted phrasing not in the file: `semsim faq export` saves them" in line, line
    assert cards.promoted == ("Can I pay with PayPal?",)  # marked in its document's metadata
    assert main(["-q", "faq", "list", "-c", collection_name]) == 0
    assert "(+1 phrasings, 1 promoted)" in capsys.readouterr().out
    # its questions were resolved at promotion: losing the phrasing would lose them for good
    assert [g.size for g in insights.unanswered_groups(engine, collection_name, since)] == [14, 4, 1]

    assert main(["-q", "faq", "import", str(faqs), "-c", collection_name, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kept_promoted"], summary["removed"], summary["encoded"]) == (1, 0, 0)
    assert summary["unchanged"] == summary["phrasings"] == len(ENTRIES) + 1  # the kept one too: nothing rewritten

    # editing the entry in the file keeps the promoted phrasing (and its mark) beside the new text
    edited = [e if e.faq_id != "cards" else FAQEntry("cards", e.question, "Visa, Mastercard, Amex.") for e in ENTRIES]
    result = faq.load(edited)
    assert (result.kept_promoted, result.removed, result.encoded) == (1, 0, 0)
    cards = {e.faq_id: e for e in faq.entries()}["cards"]
    assert cards.answer == "Visa, Mastercard, Amex." and cards.promoted == ("Can I pay with PayPal?",)

    # --replace: the file is the whole truth, the promoted phrasing goes and is counted as removed
    assert main(["-q", "faq", "import", str(faqs), "-c", collection_name, "--replace", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kept_promoted"], summary["removed"]) == (0, 1)
    cards = {e.faq_id: e for e in faq.entries()}["cards"]
    assert cards.alternatives == cards.promoted == ()
    assert store.count(collection_name) == len(ENTRIES)


def test_import_promote_export_import_round_trips(engine, encoder, store, collection_name, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.faq import read_faq_file

    faqs = _faq_file(tmp_path / "faqs.tsv", ENTRIES)
    assert main(["-q", "faq", "import", str(faqs), "-c", collection_name]) == 0
    faq = FAQMatcher(store, collection_name)
    _unanswered_log(engine, encoder, collection_name)
    password, paypal, *_ = insights.unanswered_groups(engine, collection_name, NOW - dt.timedelta(days=30))
    insights.promote_group(faq, paypal, faq_id="cards", question="Can I pay with PayPal?")
    insights.promote_group(faq, password, faq_id="password", answer="Use the 'forgot password' link.")
    before = {e.faq_id: e for e in faq.entries()}
    capsys.readouterr()

    exported = tmp_path / "export.tsv"
    assert main(["-q", "faq", "export", str(exported), "-c", collection_name]) == 0
    assert f"{len(ENTRIES) + 1} entries" in capsys.readouterr().out
    read = {e.faq_id: e for e in read_faq_file(exported)}
    assert set(read) == set(before)  # the entry promotion created too
    assert read["cards"].alternatives == ("Can I pay with PayPal?",)  # the phrasing promotion added
    assert all(read[k].question == e.question and read[k].answer == e.answer for k, e in before.items())

    assert main(["-q", "faq", "import", str(exported), "-c", collection_name, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["encoded"], summary["inserted"], summary["updated"], summary["removed"]) == (0, 0, 0, 0)
    assert summary["kept_promoted"] == 0  # the file lists it now
    assert {e.faq_id: e for e in faq.entries()} == before  # marks kept: the phrasing was promoted

    # the export is refused over an existing file (which stays as it was) unless --overwrite
    text = exported.read_text(encoding="utf-8")
    assert main(["-q", "faq", "export", str(exported), "-c", collection_name]) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "exists" in err and "--overwrite" in err
    assert exported.read_text(encoding="utf-8") == text
    assert main(["-q", "faq", "export", str(exported), "-c", collection_name, "--overwrite"]) == 0
    assert exported.read_text(encoding="utf-8") == text  # same collection, same file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.tsv", "faqs.tsv"]  # no temporary file left
