"""The wheel ships every package, the migrations and the data files."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top in ("semsim_pg", "django_semsim"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "migrations").rglob("__init__.py"):
        found.add(".".join(("semsim_pg", *init.parent.relative_to(ROOT).parts)))
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "these listed packages have no __init__.py: the build would fail"
    assert config["package-dir"]["semsim_pg.migrations"] == "migrations"


def test_migrations_are_found_from_the_installed_package() -> None:
    from semsim_pg.db import head_revision, migrations_dir

    assert (migrations_dir() / "env.py").exists()
    assert head_revision() is not None


def test_the_sdist_carries_the_license_and_the_whole_test_suite(tmp_path: Path) -> None:
    """Packagers run the tests from the unpacked sdist: conftest, settings and the Django test
    app must be in it, not only the test_*.py files setuptools picks up by itself."""
    import shutil
    import subprocess
    import sys
    import tarfile

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path / "src"
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = "import setuptools.build_meta as b; print(b.build_sdist('dist'))"
    done = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    archive = source / "dist" / done.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {name for name in tracked if name.startswith("tests/")} | {"LICENSE", "migrations/env.py"}
    assert expected - names == set()
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
