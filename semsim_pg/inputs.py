"""Reading documents from files: .jsonl, .csv, .tsv and .txt (one text a line).

Every error names the file and the line. Readers are generators, so a caller can validate a
whole file in one pass (``check_documents``) before writing anything, then stream it again.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semsim_pg.errors import InputFileError, InvalidInput
from semsim_pg.store import Document
from semsim_pg.textfiles import not_utf8, open_text
from semsim_pg.validation import check_id, check_json_value, check_text

__all__ = ["FORMATS", "check_documents", "detect_format", "read_documents", "read_json_lines", "read_lines"]

FORMATS = ("jsonl", "csv", "tsv", "txt")

# csv's default field limit (128 KiB) is smaller than some real documents.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputFileError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "tsv", "txt"):
        return suffix
    raise InputFileError(
        f"{path}: cannot tell the format from the extension {path.suffix!r}. Name the file .jsonl, .csv, .tsv "
        "or .txt, or pass --format."
    )


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line of a UTF-8 text file."""
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield number, text
        except UnicodeDecodeError:
            raise not_utf8(path) from None


def read_documents(
    path: str | Path,
    *,
    fmt: str | None = None,
    id_field: str | None = None,
    text_field: str = "text",
) -> Iterator[Document]:
    """Documents from a file. Other columns or keys than the id and the text become metadata.

    Without an id column (``id``, ``_id`` or ``--id-field``) a document's id is its line number,
    so re-ingesting the same file updates in place.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    if kind == "txt":
        for number, text in read_lines(path):
            yield _checked(path, number, str(number), text, {}, "line")
    elif kind == "jsonl":
        yield from _read_jsonl(path, id_field, text_field)
    else:
        yield from _read_table(path, "\t" if kind == "tsv" else ",", id_field, text_field)


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file."""
    for number, line in read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}, line {number}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
        if not isinstance(record, dict):
            raise InputFileError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
        yield number, record


def _read_jsonl(path: Path, id_field: str | None, text_field: str) -> Iterator[Document]:
    for number, record in read_json_lines(path):
        yield _document(path, number, record, id_field, text_field)


def _read_table(path: Path, delimiter: str, id_field: str | None, text_field: str) -> Iterator[Document]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
        try:
            header = reader.fieldnames
            if not header:
                raise InputFileError(f"{path}: is empty; expected a header line naming the columns.")
            if text_field not in header:
                raise InputFileError(
                    f"{path}, line 1: no {text_field!r} column in the header ({', '.join(header)}). "
                    "Name the text column with --text-field."
                )
            if id_field is not None and id_field not in header:
                raise InputFileError(
                    f"{path}, line 1: no {id_field!r} column in the header ({', '.join(header)}). "
                    "Name the id column with --id-field, or leave it out to number the lines."
                )
            for row in reader:
                number = reader.line_num
                if None in row:
                    raise InputFileError(
                        f"{path}, line {number}: more fields than the {len(header)} columns of the header."
                    )
                if any(value is None for value in row.values()):
                    if all(value in (None, "") for value in row.values()):
                        continue
                    raise InputFileError(
                        f"{path}, line {number}: fewer fields than the {len(header)} columns of the header."
                    )
                yield _document(path, number, dict(row), id_field, text_field)
        except csv.Error as exc:
            raise InputFileError(
                f"{path}, line {reader.line_num}: malformed {('TSV' if delimiter == chr(9) else 'CSV')} ({exc})."
            ) from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None


def _document(path: Path, number: int, record: dict[str, Any], id_field: str | None, text_field: str) -> Document:
    if id_field is None:
        id_field = next((key for key in ("id", "_id") if key in record), None)
    text = record.get(text_field)
    if not isinstance(text, str) or not text.strip():
        what = "missing" if text_field not in record else f"empty or not text ({text!r})"
        raise InputFileError(
            f"{path}, line {number}: the text field {text_field!r} is {what}. Fix the line, or name another "
            "field with --text-field."
        )
    if id_field is None:
        external_id = str(number)
    else:
        raw = record.get(id_field)
        if raw is None or (isinstance(raw, str) and not raw.strip()) or isinstance(raw, (dict, list, bool)):
            raise InputFileError(f"{path}, line {number}: the id field {id_field!r} is missing or empty.")
        external_id = str(raw)
    metadata = {key: value for key, value in record.items() if key not in (id_field, text_field)}
    return _checked(path, number, external_id, text, metadata, f"text field {text_field!r}")


def _checked(path: Path, number: int, external_id: str, text: str, metadata: dict[str, Any], what: str) -> Document:
    """The document of line ``number``, once everything PostgreSQL would refuse in it is ruled
    out. Every format's reader ends here, so the pass over the whole file that precedes any
    write finds a bad value far down a file before its first batches are committed."""
    try:
        check_text(text, what)
        check_id(external_id, "id")
        for key, value in metadata.items():
            check_text(key, "metadata key")
            check_json_value(value, f"metadata field {key!r}")
    except InputFileError:
        raise
    except InvalidInput as exc:
        raise InputFileError(f"{path}, line {number}: {exc}") from None
    return Document(external_id, text, metadata)


def check_documents(path: str | Path, **options: Any) -> int:
    """Read a whole file once and raise on the first bad line (or a repeated id); return the count."""
    seen: dict[str, int] = {}
    count = 0
    for count, doc in enumerate(read_documents(path, **options), start=1):
        if doc.external_id in seen:
            raise InputFileError(
                f"{path}: id {doc.external_id!r} appears twice (documents #{seen[doc.external_id]} and #{count}). "
                "Ids must be unique: fix the file or choose another --id-field."
            )
        seen[doc.external_id] = count
    if count == 0:
        raise InputFileError(f"{path}: holds no documents.")
    return count
