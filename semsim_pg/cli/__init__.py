"""The ``semsim`` command line."""

from semsim_pg.cli.main import main

__all__ = ["main"]
