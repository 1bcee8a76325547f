"""Input files: each format, metadata, and errors that name the file and the line."""

from __future__ import annotations

import pytest

from semsim_pg.errors import InputFileError
from semsim_pg.inputs import check_documents, read_documents


def test_jsonl_with_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "hello", "lang": "en"}\n\n{"id": 2, "text": "ciao", "lang": "it"}\n')
    docs = list(read_documents(path))
    assert [(d.external_id, d.text, d.metadata) for d in docs] == [
        ("a", "hello", {"lang": "en"}),
        ("2", "ciao", {"lang": "it"}),
    ]


def test_csv_tsv_and_txt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text('key,body,tag\nk1,"a text, with a comma",x\nk2,"multi\nline",y\n')
    docs = list(read_documents(csv_path, id_field="key", text_field="body"))
    assert [(d.external_id, d.text, d.metadata) for d in docs] == [
        ("k1", "a text, with a comma", {"tag": "x"}),
        ("k2", "multi\nline", {"tag": "y"}),
    ]
    tsv_path = tmp_path / "docs.tsv"
    tsv_path.write_text("text\tsource\nfirst\tweb\nsecond\tbook\n")
    assert [(d.external_id, d.metadata) for d in read_documents(tsv_path)] == [
        ("2", {"source": "web"}),
        ("3", {"source": "book"}),
    ]
    txt_path = tmp_path / "docs.txt"
    txt_path.write_text("one\n\nthree\n")
    assert [(d.external_id, d.text) for d in read_documents(txt_path)] == [("1", "one"), ("3", "three")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"id": 1, "text": "ok"}\n{"id": 2, "text": \n', "line 2: not valid JSON"),
        ("bad.jsonl", '{"id": 1, "text": "ok"}\n["a list"]\n', "line 2: expected a JSON object"),
        ("bad.jsonl", '{"id": 1, "body": "no text"}\n', "line 1: the text field 'text' is missing"),
        ("bad.csv", "id,text\n1,ok\n2,\n", "line 3: the text field 'text' is empty"),
        ("bad.csv", "id,body\n1,ok\n", "no 'text' column"),
        ("bad.csv", "id,text\n1,ok,extra\n", "line 2: more fields"),
        ("bad.csv", "", "is empty"),
        ("dup.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "appears twice"),
        ("doc.pdf", "x", "cannot tell the format"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, name, content, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        check_documents(path)


def test_missing_and_non_utf8_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputFileError, match="no such file"):
        check_documents(tmp_path / "missing.txt")
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputFileError, match="not UTF-8"):
        check_documents(path)


BOM = "\ufeff"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bom.csv", "text,category\r\nhello,greeting\r\n", [("2", "hello", {"category": "greeting"})]),
        ("bom.tsv", "id\ttext\nx1\thello\n", [("x1", "hello", {})]),
        ("bom.txt", "hello\nworld\n", [("1", "hello", {}), ("2", "world", {})]),
        ("bom.jsonl", '{"id": "a", "text": "hello"}\n', [("a", "hello", {})]),
    ],
)
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_line(tmp_path, name, content, expected) -> None:  # type: ignore[no-untyped-def]
    """Excel's "CSV UTF-8" and Notepad start a file with a byte-order mark: it is no part of the
    header ("\ufefftext" is no 'text' column) nor of the first text."""
    path = tmp_path / name
    path.write_bytes((BOM + content).encode("utf-8"))
    assert [(d.external_id, d.text, d.metadata) for d in read_documents(path)] == expected
    assert check_documents(path) == len(expected)


def _latin1_far_in(path, head: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Write ``head``, then UTF-8 lines past 90 KB (so the bad byte is in a later decoding chunk
    than the first), then a Latin-1 "é"; return the line and file offset of that byte."""
    lines = [head] + [f"document number {i} has a few plain words,{i}\n" for i in range(2000)]
    prefix = "".join(lines).encode("utf-8")
    bad = "caf\xe9 au lait,1\n".encode("latin-1")
    path.write_bytes(prefix + bad + b"more,2\n")
    return prefix.count(b"\n") + 1, len(prefix) + bad.index(b"\xe9")


def test_a_non_utf8_byte_is_reported_at_its_line_and_file_offset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not "at byte 3835" of whatever chunk the reader was decoding: the line, the offset in the
    file, the byte, and the command that converts the file."""
    for name, head in (("docs.csv", "text,n\n"), ("docs.txt", "")):
        path = tmp_path / name
        line, offset = _latin1_far_in(path, head)
        assert offset > 90_000
        with pytest.raises(InputFileError) as raised:
            check_documents(path)
        message = str(raised.value)
        assert message.startswith(f"{path}, line {line}: is not UTF-8 text (0xe9 at byte {offset:,} of the file)")
        assert f"iconv -f latin1 -t utf-8 {path} > {tmp_path / name.replace('.', '.utf8.')}" in message


def test_faq_and_pair_files_report_a_non_utf8_byte_at_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.evaluation.files import read_pairs
    from semsim_pg.faq.files import read_faq_queries

    pairs = tmp_path / "pairs.csv"
    line, offset = _latin1_far_in(pairs, "sentence1,sentence2\n")
    with pytest.raises(InputFileError, match=rf"pairs.csv, line {line}: is not UTF-8 text \(0xe9 at byte {offset:,} "):
        read_pairs(pairs)
    queries = tmp_path / "queries.csv"
    line, offset = _latin1_far_in(queries, "query,faq_id\n")
    with pytest.raises(
        InputFileError, match=rf"queries.csv, line {line}: is not UTF-8 text \(0xe9 at byte {offset:,} "
    ):
        read_faq_queries(queries)


def test_first_non_utf8_finds_a_character_cut_by_a_chunk_and_one_cut_at_the_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.textfiles import _CHUNK, first_non_utf8

    path = tmp_path / "x.txt"
    # a valid 3-byte character across the chunk boundary, then a bad byte on the next line
    data = b"a\n" + b"x" * (_CHUNK - 4) + "€".encode() + b"\nok \xff\n"
    assert data.index("€".encode()) < _CHUNK < data.index("€".encode()) + 3
    path.write_bytes(data)
    assert first_non_utf8(path) == (data.index(b"\xff"), 3, b"\xff")
    path.write_bytes("fine\n€".encode()[:-1])  # a truncated last character
    assert first_non_utf8(path) == (5, 2, "€".encode()[:2])
    path.write_bytes("all €, fine\n".encode())
    assert first_non_utf8(path) is None


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        ('{"id": "550", "text": "bad \\u0000 text"}', "NUL"),
        ('{"id": "550", "text": "bad \\ud800 text"}', "UTF-8"),
        ('{"id": "550", "text": "fine", "score": NaN}', "metadata field 'score'"),
        ('{"id": "550", "text": "fine", "note": "a \\u0000 b"}', "NUL"),
        ('{"id": "550", "text": "fine", "tag": "\\udc80"}', "UTF-8"),
    ],
)
def test_values_postgresql_refuses_fail_the_whole_file_with_its_line(tmp_path, bad_line: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    """A value PostgreSQL would refuse, far past the first batch, is found by the check before any write."""
    lines = [f'{{"id": "{i}", "text": "document {i}"}}' for i in range(600)]
    lines[550] = bad_line
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=r"line 551: .*") as raised:
        check_documents(path)
    assert needle in str(raised.value)


def test_cli_ingest_of_a_file_with_a_bad_line_writes_nothing(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli import main
    from semsim_pg.errors import CollectionNotFound

    lines = [f'{{"id": "{i}", "text": "document {i}"}}' for i in range(600)]
    lines[580] = '{"id": "580", "text": "fine", "score": NaN}'
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["-q", "ingest", str(path), "-c", collection_name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 581" in err, err
    with pytest.raises(CollectionNotFound):
        store.get_collection(collection_name)


def test_a_txt_line_postgresql_refuses_fails_the_whole_file_with_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same check as the other formats: a .txt line went straight to the store, which
    refused it after committing the batches before it."""
    path = tmp_path / "big.txt"
    path.write_bytes("".join(f"line {i}\n" for i in range(1, 601)).encode() + b"bad\x00x\n")
    with pytest.raises(InputFileError) as raised:
        check_documents(path)
    assert (
        str(raised.value)
        == f"{path}, line 601: The line holds a NUL character, which PostgreSQL cannot store: remove it."
    )


def test_cli_ingest_of_a_txt_file_with_a_nul_writes_nothing(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli import main
    from semsim_pg.errors import CollectionNotFound

    path = tmp_path / "nul.txt"
    path.write_bytes(b"ok line\nbad\x00line\n")
    assert main(["-q", "ingest", str(path), "-c", collection_name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nul.txt, line 2: " in err and "NUL" in err, err
    with pytest.raises(CollectionNotFound):  # not even an empty collection
        store.get_collection(collection_name)


@pytest.mark.parametrize(
    ("encoding", "name", "mark"),
    [
        ("utf-16", "UTF-16", None),  # the machine's order, with its mark
        ("utf-16-be", "UTF-16", "0xfe 0xff"),
        ("utf-16-le", "UTF-16", "0xff 0xfe"),
        ("utf-32-le", "UTF-32", "0xff 0xfe 0x00 0x00"),
        ("utf-32-be", "UTF-32", "0x00 0x00 0xfe 0xff"),
    ],
)
@pytest.mark.parametrize("file_name", ["docs.txt", "docs.csv"])
def test_a_utf16_or_utf32_file_is_told_so_with_its_conversion(tmp_path, encoding, name, mark, file_name) -> None:  # type: ignore[no-untyped-def]
    """Windows' "Unicode" text starts with a UTF-16 byte-order mark: not the Latin-1 advice."""
    path = tmp_path / file_name
    text = "text\ncafé\n"
    data = text.encode(encoding)
    if not encoding.endswith(("le", "be")):
        mark = " ".join(f"0x{b:02x}" for b in data[:2])
    else:
        data = ("\ufeff" + text).encode(encoding)
    path.write_bytes(data)
    with pytest.raises(InputFileError) as raised:
        check_documents(path)
    message = str(raised.value)
    assert message == (
        f"{path}: is {name} text (it starts with the byte-order mark {mark}), not UTF-8. Save it as UTF-8, or "
        f"convert it: iconv -f {name.lower()} -t utf-8 {path} > {tmp_path / file_name.replace('.', '.utf8.')}"
    )
    assert "latin1" not in message


@pytest.mark.parametrize(
    ("encoding", "name", "text"),
    [
        ("utf-16-le", "UTF-16", "hello cats\nbye dogs\n"),  # decodes as UTF-8: was "holds a NUL character"
        ("utf-16-be", "UTF-16", "hello cats\nbye dogs\n"),
        ("utf-16-le", "UTF-16", "hello cats\ncaf\u00e9\n"),  # not UTF-8: was the Latin-1 advice
        ("utf-32-le", "UTF-32", "hello cats\nbye dogs\n"),
        ("utf-32-be", "UTF-32", "hello cats\nbye dogs\n"),
    ],
)
@pytest.mark.parametrize("file_name", ["docs.txt", "docs.tsv"])
def test_utf16_without_a_byte_order_mark_is_told_so(  # type: ignore[no-untyped-def]
    tmp_path, encoding, name, text, file_name, capsys, store, collection_name
) -> None:
    """`iconv -t utf-16le` writes no mark: ASCII text then decodes as UTF-8 with a NUL after each
    letter, refused for a NUL character (or, as a .tsv, its header echoed with raw NULs)."""
    from semsim_pg.cli import main

    path = tmp_path / file_name
    if file_name.endswith(".tsv"):
        text = "id\ttext\n1\t" + text.replace("\n", " ") + "\n"
    path.write_bytes(text.encode(encoding))
    order = "little" if encoding.endswith("le") else "big"
    iconv = encoding.replace("-le", "le").replace("-be", "be")
    expected = (
        f"{path}: looks like {name} text ({order}-endian, without a byte-order mark: NUL bytes between its letters), "
        f"not UTF-8. Save it as UTF-8, or convert it: iconv -f {iconv} -t utf-8 {path} > "
        f"{tmp_path / file_name.replace('.', '.utf8.')}"
    )
    with pytest.raises(InputFileError) as raised:
        check_documents(path)
    assert str(raised.value) == expected
    assert main(["-q", "ingest", str(path), "-c", collection_name]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"semsim: error: {expected}" and "\x00" not in err


def test_a_utf8_file_with_a_stray_nul_is_not_taken_for_utf16(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.txt"
    path.write_bytes(b"a line\nanother\x00 line\n" * 3)
    with pytest.raises(InputFileError, match="NUL character"):
        check_documents(path)
