"""The test suite. Importing this package (pytest-django imports tests.django_settings before
tests/conftest.py; subprocesses of the tests import tests.* modules) gives the session a data
directory of its own for the embedded server, unless SEMSIM_DATA_DIR names one already (a
subprocess inherits its parent's), and removes it when the process that made it exits."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

if "SEMSIM_DATA_DIR" not in os.environ:
    _OWN_DATA_DIR = Path(tempfile.mkdtemp(prefix="semsim-test-"))
    os.environ["SEMSIM_DATA_DIR"] = str(_OWN_DATA_DIR)

    def _remove_own_data_dir() -> None:
        """The session's server and data (a few hundred MB) go with it: left behind, every run
        filled the disk a little more (48 GB of them here). Registered before the embedded
        server's exit hook, so it runs after it; the server is stopped here too in case another
        user of it is left."""
        from semsim_pg.server import stop_embedded_server

        try:
            stop_embedded_server(_OWN_DATA_DIR)
        finally:
            shutil.rmtree(_OWN_DATA_DIR, ignore_errors=True)

    atexit.register(_remove_own_data_dir)
