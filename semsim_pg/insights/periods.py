"""Time windows as people type them: ``7d``, ``12h``, ``2w``, ``90m`` or a date (``2026-11-01``)."""

from __future__ import annotations

import datetime as dt
import re

from semsim_pg.errors import InvalidInput

__all__ = ["as_utc", "parse_duration", "parse_since"]

_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


#: the longest window: twice it back from today is still a date (a window and its baseline)
MAX_DURATION = dt.timedelta(days=100_000)


def parse_duration(text: str, option: str = "--since") -> dt.timedelta:
    """``7d`` -> 7 days; :class:`InvalidInput` naming ``option`` for anything else."""
    match = _DURATION.match(str(text))
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(
            f"{option} takes a length of time such as 30m, 12h, 7d or 2w, got {text!r}."
            if option != "--since"
            else f"--since takes a length of time such as 12h, 7d or 2w, or a date such as 2026-11-01, got {text!r}."
        )
    try:
        length = dt.timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
    except OverflowError:
        length = MAX_DURATION + dt.timedelta(days=1)
    if length > MAX_DURATION:  # room for a window and the one before it (stats' baseline) in any date
        raise InvalidInput(f"{option} {text} is longer than semsim looks back: give at most 100000d.")
    return length


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """The start of a window, in UTC: ``now`` minus a duration, or midnight UTC of a date (or a
    full ISO timestamp, in its own offset when it has one). A start in the future is refused."""
    now = now or dt.datetime.now(dt.UTC)
    raw = str(text).strip()
    if raw[:1].isdigit() and "-" in raw:
        try:
            start = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(
                f"--since takes a length of time such as 12h, 7d or 2w, or a date such as 2026-11-01, got {text!r}."
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    else:
        start = now - parse_duration(raw)
    if start > now:
        raise InvalidInput(f"--since {text} is in the future: give a past date or a length of time such as 7d.")
    return as_utc(start)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as the same instant in UTC (a naive one is taken as UTC, as the log's times
    are), so that what prints it as "... UTC" (stats' header, its plot) tells the truth. An
    instant before the year 1 in UTC (0001-01-01T00:00+05:00) is the first one there is."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
