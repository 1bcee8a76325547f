"""The encoder: offline model resolution, normalised vectors, cache, truncation warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from semsim_pg.encoder import Encoder, get_encoder, resolve_model, text_hash
from semsim_pg.errors import InvalidQuery, ModelLoadError


def test_default_name_resolves_to_packaged_weights() -> None:
    source = resolve_model("all-MiniLM-L6-v2")
    assert source.kind == "packaged"
    assert source.name == "all-MiniLM-L6-v2"
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"


def test_local_directory_resolves_to_its_absolute_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = resolve_model(str(tmp_path))
    assert (source.kind, source.name) == ("path", str(tmp_path.resolve()))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))


def test_identity_and_normalised_float32(encoder) -> None:  # type: ignore[no-untyped-def]
    vectors = encoder.encode(["The dog chases the cat", "Stock markets fell"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    info = encoder.describe()
    assert (info["name"], info["dimension"], info["max_seq_length"]) == ("all-MiniLM-L6-v2", 384, 256)
    assert get_encoder() is encoder  # one per process and name


def test_paraphrase_is_closer_than_unrelated(encoder) -> None:  # type: ignore[no-untyped-def]
    a, b, c = encoder.encode(
        ["The dog chases the cat", "The feline is being pursued by the canine", "Interest rates rose again"]
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_query_cache(encoder) -> None:  # type: ignore[no-untyped-def]
    first = encoder.encode_query("an uncached query for the cache test")
    count = encoder.encoded_count
    second = encoder.encode_query("an uncached query for the cache test")
    assert encoder.encoded_count == count
    assert second is first and not second.flags.writeable
    with pytest.raises(InvalidQuery):
        encoder.encode_query("  ")


def test_warns_when_text_will_be_truncated(encoder, caplog) -> None:  # type: ignore[no-untyped-def]
    long_text = "word " * 600
    with caplog.at_level(logging.WARNING, logger="semsim_pg.encoder"):
        encoder.encode(["short text", long_text])
    assert "truncated" in caplog.text and "text #1" in caplog.text and "--chunk" in caplog.text
    assert "semantic_chunking" in caplog.text  # the Django option too
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="semsim_pg.encoder"):
        encoder.encode(["short text"])
    assert "truncated" not in caplog.text


def test_text_hash_matches_sql(engine) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    text = "Grüße, 世界 — naïve café"
    with engine.connect() as conn:
        in_sql = conn.execute(sa.text("SELECT encode(sha256(convert_to(:t, 'UTF8')), 'hex')"), {"t": text}).scalar()
    assert in_sql == text_hash(text)


@pytest.fixture()
def network_attempts(monkeypatch) -> list[object]:  # type: ignore[no-untyped-def]
    """Every attempt to reach the network, recorded and refused, so a test sees it."""
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("the test forbids network access")

    for owner, name in ((socket.socket, "connect"), (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    return attempts


def test_unreachable_hub_model_fails_with_a_clear_error_without_touching_the_network(  # type: ignore[no-untyped-def]
    monkeypatch, network_attempts
) -> None:
    """Offline, a hub name that is not on disk fails at once, without one connection attempt
    (the ~80 s of retries this guards against)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = Encoder("some-org/not-a-real-model-xyz")
    with pytest.raises(ModelLoadError, match="Cannot load model 'some-org/not-a-real-model-xyz'"):
        encoder.encode(["hello"])
    assert network_attempts == []


def test_uncached_hub_name_fails_at_once_when_the_hub_is_unreachable(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Not offline by configuration, but the hub refuses connections (a machine without a network):
    the probe shared with the cross-encoder fails at once with one line naming the fixes, instead
    of the hub client's retries (about 80 s, each one logged)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING), pytest.raises(ModelLoadError) as info:
        Encoder("nonexistent-model-xyz").encode(["hello"])
    message = str(info.value)
    assert message.startswith("Cannot load model 'nonexistent-model-xyz': ")
    assert "\n" not in message and ".." not in message
    for fix in ("127.0.0.1:9 is unreachable", "local model directory", "all-MiniLM-L6-v2", "HF_HUB_OFFLINE"):
        assert fix in message
    assert [r.getMessage() for r in caplog.records if r.name.startswith("huggingface_hub")] == []


def test_hub_name_in_the_local_cache_loads_without_the_network(  # type: ignore[no-untyped-def]
    monkeypatch, tmp_path, tiny_bi_encoder_path, network_attempts
) -> None:
    """A bare hub name cached under sentence-transformers' organization (as a download leaves it)
    loads from the cache without one connection attempt, even with the hub unreachable."""
    import shutil

    snapshot = tmp_path / "models--sentence-transformers--tiny-semsim-test" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_bi_encoder_path, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    vectors = Encoder("tiny-semsim-test", backend="torch", cache_size=0).encode(["hello", "world"])
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert network_attempts == []


def test_bfloat16_precision_gives_unit_vectors_close_to_float32(encoder) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.settings import configure, get_settings

    texts = ["The dog chases the cat", "How do I reset my password?", "Interest rates rose again"]
    configured = get_settings()

    try:
        configure(configured.replace(precision="bfloat16"))
        half = Encoder().encode(texts)
    finally:
        configure(configured)
    full = encoder.encode(texts)
    assert half.dtype == np.float32
    assert np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    assert float((half * full).sum(axis=1).min()) > 0.99
