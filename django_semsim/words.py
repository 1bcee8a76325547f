"""The words of a query, as ``hybrid_search()`` looks them up in a model's words."""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["query_words_text", "spellings"]


def spellings(text: str, encoding: str | None) -> str:
    """The text whose words a search looks for: ``text`` in Unicode NFC, then on a line of its own
    its NFD form where that differs and a database of ``encoding`` can hold it (UTF8).

    "café" typed on a keyboard is NFC; "cafe" + a combining accent (NFD) is what macOS and some
    PDFs give, and ``to_tsvector`` normalises neither: they are two words. The core compares both
    sides in NFC (migration 0013), but a model's words come from its own expression, the
    ``SearchVector(...)`` its GIN index or its stored column was made of in the site's migrations,
    which django_semsim cannot change from its own: a text stored in NFD keeps NFD words there.
    So the query carries both spellings; one tsvector of the two has the lexemes of both (a word
    without accents once). A database in another encoding cannot hold a combining accent (sending
    one is an error), nor then a text in NFD."""
    composed = unicodedata.normalize("NFC", text)
    decomposed = unicodedata.normalize("NFD", text)
    if decomposed == composed or encoding != "UTF8":
        return composed
    return f"{composed}\n{decomposed}"


def query_words_text(text: str, connection: Any) -> str:
    """:func:`spellings` of ``text`` for the database of ``connection`` (a Django connection)."""
    if unicodedata.is_normalized("NFD", text) and unicodedata.is_normalized("NFC", text):
        return text  # no accent to spell two ways: no need to ask the server
    connection.ensure_connection()
    return spellings(text, connection.connection.info.parameter_status("server_encoding"))
