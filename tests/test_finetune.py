"""Fine-tuning end to end on a few dozen self-made pairs with tiny local models (plumbing, not quality):
training runs, dev metrics come before and after, the saved model loads by path everywhere, and a
failed run leaves nothing at --out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets", reason="fine-tuning needs the datasets package (sentence-transformers' trainers)")
pytest.importorskip("accelerate", reason="fine-tuning needs the accelerate package (sentence-transformers' trainers)")

from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError, InvalidInput

SCORED = [
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("A woman is slicing an onion.", "A woman cuts an onion.", 4.8),
    ("The cat sleeps on the sofa.", "A cat is asleep on the couch.", 4.6),
    ("Two children run in a park.", "Two kids run through the park.", 4.4),
    ("The train was late.", "The train arrived late.", 4.8),
    ("He bought a car.", "He purchased an automobile.", 4.2),
    ("A man is playing a guitar.", "A man is playing a piano.", 2.6),
    ("A woman is slicing an onion.", "A woman is slicing a tomato.", 2.8),
    ("The cat sleeps on the sofa.", "The dog sleeps on the sofa.", 2.4),
    ("Two children run in a park.", "Two children sit in a park.", 2.2),
    ("The train was late.", "The bus was late.", 2.8),
    ("He bought a car.", "He sold a car.", 2.0),
    ("A man is playing a guitar.", "The market fell today.", 0.0),
    ("A woman is slicing an onion.", "The train was late.", 0.2),
    ("The cat sleeps on the sofa.", "He bought a car.", 0.0),
    ("Two children run in a park.", "The committee approved the budget.", 0.4),
    ("The train was late.", "She paints flowers.", 0.0),
    ("He bought a car.", "The volcano erupted.", 0.2),
    ("A dog catches a frisbee.", "A dog catches a flying disc.", 4.6),
    ("A dog catches a frisbee.", "A dog sleeps in the grass.", 1.4),
    ("A dog catches a frisbee.", "Interest rates went up.", 0.0),
    ("The sun is shining.", "It is a sunny day.", 4.4),
    ("The sun is shining.", "It is raining heavily.", 1.0),
    ("The sun is shining.", "The printer is out of ink.", 0.0),
]


def write_csv(path: Path, rows: list[tuple[object, ...]], header: str = "") -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        if header:
            handle.write(header + "\n")
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_csv(tmp_path / "train.csv", SCORED),
        "dev": write_csv(tmp_path / "dev.csv", SCORED[::2]),
        "unscored": write_csv(
            tmp_path / "pairs.csv", [(a, b) for a, b, s in SCORED if s >= 4], header="query,positive"
        ),
    }


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}"))


def test_bi_encoder_cosine_end_to_end(
    tiny_bi_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from semsim_pg.encoder import Encoder

    out = tmp_path / "models" / "bi"
    argv = ["-q", "finetune", "bi-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--out", str(out), "--max-steps", "2", "--batch-size", "8", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == "cosine" and result["steps"] == 2 and result["train_pairs"] == len(SCORED)
    assert set(result["before"]) == set(result["after"]) == {"spearman_cosine", "pearson_cosine"}
    assert result["before"] != result["after"]  # the weights moved
    assert (out / "modules.json").is_file() and not leftovers(out.parent, "bi")
    encoder = Encoder(str(out))
    vectors = encoder.encode(["hello world", "goodbye"])
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_bi_encoder_mnrl_from_unscored_pairs(
    tiny_bi_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mnrl"
    argv = ["finetune", "bi-encoder", "--train", str(files["unscored"]), "--dev", str(files["unscored"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--out", str(out), "--max-steps", "1", "--batch-size", "4"]
    assert main(["-q", *argv]) == 0
    table = capsys.readouterr().out
    assert "multiple" in table.lower() or "mnrl" in table
    assert "accuracy@1" in table and "mrr@10" in table and "before" in table and "after" in table
    assert (out / "modules.json").is_file()
    # scored loss on unscored pairs is refused before any training
    with pytest.raises(InputFileError, match="--loss mnrl"):
        from semsim_pg.finetune import finetune_bi_encoder

        finetune_bi_encoder(files["unscored"], files["dev"], str(tiny_bi_encoder_path), tmp_path / "x", loss="cosine")


def test_cross_encoder_end_to_end(
    tiny_cross_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentence_transformers import CrossEncoder

    out = tmp_path / "ce"
    argv = ["-q", "finetune", "cross-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_cross_encoder_path), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "cross-encoder" and result["steps"] == 3  # 24 pairs / 8, one epoch
    assert set(result["after"]) == {"spearman", "pearson"}
    scores = CrossEncoder(str(out)).predict([("A man plays guitar.", "A man is playing a guitar.")])
    assert 0.0 <= float(scores[0]) <= 1.0  # the sigmoid head was saved with the model
    # usable through the SEMSIM_CROSS_ENCODER setting: `semsim eval sts --cross-encoder` without a path
    import dataclasses

    from semsim_pg.settings import configure, get_settings

    previous = get_settings()
    configure(dataclasses.replace(previous, cross_encoder=str(out)))
    try:
        assert main(["-q", "eval", "sts", str(files["dev"]), "--cross-encoder", "--json"]) == 0
    finally:
        configure(previous)
    report = json.loads(capsys.readouterr().out)
    assert report["results"][-1]["name"] == str(out)
    assert report["results"][-1]["spearman"]["score"] == pytest.approx(result["after"]["spearman"], abs=1e-6)


def test_cross_encoder_needs_scores_and_regression(
    tiny_cross_encoder_path: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    from semsim_pg.finetune import finetune_cross_encoder

    with pytest.raises(InputFileError, match="no score column"):
        finetune_cross_encoder(files["unscored"], files["dev"], str(tiny_cross_encoder_path), tmp_path / "x")
    with pytest.raises(InvalidInput, match="regression"):
        finetune_cross_encoder(files["train"], files["dev"], str(tiny_cross_encoder_path), tmp_path / "x", loss="mnrl")
    assert not (tmp_path / "x").exists()


def test_out_is_never_half_written(
    tiny_cross_encoder_path: Path, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semsim_pg import fsutil
    from semsim_pg.finetune import finetune_cross_encoder

    out = tmp_path / "ce"
    out.mkdir()
    (out / "keep.txt").write_text("an older model", encoding="utf-8")
    # an existing --out is refused unless --overwrite
    with pytest.raises(InvalidInput, match="--overwrite"):
        finetune_cross_encoder(files["train"], files["dev"], str(tiny_cross_encoder_path), out, max_steps=1)

    # a crash after training (here: while swapping the new model in) leaves the old model and no temporary folders
    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsutil, "_swap_into_place", crash)
    with pytest.raises(OSError, match="disk full"):
        finetune_cross_encoder(
            files["train"], files["dev"], str(tiny_cross_encoder_path), out, max_steps=1, overwrite=True, progress=False
        )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not leftovers(tmp_path, "ce")
    monkeypatch.undo()
    # --overwrite replaces it in one rename
    finetune_cross_encoder(
        files["train"], files["dev"], str(tiny_cross_encoder_path), out, max_steps=1, overwrite=True, progress=False
    )
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()
    assert not leftovers(tmp_path, "ce")
