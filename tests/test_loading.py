"""Loading a model leaves the process as it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semsim_pg.encoder import Encoder
from semsim_pg.evaluation.sts import load_cross_encoder
from semsim_pg.rerank import Reranker


def test_loading_local_models_leaves_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch, tiny_cross_encoder_path: Path
) -> None:
    # conftest sets HF_HUB_OFFLINE=1 for the whole run: without removing it here, a loader that
    # only setdefault()s it would change nothing and this test would pass whatever the loader does.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)

    encoder = Encoder("all-MiniLM-L6-v2", device="cpu")  # a fresh instance: the shared one may be loaded
    assert encoder.source.kind == "packaged" and not encoder.loaded
    assert encoder.encode(["hello"]).shape == (1, encoder.dimension)
    reranker = Reranker(str(tiny_cross_encoder_path), device="cpu")
    assert reranker.source.kind == "path"
    assert reranker.score("hello", ["hi"]).shape == (1,)
    load_cross_encoder(str(tiny_cross_encoder_path), device="cpu")

    assert dict(os.environ) == before


def test_a_model_loads_once_and_on_first_use(tiny_cross_encoder_path: Path) -> None:
    reranker = Reranker(str(tiny_cross_encoder_path), device="cpu")
    assert not reranker.loaded and reranker.load_seconds is None  # making one loads nothing
    model = reranker.load().model
    assert reranker.loaded and reranker.model is model  # loaded once, then shared


@pytest.mark.parametrize(
    ("load", "name"),
    [
        ("semsim_pg.evaluation.sts.load_cross_encoder", "not-cached-cross-encoder-xyz"),
        ("semsim_pg.finetune.common.load_bi_encoder", "not-cached-base-model-xyz"),
        ("semsim_pg.finetune.common.load_cross_encoder", "some-org/not-cached-base-model-xyz"),
    ],
)
def test_every_loader_of_a_hub_name_fails_at_once_without_the_hub(
    monkeypatch: pytest.MonkeyPatch, load: str, name: str
) -> None:
    """The STS cross-encoder and the fine-tuning bases ask the same probe as Encoder and Reranker:
    an uncached name with the hub unreachable fails at once in one line, not after the hub
    client's retries (about 80 s)."""
    import importlib

    from semsim_pg.errors import ModelLoadError

    module, _, function = load.rpartition(".")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError) as info:
        getattr(importlib.import_module(module), function)(name)
    message = str(info.value)
    assert name in message and "127.0.0.1:9 is unreachable" in message
    assert "\n" not in message and ".." not in message
