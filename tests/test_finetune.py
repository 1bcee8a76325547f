"""Fine-tuning end to end on a few dozen self-made pairs with tiny local models (plumbing, not quality):
training runs, dev metrics come before and after, the saved model loads by path everywhere, and a
failed run leaves nothing at --out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("datasets", reason="fine-tuning needs the datasets package (sentence-transformers' trainers)")
pytest.importorskip("accelerate", reason="fine-tuning needs the accelerate package (sentence-transformers' trainers)")

from semsim_pg.cli.main import main
from semsim_pg.errors import InputFileError, InvalidInput, NotImproved
from semsim_pg.finetune import RECORD_NAME, decide_rerank, finetune_bi_encoder, read_record

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


#: a learning rate at which a few steps move the tiny model's dev metric up (only a better model is saved)
FAST = {"learning_rate": 1e-3}


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}"))


def test_bi_encoder_cosine_end_to_end(
    tiny_bi_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from semsim_pg.encoder import Encoder

    out = tmp_path / "models" / "bi"
    argv = ["-q", "finetune", "bi-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--out", str(out), "--max-steps", "6", "--batch-size", "8", "--json"]
    assert main([*argv, "--learning-rate", "5e-3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == "cosine" and result["steps"] == 6 and result["train_pairs"] == len(SCORED)
    assert set(result["before"]) == set(result["after"]) == {"spearman_cosine", "pearson_cosine"}
    assert result["before"] != result["after"]  # the weights moved
    assert (out / "modules.json").is_file() and not leftovers(out.parent, "bi")
    # saved with its record, as a run from a collection is: the deciding dev metric rose
    record = read_record(out)
    assert record is not None and record.kind == "bi-encoder" and record.collection is None
    assert record.metric == result["metric"] == "spearman_cosine" and record.gain > 0
    assert record.after["spearman_cosine"] == pytest.approx(result["after"]["spearman_cosine"], abs=1e-4)
    assert record.data["train_file"] == str(files["train"]) and record.steps == 6
    encoder = Encoder(str(out))
    vectors = encoder.encode(["hello world", "goodbye"])
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_bi_encoder_mnrl_from_unscored_pairs(
    tiny_bi_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mnrl"
    argv = ["finetune", "bi-encoder", "--train", str(files["unscored"]), "--dev", str(files["unscored"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--out", str(out), "--max-steps", "3", "--batch-size", "4"]
    assert main(["-q", *argv, "--learning-rate", "1e-3"]) == 0
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
    assert main([*argv, "--learning-rate", "1e-3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "cross-encoder" and result["steps"] == 3  # 24 pairs / 8, one epoch
    assert set(result["after"]) == {"spearman", "pearson"}
    record = read_record(out)
    assert record is not None and record.kind == "cross-encoder" and record.metric == "spearman" and record.gain > 0
    assert not decide_rerank("any")  # not a reranker measured on a collection: rerank="auto" leaves it off
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
    (out / "merges.txt").write_text("an older model", encoding="utf-8")
    (out / "modules.json").write_text("[]", encoding="utf-8")  # a model's folder: --overwrite replaces no other
    # an existing --out is refused unless --overwrite
    with pytest.raises(InvalidInput, match="--overwrite"):
        finetune_cross_encoder(files["train"], files["dev"], str(tiny_cross_encoder_path), out, max_steps=1)

    # a crash after training (here: while swapping the new model in) leaves the old model and no temporary folders
    args, run = (
        (files["train"], files["dev"], str(tiny_cross_encoder_path)),
        {"max_steps": 3, "overwrite": True, "progress": False, **FAST},
    )

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fsutil, "_swap_into_place", crash)
    with pytest.raises(OSError, match="disk full"):
        finetune_cross_encoder(*args, out, **run)
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "modules.json"]
    assert not leftovers(tmp_path, "ce")
    monkeypatch.undo()
    # --overwrite replaces it in one rename
    finetune_cross_encoder(*args, out, **run)
    assert (out / "config.json").is_file() and not (out / "merges.txt").exists()
    assert not leftovers(tmp_path, "ce")


def test_a_model_not_better_on_the_dev_pairs_is_not_saved(
    tiny_bi_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bi"
    out.mkdir()
    (out / "merges.txt").write_text("an older model", encoding="utf-8")
    (out / "modules.json").write_text("[]", encoding="utf-8")
    # a learning rate of 0 leaves the weights as they were: the dev metric cannot rise
    argv = ["-q", "finetune", "bi-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--out", str(out), "--max-steps", "2", "--batch-size", "8"]
    assert main([*argv, "--learning-rate", "0", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "not better on the dev part (spearman_cosine" in err and "nothing was saved" in err
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "modules.json"] and not leftovers(tmp_path, "bi")
    with pytest.raises(NotImproved, match=r"mrr@10"):  # (query, positive) pairs: decided by MRR@10
        finetune_bi_encoder(
            files["unscored"],
            files["unscored"],
            str(tiny_bi_encoder_path),
            tmp_path / "mnrl",
            max_steps=1,
            batch_size=4,
            learning_rate=0.0,
            progress=False,
        )
    assert not (tmp_path / "mnrl").exists() and not leftovers(tmp_path, "mnrl")


def test_overwrite_never_replaces_a_collections_model(
    store: Any,
    collection_name: str,
    tiny_bi_encoder_path: Path,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from semsim_pg.db import connect

    model = tmp_path / "models" / "sts-bi"
    shutil.copytree(tiny_bi_encoder_path, model)
    store.create_collection(collection_name, model=str(model))
    capsys.readouterr()  # transformers' "Loading weights" bar, when no CLI call turned it off before
    before = sorted(p.name for p in model.iterdir())
    argv = ["-q", "finetune", "bi-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_bi_encoder_path), "--max-steps", "1", "--overwrite"]
    # the same folder by another spelling (relative, through a symlink) is the same model
    (tmp_path / "link").symlink_to(model.parent)
    assert main([*argv, "--out", str(tmp_path / "link" / "sts-bi")]) == 1
    err = capsys.readouterr().err
    assert f"collection {collection_name!r}" in err and f"semsim reembed -c {collection_name} --model NEW" in err
    assert "nothing was written" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in model.iterdir()) == before and not leftovers(model.parent, "sts-bi")
    # --out the folder that holds it: replacing that deleted the collection's model (exact paths were compared)
    assert main([*argv, "--out", str(model.parent)]) == 1
    err = capsys.readouterr().err
    assert f"holds the model of collection {collection_name!r} ({model})" in err, err
    assert "nothing was written" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in model.iterdir()) == before and not leftovers(tmp_path, "models")

    # the Django app's vectors in the same database count too (its table of models, read by plain SQL)
    other = tmp_path / "models" / "django-bi"
    shutil.copytree(tiny_bi_encoder_path, other)
    table = "django_semsim_embeddingmodel"
    with connect(store.engine) as conn, conn.begin():
        assert conn.exec_driver_sql(f"SELECT to_regclass('{table}')").scalar() is None  # nobody else's table
        conn.exec_driver_sql(f"CREATE TABLE {table} (name varchar(255) PRIMARY KEY, dimension integer)")
        conn.exec_driver_sql(f"INSERT INTO {table} VALUES (%s, 32)", (str(other),))
    try:
        assert main([*argv, "--out", str(other)]) == 1
        err = capsys.readouterr().err
        assert "the Django app's vectors" in err and "semsim_reindex --all" in err
    finally:
        with connect(store.engine) as conn, conn.begin():
            conn.exec_driver_sql(f"DROP TABLE {table}")
    assert not (other / RECORD_NAME).exists()


def test_overwrite_replaces_only_a_model_folder(store: Any, tiny_bi_encoder_path: Path, tmp_path: Path) -> None:
    """--overwrite replaced any non-empty folder: --out a project, a home, a folder of models; then
    any folder with a config.json (a project's), deleting its src/ with it."""
    import shutil

    from semsim_pg.finetune import common

    out = tmp_path / "work"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "config.json").write_text('{"name": "myapp"}', encoding="utf-8")  # a project's, not a model's
    with pytest.raises(InvalidInput, match=r"holds no model \(no modules.json or semsim-finetune.json") as error:
        common.check_out(out, overwrite=True, engine=store.engine)
    assert "nothing was written" in str(error.value) and len(str(error.value).splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    (out / "config.json").unlink()
    (out / "notes.txt").unlink()
    for marker in common.MODEL_MARKERS:  # a saved model, or semsim's record of one: replaced
        (out / marker).write_text("{}", encoding="utf-8")
        common.check_out(out, overwrite=True, engine=store.engine)
        (out / marker).unlink()
    (out / "config.json").write_text("{}", encoding="utf-8")
    for weights in ("model.onnx", "tf_model.h5", "model.safetensors"):  # config.json beside weights
        (out / weights).write_bytes(b"weights")
        common.check_out(out, overwrite=True, engine=store.engine)
        (out / weights).unlink()
    (out / "model.safetensors").write_bytes(b"weights")
    # files named as a model's are known by name, not by suffix: a user's notes are not a tokenizer's
    for mine in ("notes.txt", "package.json", "train.jsonl"):
        (out / mine).write_text("mine", encoding="utf-8")
        with pytest.raises(InvalidInput, match=f"also what a saved model does not \\({mine}\\)"):
            common.check_out(out, overwrite=True, engine=store.engine)
        (out / mine).unlink()

    # a model saved by sentence-transformers, module folders and all, is replaced ...
    model = tmp_path / "model"
    shutil.copytree(tiny_bi_encoder_path, model)
    (model / "onnx").mkdir()
    (model / "onnx" / "model.onnx").write_bytes(b"onnx")
    (model / "onnx" / "model_qint8_avx512.onnx").write_bytes(b"onnx")
    # a copy from the hub: its card, its training script, huggingface-cli's download record
    (model / "README.md").write_text("# model card", encoding="utf-8")
    (model / "train_script.py").write_text("# the authors' script", encoding="utf-8")
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download.lock").write_text("", encoding="utf-8")
    common.check_out(model, overwrite=True, engine=store.engine)
    # ... but not with a project's files in it: they would go with it
    (model / "src").mkdir()
    (model / "src" / "main.py").write_text("print(1)", encoding="utf-8")
    (model / "run.py").write_text("print(1)", encoding="utf-8")
    (model / "1_Pooling" / "data.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"also what a saved model does not \(1_Pooling/data.csv, run.py, src/\)"):
        common.check_out(model, overwrite=True, engine=store.engine)
    assert (model / "src" / "main.py").is_file()


def test_overwrite_keeps_a_project_with_a_config_json(
    tiny_cross_encoder_path: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's case through the CLI: the model improved and was saved, proj/src was gone."""
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text('{"name": "myapp"}', encoding="utf-8")
    (proj / "src" / "main.py").write_text("print(1)", encoding="utf-8")
    # the settings of test_out_is_never_half_written, where the model improves and is saved
    argv = ["-q", "finetune", "cross-encoder", "--train", str(files["train"]), "--dev", str(files["dev"])]
    argv += ["--base", str(tiny_cross_encoder_path), "--out", str(proj), "--overwrite"]
    assert main([*argv, "--max-steps", "3", "--learning-rate", "1e-3"]) == 1
    err = capsys.readouterr().err
    assert "holds no model" in err and "nothing was written" in err and len(err.strip().splitlines()) == 1
    assert (proj / "src" / "main.py").read_text(encoding="utf-8") == "print(1)" and not leftovers(tmp_path, "proj")


def test_overwrite_without_a_reachable_database_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from semsim_pg.finetune import common
    from semsim_pg.settings import configure, get_settings

    out = tmp_path / "model"
    out.mkdir()
    (out / "modules.json").write_text("[]", encoding="utf-8")
    previous = get_settings()
    # nothing listens on port 1: a run on pair files away from the database still overwrites, and says so
    configure(dataclasses.replace(previous, database_url="postgresql://semsim@127.0.0.1:1/semsim"))
    try:
        with caplog.at_level("WARNING", logger="semsim_pg.finetune.common"):
            common.check_out(out, overwrite=True)
    finally:
        configure(previous)
    assert "could not check whether a collection's vectors were made with" in caplog.text
    with pytest.raises(InvalidInput, match="--overwrite"):
        common.check_out(out, overwrite=False)
