"""A tqdm bar on the command's stderr, shown at verbosity >= 1."""

from __future__ import annotations

from typing import Any


def progress_bar(command: Any, *, total: int, desc: str, verbosity: int) -> Any:
    from tqdm import tqdm

    # OutputWrapper appends newlines; the bar needs the raw stream to redraw in place
    stream = getattr(command.stderr, "_out", command.stderr)
    return tqdm(total=total, desc=desc, unit="row", file=stream, disable=verbosity < 1 or total == 0, leave=True)
