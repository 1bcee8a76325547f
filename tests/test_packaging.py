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
