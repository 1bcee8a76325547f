"""Loading a model leaves the process as it found it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def test_a_collection_whose_model_folder_is_gone_says_so_and_the_way_on(
    store: Any,
    collection_name: str,
    tiny_bi_encoder_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from semsim_pg.cli.main import main
    from semsim_pg.errors import ModelLoadError
    from semsim_pg.store import DocumentStore

    model = tmp_path / "sts-bi"
    shutil.copytree(tiny_bi_encoder_path, model)
    store.create_collection(collection_name, model=str(model))
    store.upsert(collection_name, [("a", "my card was declined"), ("b", "how do I reset my PIN")], progress=False)
    shutil.rmtree(model)  # moved or deleted after the collection was encoded with it
    fresh = DocumentStore()  # a new process: no encoder loaded yet
    way_on = f"Collection {collection_name!r} was encoded with the model folder {model}, which no longer exists"
    with pytest.raises(ModelLoadError, match=way_on) as raised:
        fresh.search(collection_name, "declined card", k=1)
    assert f"semsim reembed -c {collection_name} --model MODEL" in str(raised.value)
    with pytest.raises(ModelLoadError, match=way_on):
        fresh.upsert(collection_name, [("c", "a new text")], progress=False)
    capsys.readouterr()
    assert main(["-q", "search", "declined card", "-c", collection_name]) == 1
    err = capsys.readouterr().err
    assert way_on in err and len(err.strip().splitlines()) == 1
    assert main(["collections"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(collection_name))
    assert str(model) in row and row.endswith("[folder missing]") and "a model folder is missing" in listing

    # the way on works without the old folder: reembed to another model, then search again
    assert main(["-q", "reembed", "-c", collection_name, "--model", str(tiny_bi_encoder_path)]) == 0
    capsys.readouterr()
    hits = DocumentStore().search(collection_name, "declined card", k=2)
    assert {hit.external_id for hit in hits} == {"a", "b"}
    assert main(["collections"]) == 0 and "[folder missing]" not in capsys.readouterr().out
