"""progress_bar: drawn when asked, or (None) when the semsim_pg logger would print INFO."""

from __future__ import annotations

import logging

import pytest

from semsim_pg.progress import progress_bar


@pytest.mark.parametrize(("enabled", "level", "shown"), [(True, logging.WARNING, True), (False, logging.DEBUG, False)])
def test_explicit_choice_wins(enabled: bool, level: int, shown: bool) -> None:
    logger = logging.getLogger("semsim_pg.test_progress")
    logger.setLevel(level)
    try:
        with progress_bar(enabled, total=3, desc="t", logger=logger) as bar:
            assert bar.shown is shown
            bar.update(3)
    finally:
        logger.setLevel(logging.NOTSET)


def test_none_follows_the_log_level() -> None:
    logger = logging.getLogger("semsim_pg.test_progress")
    try:
        logger.setLevel(logging.WARNING)
        assert not progress_bar(None, total=1, desc="t", logger=logger).shown
        logger.setLevel(logging.INFO)
        bar = progress_bar(None, total=1, desc="t", logger=logger)
        assert bar.shown
        bar.close()
        bar.close()  # closing twice is harmless
        assert not bar.shown
    finally:
        logger.setLevel(logging.NOTSET)
