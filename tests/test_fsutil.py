"""atomic_directory: the new directory appears whole, a failure leaves the old one as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from semsim_pg.errors import InvalidInput
from semsim_pg.fsutil import atomic_directory


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replaces_the_directory_whole(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("one", encoding="utf-8")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("two", encoding="utf-8")
        assert not out.exists()  # nothing where readers look until the block is done
    assert (out / "a.txt").read_text(encoding="utf-8") == "one"
    assert (out / "sub" / "b.txt").read_text(encoding="utf-8") == "two"

    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("three", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert _leftovers(tmp_path) == []


def test_failure_keeps_the_old_directory(tmp_path: Path) -> None:
    out = tmp_path / "index"
    out.mkdir()
    (out / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_refuses_an_existing_path_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    with pytest.raises(InvalidInput, match="exists already"), atomic_directory(out):
        pytest.fail("the block must not run")
    assert _leftovers(tmp_path) == []


def test_creates_missing_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "model"
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("x", encoding="utf-8")
    assert (out / "x").is_file()


def test_atomic_write_text_writes_whole_or_not_at_all(tmp_path: Path) -> None:
    from semsim_pg.fsutil import atomic_write_text

    path = tmp_path / "sub" / "faqs.tsv"
    atomic_write_text(path, "one\r\ntwo\n")
    assert path.read_bytes() == b"one\r\ntwo\n"  # line endings as given
    with pytest.raises(InvalidInput, match="exists already"):
        atomic_write_text(path, "other")
    with pytest.raises(UnicodeEncodeError):  # fails halfway through: the old file stays whole
        atomic_write_text(path, "three" + "\ud800", overwrite=True)
    assert path.read_bytes() == b"one\r\ntwo\n"
    atomic_write_text(path, "four", overwrite=True)
    assert path.read_text(encoding="utf-8") == "four"
    assert sorted(p.name for p in path.parent.iterdir()) == ["faqs.tsv"]
