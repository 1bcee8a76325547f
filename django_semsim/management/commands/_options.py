"""Options shared by the management commands (a module Django does not list: its name starts with _)."""

from __future__ import annotations

import argparse

from django.db import connections


def database_alias(value: str) -> str:
    """``--database``: an alias of ``settings.DATABASES``, refused by argparse with the valid ones
    (an unknown one otherwise came out as a ConnectionDoesNotExist traceback)."""
    if value not in connections.settings:
        raise argparse.ArgumentTypeError(
            f"unknown database alias {value!r}; settings.DATABASES has: {', '.join(sorted(connections.settings))}"
        )
    return value


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default="default", type=database_alias, help="database alias (default: default)")
