"""``semsim server``: the embedded PostgreSQL server's state, and stopping it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from semsim_pg.errors import ConfigurationError
from semsim_pg.settings import get_settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``semsim server status`` and ``semsim server stop``."""
    parser = subparsers.add_parser(
        "server",
        help="the embedded PostgreSQL server (for development and tests): status, stop",
        description="The embedded server in SEMSIM_DATA_DIR/pg. Processes that use it share it; the last live "
        "one out stops it. Production points SEMSIM_DATABASE_URL at a PostgreSQL server of its own.",
    )
    actions = parser.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="whether it runs, where its socket is, which processes use it")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    stop = actions.add_parser("stop", help="stop it now (processes still using it start it again on their next query)")
    stop.set_defaults(func=cmd_stop)


def _data_dir() -> Any:
    settings = get_settings()
    if not settings.embedded:
        raise ConfigurationError(
            "SEMSIM_DATABASE_URL is set, so semsim uses that server and no embedded one; "
            "unset it to manage the embedded server in SEMSIM_DATA_DIR."
        )
    return settings.data_dir


def cmd_status(args: argparse.Namespace) -> int:
    from semsim_pg.db import safe_url
    from semsim_pg.server import embedded_server_status

    status = embedded_server_status(_data_dir())
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return 0
    if status["running"]:
        state = f"running (pid {status['pid']})"
    else:
        state = "stopped" if status["initialised"] else "not created yet (starts on first use)"
    processes = ", ".join(str(pid) for pid in status["processes"]) or "none"
    rows = [
        ("server", state),
        ("data", status["pgdata"]),
        ("socket", status["socket_dir"] or "-"),
        ("url", safe_url(status["url"]) if status["url"] else "-"),
        ("used by", f"processes {processes}" if status["processes"] else "no live process"),
    ]
    for label, value in rows:
        sys.stdout.write(f"{label + ':':<9} {value}\n")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from semsim_pg.server import embedded_server_status, stop_embedded_server

    data_dir = _data_dir()
    users = embedded_server_status(data_dir)["processes"]
    if stop_embedded_server(data_dir):
        sys.stdout.write("stopped the embedded server in " + str(data_dir / "pg") + "\n")
        if users:
            pids = ", ".join(str(pid) for pid in users)
            sys.stdout.write(f"processes {pids} still use it: they start it again on their next query\n")
    else:
        sys.stdout.write("the embedded server in " + str(data_dir / "pg") + " is not running\n")
    return 0
