"""Opening the text files users give (documents, FAQ files, sentence pairs): UTF-8, with or
without the byte-order mark that Excel's "CSV UTF-8" and Notepad write, and a file that is not
UTF-8 reported at its line and byte in the file, with the command that converts it. UTF-16 and
UTF-32 are told apart by their byte-order mark or, without one, by where their NUL bytes fall.

A text stream reports a decoding error at a byte of the chunk it was decoding, not of the file
(a bad byte at offset 93,946 read as "byte 3835"), and without a line: :func:`not_utf8` scans the
file again, in binary, to find where.
"""

from __future__ import annotations

import codecs
import shlex
from pathlib import Path
from typing import TextIO

from semsim_pg.errors import InputFileError

__all__ = ["first_non_utf8", "not_utf8", "open_text"]

_CHUNK = 1 << 20


def open_text(path: Path, what: str = "a file", *, display_name: str | None = None) -> TextIO:
    """``path`` opened for reading as UTF-8, a leading byte-order mark dropped, line ends kept
    as they are (the csv module wants ``newline=""``). Refused in one line when it is missing, a
    directory or unreadable. ``display_name``: what errors call the file instead of ``path`` (an
    upload saved under a name of the server's: the user knows it by their own)."""
    label = display_name or str(path)
    if not path.exists():
        raise InputFileError(f"{label}: no such file.")
    if path.is_dir():
        raise InputFileError(f"{label}: is a directory, not {what}.")
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputFileError(f"{label}: cannot read it: {exc.strerror}.") from None
    # ASCII text in UTF-16 or UTF-32 without a byte-order mark decodes as UTF-8, NULs and all: it
    # would be refused at its first line for a NUL character, or its header read as "a\x00,\x00b"
    if path.is_file() and _other_bom(path) is None and _bomless_wide(path) is not None:
        handle.close()
        raise not_utf8(path, display_name=display_name)
    return handle


def first_non_utf8(path: Path) -> tuple[int, int, bytes] | None:
    """Where ``path`` stops being UTF-8: (byte offset in the file, line number from 1, the bytes
    that do not decode), or None when all of it decodes. Reads the file in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file before ``chunk``
    line = 1
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            # The bytes of a character cut by the chunk's end wait in the decoder; they hold no
            # newline (every byte of a multi-byte character is >= 0x80).
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                line += data[: exc.start].count(b"\n")
                return offset - len(pending) + exc.start, line, data[exc.start : exc.end]
            if not chunk:
                return None
            line += chunk.count(b"\n")
            offset += len(chunk)


#: byte-order marks of the encodings that are not UTF-8 (UTF-32's first: FF FE starts both LEs)
_OTHER_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _other_bom(path: Path) -> tuple[str, bytes] | None:
    """(encoding, mark) when ``path`` starts with a UTF-16 or UTF-32 byte-order mark (what
    Windows' "Unicode" text and Excel's "Unicode Text" write), else None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return None
    return next(((name, bom) for bom, name in _OTHER_BOMS if head.startswith(bom)), None)


#: how much of a file's start is looked at to tell UTF-16 or UTF-32 without a byte-order mark
_SNIFF = 4096


def _bomless_wide(path: Path) -> tuple[str, str] | None:
    """(name, iconv encoding) when ``path``, without a byte-order mark, looks like UTF-16 or
    UTF-32 text: its NUL bytes fall in the lanes where the high bytes of Latin characters go (every
    second byte, or three of every four), and hardly anywhere else. A UTF-8 file with a stray NUL,
    or a binary file, has too few or scattered ones."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF)
    except OSError:
        return None
    head = head[: len(head) // 4 * 4]
    if len(head) < 4 or b"\x00" not in head:
        return None

    def nuls(lane: int, step: int) -> float:
        part = head[lane::step]
        return part.count(0) / len(part)

    if nuls(2, 4) > 0.9 and nuls(3, 4) > 0.9 and nuls(0, 4) < 0.1:
        return "UTF-32", "utf-32le"
    if nuls(0, 4) > 0.9 and nuls(1, 4) > 0.9 and nuls(3, 4) < 0.1:
        return "UTF-32", "utf-32be"
    # a quarter of the high bytes NUL at least (Latin text: all of them), two at least (a line of
    # one letter), and hardly any low byte: a stray NUL in UTF-8 text is none of that
    odd, even = head[1::2].count(0), head[0::2].count(0)
    lane = len(head) // 2
    if odd >= max(2, lane / 4) and even <= odd / 10:
        return "UTF-16", "utf-16le"
    if even >= max(2, lane / 4) and odd <= even / 10:
        return "UTF-16", "utf-16be"
    return None


def _wide_error(label: str, name: str, encoding: str) -> InputFileError:
    order = "little" if encoding.endswith("le") else "big"
    return InputFileError(
        f"{label}: looks like {name} text ({order}-endian, without a byte-order mark: NUL bytes between its "
        f"letters), not UTF-8. Save it as UTF-8, or convert it: iconv -f {encoding} -t utf-8 {_conversion(Path(label))}"
    )


def _conversion(path: Path) -> str:
    """``PATH > PATH.utf8.EXT``: the end of the conversion command, quoted for a shell."""
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return f"{shlex.quote(str(path))} > {shlex.quote(str(converted))}"


def not_utf8(path: Path, *, display_name: str | None = None) -> InputFileError:
    """The error for a file that failed to decode as UTF-8: its line, its byte offset, the bytes,
    and how to convert it (most such files are Latin-1 or Windows-1252, what Excel writes as CSV;
    a file that starts with a UTF-16 or UTF-32 byte-order mark is told so, with its own command).
    ``display_name``: the file's name in the message and the command, instead of ``path``."""
    label = display_name or str(path)
    files = _conversion(Path(label))
    bom = _other_bom(path)
    if bom is not None:
        name, mark = bom
        shown = " ".join(f"0x{byte:02x}" for byte in mark)
        return InputFileError(
            f"{label}: is {name} text (it starts with the byte-order mark {shown}), not UTF-8. Save it as UTF-8, "
            f"or convert it: iconv -f {name.lower()} -t utf-8 {files}"
        )
    wide = _bomless_wide(path)
    if wide is not None:  # (open_text refuses it before decoding: here for any other caller)
        return _wide_error(label, *wide)
    found = first_non_utf8(path)
    if found is None:  # it changed while we read it
        where = f"{label}: is not UTF-8 text"
    else:
        offset, line, bad = found
        shown = " ".join(f"0x{byte:02x}" for byte in bad)
        where = f"{label}, line {line}: is not UTF-8 text ({shown} at byte {offset:,} of the file)"
    return InputFileError(
        f"{where}. Save it as UTF-8, or convert it, e.g. from Latin-1: iconv -f latin1 -t utf-8 {files}"
    )
