"""The benchmarks' shared entry point: a missing input file or a semsim error ends the run with its
one-line message (and exit status 2), not a traceback. The public datasets the benchmarks default to
live in ../shared/data (see its README); pass another path with the benchmark's own flag."""

from __future__ import annotations

import sys
from collections.abc import Callable

from semsim_pg.errors import SemsimError


def run(main: Callable[[], int | None]) -> None:
    try:
        status = main()
    except FileNotFoundError as exc:
        sys.exit(
            f"error: {exc.filename or exc}: no such file (the public datasets are in ../shared/data, see its README)"
        )
    except SemsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status)
