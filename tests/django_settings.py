"""Django settings for the test suite (placeholder until django_semsim lands).

Sets SEMSIM_DATA_DIR itself because pytest-django imports this module before tests/conftest.py.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SEMSIM_DATA_DIR", tempfile.mkdtemp(prefix="semsim-test-"))

SECRET_KEY = "tests"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
