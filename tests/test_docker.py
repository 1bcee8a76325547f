"""The Docker example, checked without Docker: the compose file and the Dockerfile say what a
production deployment needs (DEBUG off, allowed hosts from the environment, gunicorn, static
files served), runserver appears only in the ``dev`` profile, and every file they name exists."""

from __future__ import annotations

import py_compile
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1]) for row in rows]


def test_only_the_dev_profile_runs_runserver_with_debug(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        command = " ".join(service.get("command", []))
        dev = "dev" in service.get("profiles", [])
        env = service.get("environment", {})
        if "runserver" in command:
            assert dev, f"{name} runs runserver outside the dev profile"
        if name != "db":
            assert env.get("DJANGO_DEBUG") == ("1" if dev else "0"), name
            assert env["DJANGO_ALLOWED_HOSTS"].startswith("${DJANGO_ALLOWED_HOSTS"), name  # from the environment
            assert "SEMSIM_DATABASE_URL" in env, name  # never the embedded server in a container
    assert "profiles" not in services["web"] and "command" not in services["web"]  # the image's gunicorn
    assert any("dev" in s.get("profiles", []) for s in services.values())


def test_the_image_serves_with_gunicorn_and_collected_static_files(tmp_path: Path) -> None:
    steps = _instructions(DOCKER / "Dockerfile")
    text = " ".join(args for _, args in steps)
    assert "runserver" not in text
    assert "collectstatic --noinput" in text and "whitenoise" in text and "gunicorn" in text
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "DJANGO_DEBUG=0" in env and "DJANGO_ALLOWED_HOSTS" not in env  # no "*" baked in
    # every COPY source is in the repository (the build context is its root)
    for kind, args in steps:
        if kind == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source
    (entrypoint,) = [args for kind, args in steps if kind == "ENTRYPOINT"]
    assert "semsim-example-entrypoint" in entrypoint
    script = (DOCKER / "entrypoint.sh").read_text()
    assert "exec gunicorn production_wsgi:application" in script and "runserver" not in script
    assert "manage.py semsim_warmup" in script  # the HNSW indexes read into memory before serving
    subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")], check=True)  # shell syntax
    py_compile.compile(str(DOCKER / "production_wsgi.py"), cfile=str(tmp_path / "wsgi.pyc"), doraise=True)


def test_the_image_installs_what_the_defaults_need_and_keeps_the_admins_edits() -> None:
    """The package's license files are in the build context the image installs from (setuptools
    warns, and will fail, without them); the onnx extra is in (the default SEMSIM_BACKEND=auto
    measures onnxruntime against torch); the sample data is loaded into an empty site only."""
    import tomllib

    steps = _instructions(DOCKER / "Dockerfile")
    copied = {source for kind, args in steps if kind == "COPY" for source in shlex.split(args)[:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["license-files"]) <= copied
    (install,) = [args for kind, args in steps if kind == "RUN" and 'pip install ".[' in args]
    extras = re.search(r'"\.\[([^\]]*)\]"', install)
    assert extras and {"encoders", "model", "django", "onnx"} <= set(extras.group(1).split(","))
    script = (DOCKER / "entrypoint.sh").read_text()
    assert "manage.py load_sample_data --if-empty" in script
