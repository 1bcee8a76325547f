"""The progress bar every long job shows (ingest, reconcile, reembed, FAISS builds, evaluations).

One helper so that each job decides the same way whether to draw one: ``enabled`` True or False
says so; None draws it when the ``semsim_pg`` logger would print INFO, so ``-q`` on the command
line (or a quieter log level in an application) silences bars and log lines together. tqdm is
imported only when a bar is drawn.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

__all__ = ["ProgressBar", "progress_bar"]

_LOGGER = logging.getLogger("semsim_pg")


class ProgressBar:
    """A tqdm bar, or nothing: ``update`` and ``close`` work either way, so callers never test for
    None. Use it as a context manager to close it whatever happens."""

    def __init__(self, bar: Any | None) -> None:
        self._bar = bar

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def progress_bar(
    enabled: bool | None,
    *,
    total: int | None,
    desc: str,
    unit: str = "it",
    logger: logging.Logger | None = None,
    file: Any = None,
) -> ProgressBar:
    """A bar of ``total`` steps named ``desc``; drawn when ``enabled``, or (None) when ``logger``
    (default: the ``semsim_pg`` logger) is at INFO or more verbose. ``file``: the stream to draw on
    (default: stderr), e.g. a Django command's own."""
    if enabled is None:
        enabled = (logger or _LOGGER).getEffectiveLevel() <= logging.INFO
    if not enabled:
        return ProgressBar(None)
    from tqdm.auto import tqdm

    return ProgressBar(tqdm(total=total, desc=desc, unit=unit, file=file))
