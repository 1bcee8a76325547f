"""FAQ files: entries (``faq_id, question, answer[, category][, alternatives][, published]``) and
evaluation queries (``query, faq_id``) from .tsv/.csv, checked whole, with the line of each error;
entries written back in the same format (:func:`write_faq_file`, what ``semsim faq export`` writes).

``published`` is written by the Django FAQ's export (a draft entry says ``false``). A core
collection has no drafts (every entry it holds answers), so :func:`write_faq_file` never writes the
column and :func:`read_faq_file` reads a file that has it, but refuses a draft row instead of
loading it as an answer (a draft would start answering customers)."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from semsim_pg.errors import InputFileError, InvalidInput
from semsim_pg.faq.ranking import ALTERNATIVES_SEPARATOR, FAQEntry
from semsim_pg.fsutil import atomic_write_text
from semsim_pg.textfiles import not_utf8, open_text

__all__ = [
    "FAQ_COLUMNS",
    "PUBLISHED_COLUMN",
    "FAQQuery",
    "check_alternatives",
    "guard_cell",
    "kept_promoted_note",
    "parse_published",
    "read_faq_file",
    "read_faq_queries",
    "read_rows",
    "unguard_cell",
    "write_faq_file",
]

# An FAQ answer can be long: lift the csv module's 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

#: the columns of an FAQ file, in the order :func:`write_faq_file` writes them; the first three
#: are required, alternatives are separated by :data:`ALTERNATIVES_SEPARATOR`
FAQ_COLUMNS = ("faq_id", "question", "answer", "category", "alternatives")
#: the optional column that says whether an entry answers (the Django FAQ's drafts); empty: not said
PUBLISHED_COLUMN = "published"

_FORMULA = re.compile(r"'*[\t\r]*[=+\-@]")
_GUARDED = re.compile(r"'+[\t\r]*[=+\-@]")


def guard_cell(value: str) -> str:
    """``value`` with a leading ``'`` when a spreadsheet would read it as a formula (an answer
    "=HYPERLINK(...)" opened in Excel runs), as FAQ files are written."""
    return "'" + value if _FORMULA.match(value) else value


def unguard_cell(value: str) -> str:
    """The inverse of :func:`guard_cell` for the cells it guarded, as FAQ files are read."""
    return value[1:] if _GUARDED.match(value) else value


_REQUIRED, _OPTIONAL = FAQ_COLUMNS[:3], (*FAQ_COLUMNS[3:], PUBLISHED_COLUMN)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def parse_published(value: str) -> bool | None:
    """A ``published`` cell: true/yes/1 or false/no/0 (any case); None for an empty cell."""
    folded = value.strip().casefold()
    if not folded:
        return None
    if folded in _TRUE or folded in _FALSE:
        return folded in _TRUE
    raise InvalidInput(f"published must be true or false (or empty for the default), got {value!r}.")


def check_alternatives(faq_id: str, alternatives: Iterable[str], fix: str) -> None:
    """Refuse an alternative holding :data:`ALTERNATIVES_SEPARATOR`: a file would split it in two.
    ``fix`` says how to reword it where the caller keeps its entries."""
    for alternative in alternatives:
        if ALTERNATIVES_SEPARATOR in alternative:
            raise InvalidInput(
                f"FAQ {faq_id!r}: the alternative {alternative!r} holds {ALTERNATIVES_SEPARATOR!r}, which "
                f"separates alternatives in FAQ files; {fix}, then export."
            )


@dataclass(frozen=True)
class FAQQuery:
    """An evaluation query and the entry that answers it (None: no entry should answer it)."""

    query: str
    faq_id: str | None
    line: int = 0


def _delimiter(path: Path, display_name: str | None = None) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    raise InputFileError(
        f"{display_name or path}: cannot tell the format from the extension {path.suffix!r}; name it .tsv or .csv."
    )


def read_rows(
    path: str | Path, required: Sequence[str], optional: Sequence[str], *, display_name: str | None = None
) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, row) for each non-blank row, columns named case-insensitively; errors name the line,
    and the file as ``display_name`` when given (an upload saved under a name of the server's)."""
    path = Path(path)
    label = display_name or str(path)
    delimiter = _delimiter(path, display_name)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        with open_text(path, f"a {kind} file", display_name=display_name) as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise InputFileError(f"{label}: is empty; expected a header line ({', '.join(required)}).")
                columns = [name.strip().lower() for name in header]
                expected = ", ".join(required) + (f"[, {', '.join(optional)}]" if optional else "")
                missing = [name for name in required if name not in columns]
                if missing:
                    raise InputFileError(
                        f"{label}, line 1: the header ({', '.join(header)}) lacks {', '.join(missing)}; "
                        f"expected {expected}."
                    )
                known = set(required) | set(optional)
                unknown = [name for name in columns if name not in known]
                if unknown:
                    raise InputFileError(
                        f"{label}, line 1: unknown column(s) {', '.join(unknown)}; expected {expected}."
                    )
                for values in reader:
                    line = reader.line_num
                    if not any(value.strip() for value in values):
                        continue
                    if len(values) != len(columns):
                        raise InputFileError(
                            f"{label}, line {line}: {len(values)} fields, but the header has {len(columns)} "
                            f"({', '.join(header)}). Check for a missing or extra {'tab' if delimiter == chr(9) else 'comma'}"
                            " or an unclosed quote."
                        )
                    yield line, {name: value.strip() for name, value in zip(columns, values, strict=True)}
            except csv.Error as exc:
                raise InputFileError(f"{label}, line {reader.line_num}: malformed {kind} ({exc}).") from None
    except UnicodeDecodeError:
        raise not_utf8(path, display_name=display_name) from None
    except OSError as exc:
        raise InputFileError(f"{label}: cannot read it: {exc.strerror}.") from None


def read_faq_file(path: str | Path, *, display_name: str | None = None) -> list[FAQEntry]:
    """Entries from a .tsv/.csv with header ``faq_id, question, answer[, category][, alternatives][,
    published]`` (alternatives separated by "|"; a draft, published false, is refused). The whole file is read and checked before anything is returned,
    so a caller that loads the result imports nothing from a malformed file. ``display_name``: what
    errors call the file instead of ``path``."""
    label = display_name or str(path)
    entries: list[FAQEntry] = []
    lines: dict[str, int] = {}
    for line, raw in read_rows(path, _REQUIRED, _OPTIONAL, display_name=display_name):
        row = {name: unguard_cell(value) for name, value in raw.items()}
        for name in _REQUIRED:
            if not row[name]:
                raise InputFileError(f"{label}, line {line}: the {name} is empty.")
        faq_id = row["faq_id"]
        if faq_id in lines:
            raise InputFileError(
                f"{label}, line {line}: faq_id {faq_id!r} appears again (first on line {lines[faq_id]}); ids must be "
                "unique: put other phrasings in the alternatives column instead."
            )
        lines[faq_id] = line
        try:
            published = parse_published(row.get(PUBLISHED_COLUMN, ""))
        except InvalidInput as exc:
            raise InputFileError(f"{label}, line {line}: {exc}") from None
        if published is False:
            raise InputFileError(
                f"{label}, line {line}: entry {faq_id!r} is a draft (published {row[PUBLISHED_COLUMN]!r}); a collection "
                "has no drafts, every entry it holds answers. Delete the line to leave the entry out, or set "
                "published to true."
            )
        alternatives = tuple(a.strip() for a in row.get("alternatives", "").split(ALTERNATIVES_SEPARATOR) if a.strip())
        entries.append(FAQEntry(faq_id, row["question"], row["answer"], row.get("category") or None, alternatives))
    if not entries:
        raise InputFileError(f"{label}: holds no FAQ entries, only a header.")
    return entries


def write_faq_file(path: str | Path, entries: Sequence[FAQEntry], *, overwrite: bool = False) -> int:
    """Write entries to a .tsv/.csv that :func:`read_faq_file` reads back as the same entries
    (every alternative, promoted ones too; the file does not say which were promoted). Checked
    whole, then written atomically; an existing file is refused unless ``overwrite``. Returns how
    many entries were written."""
    path = Path(path)
    delimiter = _delimiter(path)
    if not entries:
        raise InvalidInput(f"{path}: no FAQ entries to write (a file of a header alone imports nothing).")
    for entry in entries:
        check_alternatives(entry.faq_id, entry.alternatives, "reword it (load the entry again without it)")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InvalidInput(f"{path} exists already: choose another file, or overwrite it (--overwrite).")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(FAQ_COLUMNS)
    for entry in entries:
        alternatives = ALTERNATIVES_SEPARATOR.join(entry.alternatives)
        cells = [entry.faq_id, entry.question, entry.answer, entry.category or "", alternatives]
        writer.writerow([guard_cell(cell) for cell in cells])
    atomic_write_text(path, buffer.getvalue(), overwrite=overwrite)
    return len(entries)


def kept_promoted_note(kept: int, export: str, replace: str = "--replace") -> str:
    """What an import's summary adds when it kept ``kept`` promoted phrasings that the file did
    not list ("" for none); ``export`` and ``replace`` name the command that saves them to a file
    and the option that would have removed them."""
    if not kept:
        return ""
    plural = "" if kept == 1 else "s"
    return f"; kept {kept} promoted phrasing{plural} not in the file: {export} saves them ({replace} removes them)"


def read_faq_queries(
    path: str | Path, known_ids: Iterable[str] | None = None, *, display_name: str | None = None
) -> list[FAQQuery]:
    """Evaluation queries from a .tsv/.csv with header ``query, faq_id``. An empty faq_id marks a
    question no entry should answer (it counts against precision when one is answered).
    ``display_name``: what errors call the file instead of ``path``."""
    label = display_name or str(path)
    known = None if known_ids is None else set(known_ids)
    queries: list[FAQQuery] = []
    for line, row in read_rows(path, ("query", "faq_id"), (), display_name=display_name):
        if not row["query"]:
            raise InputFileError(f"{label}, line {line}: the query is empty.")
        faq_id = row["faq_id"] or None
        if faq_id is not None and known is not None and faq_id not in known:
            raise InputFileError(
                f"{label}, line {line}: faq_id {faq_id!r} is not in the FAQ file. Fix the id, or leave it empty "
                "for a question that no entry should answer."
            )
        queries.append(FAQQuery(row["query"], faq_id, line))
    if not queries:
        raise InputFileError(f"{label}: holds no queries, only a header.")
    return queries
