"""Lexical search compares words after Unicode NFC normalisation, in documents and in queries.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

A text can spell "café" with one code point for the "é" (NFC, what a keyboard types) or with
an "e" followed by a combining accent (NFD, what macOS file names and some PDFs give).
``to_tsvector`` normalises nothing, so the two spellings were two different words: a document
stored in NFD was not found by the lexical side of a search for the NFC query, and the reverse,
while the meaning (vector) side found it. Every place that takes words from a text now takes them
from ``semsim.nfc(text)``:

* the documents' stored ``tsv`` (the trigger on insert and text update, and the recomputation
  when a collection's language changes);
* the query's words (``semsim.hybrid_search``, ``semsim.any_words_query``, and the statements of
  ``semsim_pg.queries.hybrid``, which call ``semsim.nfc`` too) and the words of a split
  document's passages (which passage a hit shows).

``semsim.nfc`` is PostgreSQL's ``normalize(text, NFC)`` (PostgreSQL 13 or later) in a database
whose encoding is UTF8, which is the only encoding ``normalize`` accepts. Any other database gets
the text back unchanged: its encoding is fixed when the database is created, so this is decided
once, here (``semsim db upgrade`` on such a server keeps working; LATIN1 and the like cannot hold
a combining accent, so their texts have one spelling anyway). A plain SQL function (PostgreSQL
can inline it) that asks ``IS NFC NORMALIZED`` before it normalises. Anyone may execute it (it reads nothing but its argument): a site that
revoked EXECUTE from PUBLIC by default still lets its writers' trigger and its readers' searches
call it.

Stored words are recomputed here for the documents whose text is not in NFC (``IS NFC
NORMALIZED``; the others' words are the same either way), in one statement: PostgreSQL reads
every text once, and writes only those rows (their ``tsv`` alone: no trigger fires, no text,
hash or vector changes). On a very large collection run the upgrade at a quiet moment; the
rows it rewrites stay locked until the upgrade commits.

Downgrade restores 0012's definitions exactly (0005's trigger functions and ``any_words_query``,
0012's ``hybrid_search`` with its pinned search_path), recomputes the same documents' words from
their text as it is, and drops ``semsim.nfc``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_HERE = Path(__file__).parent
_LEXICAL = runpy.run_path(str(_HERE / "0005_lexical_search.py"))
_SESSION = runpy.run_path(str(_HERE / "0012_sql_function_session.py"))
HYBRID_BEFORE: str = _SESSION["HYBRID_FUNCTION"]
_HYBRID: str = _SESSION["_HYBRID"]
_pinned_search_path = _SESSION["pinned_search_path"]

NFC = "semsim.nfc(text)"
#: the helper where ``normalize`` exists and accepts the database's text; else the text unchanged
NFC_FUNCTION = """
CREATE FUNCTION semsim.nfc(input text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT {body} $$;
"""
# The quick check first: most texts are NFC already, and IS NFC NORMALIZED answers for them for
# much less than normalize(), which added half to to_tsvector's time (5,000 texts of about 1,000
# characters, the best of 7 runs on a shared 2-core AMD EPYC: to_tsvector alone 439 ms, after
# normalize 652 ms, after the check first 421 ms; NFD texts pay both, 875 ms).
NORMALIZE = "CASE WHEN input IS NFC NORMALIZED THEN input ELSE pg_catalog.normalize(input, 'NFC') END"


def _replace(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:  # pragma: no cover - the earlier revisions' text is fixed
        raise RuntimeError(f"0013: the earlier function does not hold {old!r} once")
    return text.replace(old, new)


def _function(script: str, name: str) -> str:
    """The CREATE FUNCTION statement of ``name`` in ``script``, as CREATE OR REPLACE."""
    start = script.index(f"CREATE FUNCTION {name}(")
    end = script.index("\n$$;\n", start) + len("\n$$;\n")
    return script[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


DOCUMENTS_TSV_BEFORE = _function(_LEXICAL["TRIGGERS"], "semsim.documents_tsv")
COLLECTIONS_TSV_BEFORE = _function(_LEXICAL["TRIGGERS"], "semsim.collections_tsv")
ANY_WORDS_BEFORE = _function(_LEXICAL["QUERY_FUNCTION"], "semsim.any_words_query")

DOCUMENTS_TSV = _replace(DOCUMENTS_TSV_BEFORE, " NEW.text);", " semsim.nfc(NEW.text));")
COLLECTIONS_TSV = _replace(
    COLLECTIONS_TSV_BEFORE,
    "to_tsvector(NEW.text_search_config, text)",
    "to_tsvector(NEW.text_search_config, semsim.nfc(text))",
)
ANY_WORDS = _replace(ANY_WORDS_BEFORE, "to_tsvector(config, query_text)", "to_tsvector(config, semsim.nfc(query_text))")
HYBRID_FUNCTION = _replace(
    HYBRID_BEFORE,
    "unnest(strip(to_tsvector(%5$L::regconfig, $2)))",
    "unnest(strip(to_tsvector(%5$L::regconfig, semsim.nfc($2))))",
)
# a passage's words: its characters cut from the text as stored (the offsets count those), then normalised
HYBRID_FUNCTION = _replace(
    HYBRID_FUNCTION,
    """to_tsvector(%5$L::regconfig, substr(d.text, e.passage_start + 1,
               coalesce(e.passage_end, char_length(d.text)) - e.passage_start))""",
    """to_tsvector(%5$L::regconfig, semsim.nfc(substr(d.text, e.passage_start + 1,
               coalesce(e.passage_end, char_length(d.text)) - e.passage_start)))""",
)


def _recompute(words_of_text: str) -> str:
    """Set the words of every document whose text is not in NFC (the others' are the same either way)."""
    return (
        f"UPDATE semsim.documents d SET tsv = to_tsvector(c.text_search_config, {words_of_text})"
        " FROM semsim.collections c WHERE c.id = d.collection_id AND NOT d.text IS NFC NORMALIZED"
    )


def normalizes(connection: object) -> bool:
    """Whether this database can normalise text: PostgreSQL 13 or later (``normalize``), UTF8 encoding."""
    row = connection.exec_driver_sql(  # type: ignore[attr-defined]
        "SELECT current_setting('server_version_num')::integer >= 130000"
        " AND current_setting('server_encoding') = 'UTF8'"
    ).scalar_one()
    return bool(row)


def _pin_hybrid() -> None:
    """CREATE OR REPLACE takes a function's SET clauses away: hybrid_search's path, pinned again (0012's)."""
    vector_schema = (
        op.get_bind()
        .exec_driver_sql("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        .scalar_one()
    )
    op.execute(f"ALTER FUNCTION {_HYBRID} SET search_path = {_pinned_search_path(vector_schema)}")


def upgrade() -> None:
    can_normalize = normalizes(op.get_bind())
    op.execute(NFC_FUNCTION.format(body=NORMALIZE if can_normalize else "input"))
    op.execute(f"GRANT EXECUTE ON FUNCTION {NFC} TO PUBLIC")
    op.execute(DOCUMENTS_TSV)
    op.execute(COLLECTIONS_TSV)
    op.execute(ANY_WORDS)
    op.execute(HYBRID_FUNCTION)
    _pin_hybrid()
    if can_normalize:  # else semsim.nfc changes nothing, and IS NFC NORMALIZED is refused
        op.execute(_recompute("semsim.nfc(d.text)"))


def downgrade() -> None:
    op.execute(HYBRID_BEFORE)
    _pin_hybrid()
    op.execute(ANY_WORDS_BEFORE)
    op.execute(COLLECTIONS_TSV_BEFORE)
    op.execute(DOCUMENTS_TSV_BEFORE)
    if normalizes(op.get_bind()):
        op.execute(_recompute("d.text"))
    op.execute(f"DROP FUNCTION {NFC}")
