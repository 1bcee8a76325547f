"""Reading sentence-pair files: STS pairs (sentence1, sentence2, score) and training pairs.

CSV or TSV, with or without a header. Without a header the columns are taken in order; with a
header they are found by name (``sentence1``/``sentence2``/``score`` and the usual synonyms:
``anchor``/``positive``, ``query``/``passage``, ``label``/``similarity``). Every error names the
file and the line, and the whole file is read before anything is trained or scored: a bad line
at the end must not cost a half-hour run.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semsim_pg.errors import InputFileError
from semsim_pg.textfiles import not_utf8, open_text

__all__ = ["COMMON_SCALES", "SentencePair", "read_pairs", "read_sts_pairs", "score_range"]

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_FIRST = ("sentence1", "sentence_1", "sentence_a", "s1", "text1", "text_a", "anchor", "query", "question")
_SECOND = ("sentence2", "sentence_2", "sentence_b", "s2", "text2", "text_b", "positive", "passage", "answer")
_SCORE = ("score", "label", "similarity", "gold", "gold_score", "relatedness")


@dataclass(frozen=True)
class SentencePair:
    """One pair of a file; ``line`` is its 1-based line number, for error messages."""

    sentence1: str
    sentence2: str
    score: float | None
    line: int


def _delimiter(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    # Unknown extension: a tab on the first line is a much stronger sign than a comma, which
    # ordinary sentences hold.
    return "\t" if "\t" in first_line else ","


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number of the record, fields) for each record, blank lines included as []."""
    with open_text(path, "a file of sentence pairs") as handle:
        try:
            first = handle.readline()
            handle.seek(0)
            reader = csv.reader(handle, delimiter=_delimiter(path, first))
            line = 1
            for record in reader:
                yield line, record
                # A quoted field can span lines: the next record starts where the reader stopped.
                line = reader.line_num + 1
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as exc:
            raise InputFileError(f"{path}, line {reader.line_num}: malformed CSV: {exc}.") from None


def _find(header: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _header_columns(path: Path, header: list[str], require_score: bool) -> tuple[int, int, int | None]:
    first, second, score = _find(header, _FIRST), _find(header, _SECOND), _find(header, _SCORE)
    if first is None or second is None:
        raise InputFileError(
            f"{path}, line 1: the header {header!r} names no sentence columns. Name them sentence1 and sentence2 "
            "(or anchor/positive, query/passage), or drop the header and put the columns in that order."
        )
    if require_score and score is None:
        raise InputFileError(
            f"{path}, line 1: the header {header!r} has no score column. Add one named score (or label, "
            "similarity), or drop the header and put the score third."
        )
    return first, second, score


def read_pairs(path: str | Path, *, require_score: bool = False) -> list[SentencePair]:
    """All pairs of a CSV/TSV file. Either every pair has a score or none has (mixing is an error).

    A header is recognised when the first record's third field is not a number (or, for a
    two-column file, when its fields are known column names).
    """
    path = Path(path)
    pairs: list[SentencePair] = []
    columns: tuple[int, int, int | None] | None = None
    width: int | None = None
    positional = 0  # without a header: the line that set the columns (sentence1, sentence2[, score])
    for line, record in _rows(path):
        if not record or all(not field.strip() for field in record):
            raise InputFileError(f"{path}, line {line}: empty line. Remove it: every line must be one pair.")
        if columns is None:
            lowered = {field.strip().lower() for field in record}
            looks_like_header = (len(record) >= 3 and not _is_number(record[2])) or bool(
                lowered & set(_FIRST + _SECOND + _SCORE)
            )
            if looks_like_header:
                columns = _header_columns(path, record, require_score)
                width = len(record)
                continue
            if len(record) < 2:
                raise InputFileError(
                    f"{path}, line {line}: found {len(record)} column; expected sentence1, sentence2 and a score "
                    "(comma-separated in .csv, tab-separated in .tsv)."
                )
            columns = (0, 1, 2 if len(record) >= 3 else None)
            width = len(record)
            positional = line
        first, second, score_at = columns
        needed = max(first, second, score_at if score_at is not None else 0) + 1
        # Without a header the columns are known by position: in a file of pairs and scores (up to
        # 3 columns) a line with another number of fields than the first has a delimiter left
        # unquoted (a sentence cut in two) or a stray value. Wider files (a TSV with more columns
        # of its own) and files with a header, whose columns are named, are read as before.
        if positional and len(record) != width and min(len(record), width or 0) <= 3 and len(record) >= needed:
            raise InputFileError(
                f"{path}, line {line}: found {len(record)} columns, but line {positional} has {width}: every line "
                "must have the same columns (sentence1, sentence2, score). Quote fields that hold the delimiter."
            )
        if len(record) < needed:
            raise InputFileError(
                f"{path}, line {line}: found {len(record)} columns, expected {width}"
                f"{' (sentence1, sentence2, score)' if score_at is not None else ''}. "
                "Quote fields that hold the delimiter."
            )
        s1, s2 = record[first].strip(), record[second].strip()
        if not s1 or not s2:
            which = "sentence1" if not s1 else "sentence2"
            raise InputFileError(f"{path}, line {line}: {which} is empty.")
        score: float | None = None
        if score_at is not None:
            raw = record[score_at].strip()
            if not _is_number(raw):
                raise InputFileError(
                    f"{path}, line {line}: the score {raw!r} is not a number. Scores are numbers on any range, "
                    "e.g. 0 to 5."
                )
            score = float(raw)
        pairs.append(SentencePair(s1, s2, score, line))
    if not pairs:
        raise InputFileError(f"{path}: holds no sentence pairs.")
    if require_score and pairs[0].score is None:
        raise InputFileError(
            f"{path}, line {pairs[0].line}: pairs have no score column; expected sentence1, sentence2, score."
        )
    return pairs


def read_sts_pairs(path: str | Path) -> list[SentencePair]:
    """STS pairs: every line must carry a numeric score, on any range (STS-B uses 0 to 5)."""
    pairs = read_pairs(path, require_score=True)
    if len(pairs) < 2:
        raise InputFileError(f"{path}: holds {len(pairs)} scored pair; a correlation needs at least 2.")
    return pairs


#: Scales STS-style data sets use; scores are rescaled from the smallest one that holds them all.
COMMON_SCALES = ((0.0, 1.0), (0.0, 5.0), (0.0, 10.0), (0.0, 100.0))


def score_range(pairs: Sequence[SentencePair], path: Any = "the file") -> tuple[float, float]:
    """The scale of the gold scores, used to rescale them to 0..1.

    The smallest common scale (0-1, 0-5, 0-10, 0-100) that holds every score, so that a sample
    of STS-B whose lowest score is 0.6 still maps 0.6 to 0.12, not to 0; scores outside all of
    them fall back to the observed lowest and highest.
    """
    scores = [p.score for p in pairs if p.score is not None]
    if not scores:
        raise InputFileError(f"{path}: holds no scores.")
    low, high = min(scores), max(scores)
    if low == high:
        raise InputFileError(
            f"{path}: every pair has the score {low:g}; scores must vary to train or to correlate against."
        )
    for scale_low, scale_high in COMMON_SCALES:
        if scale_low <= low and high <= scale_high:
            return scale_low, scale_high
    return low, high
