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
