"""A bi-encoder (or a bare transformer) given where a cross-encoder belongs is refused before it
loads: sentence-transformers loaded it as a CrossEncoder with a new, untrained head and only
warned, so `semsim eval sts --cross-encoder` reported a Spearman of -17 and `--rerank` reordered
hits by noise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from semsim_pg.errors import ModelLoadError
from semsim_pg.rerank import Reranker

BI_ENCODER = "is a bi-encoder (sentence-transformers) model, not a cross-encoder: pass a cross-encoder folder"


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("semsim: error: "), err
    return err


def test_a_bi_encoder_folder_is_refused_by_eval_search_and_the_api(  # type: ignore[no-untyped-def]
    store, collection_name, tiny_bi_encoder_path: Path, tmp_path: Path, capsys
) -> None:
    from semsim_pg.cli.main import main

    with pytest.raises(ModelLoadError, match=re.escape(BI_ENCODER)):
        Reranker(str(tiny_bi_encoder_path)).score("a query", ["a text"])
    with pytest.raises(ModelLoadError, match=re.escape(BI_ENCODER)):  # the packaged all-MiniLM-L6-v2 is one too
        Reranker("all-MiniLM-L6-v2").score("a query", ["a text"])

    pairs = tmp_path / "sts.csv"
    pairs.write_text("a cat sleeps,a cat naps,4.5\nstocks fell,a dog barks,0.2\nit rains,it is raining,4.8\n")
    err = one_line_error(capsys, main(["-q", "eval", "sts", str(pairs), "--cross-encoder", str(tiny_bi_encoder_path)]))
    assert f"{tiny_bi_encoder_path} {BI_ENCODER}" in err and "semsim finetune cross-encoder" in err

    store.create_collection(collection_name)
    store.upsert(collection_name, [("cat", "a cat sleeps on the sofa"), ("stocks", "stock markets fell")])
    err = one_line_error(
        capsys, main(["-q", "search", "a kitten", "-c", collection_name, "--rerank", str(tiny_bi_encoder_path)])
    )
    assert BI_ENCODER in err


def test_cross_encoder_folders_still_load_and_a_bare_transformer_is_refused(  # type: ignore[no-untyped-def]
    tiny_cross_encoder_path: Path, tmp_path: Path
) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import BertModel

    plain = Reranker(str(tiny_cross_encoder_path)).score("a query", ["a text", "another"])  # a transformers folder
    # saved by sentence-transformers, it has modules.json and config_sentence_transformers.json too
    saved = tmp_path / "saved-cross-encoder"
    CrossEncoder(str(tiny_cross_encoder_path)).save(str(saved))
    assert (saved / "modules.json").is_file()
    assert Reranker(str(saved)).score("a query", ["a text", "another"]) == pytest.approx(plain, abs=1e-5)

    bare = tmp_path / "bare-bert"
    BertModel.from_pretrained(str(tiny_cross_encoder_path)).save_pretrained(str(bare))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).write_bytes((tiny_cross_encoder_path / name).read_bytes())
    with pytest.raises(ModelLoadError, match=r"is not a cross-encoder: its config\.json names BertModel"):
        Reranker(str(bare)).score("a query", ["a text"])


def test_eval_sts_loads_a_saved_cross_encoder(tiny_cross_encoder_path: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    from semsim_pg.evaluation.sts import load_cross_encoder

    saved = tmp_path / "saved"
    CrossEncoder(str(tiny_cross_encoder_path)).save(str(saved))
    model: Any = load_cross_encoder(str(saved))
    assert model.num_labels == 1
