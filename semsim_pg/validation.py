"""Argument checks shared by the core, the CLI and the Django app: one rule, one message.

Each check raises :class:`~semsim_pg.errors.InvalidInput` (or its :class:`InvalidQuery` child)
with a message that names the argument, the value received and what would be accepted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InvalidInput, InvalidQuery
from semsim_pg.sql import METRICS

__all__ = [
    "MAX_ID_BYTES",
    "MAX_K",
    "MAX_NAME_LENGTH",
    "check_candidates",
    "check_fusion",
    "check_hybrid",
    "check_id",
    "check_json_value",
    "check_k",
    "check_many",
    "check_name",
    "check_text",
    "check_vectors",
    "hidden_character",
    "visible",
]

#: the most hits one search returns (and the most candidates a rerank reads)
MAX_K = 1000
MAX_NAME_LENGTH = 200
#: a document id is a key of a btree index, whose entries PostgreSQL caps near 2,700 bytes
MAX_ID_BYTES = 2000

# What a terminal would obey instead of show: C0 and C1 controls (ESC starts the sequences
# that recolour, move the cursor or retitle the window; CR rewrites the line), DEL, the line and
# paragraph separators, and the bidirectional embeddings, overrides and isolates that reorder
# what follows them. The direction marks (LRM, RLM, ALM) are not among them: ordinary characters
# of Hebrew and Arabic text that reorder nothing beyond their neighbours, printed as they are.
_HIDDEN = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_HIDDEN_IN_LINE = re.compile(rf"[\t\n{_HIDDEN}]")
_HIDDEN_IN_TEXT = re.compile(f"[{_HIDDEN}]")
# A name is typed on command lines: an invisible direction mark in it would make two names that
# look the same, so names refuse the marks too.
_NOT_IN_NAME = re.compile(rf"[\t\n{_HIDDEN}\u061c\u200e\u200f]")


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with the characters a terminal would act on written as escapes (``\\x1b``,
    ``\\u202e``, ``\\n``), for human-readable output of texts users gave (queries, documents,
    FAQ entries, ids, collection names); ``lines``: newlines and tabs stay. JSON output needs none
    of it. The core uses it in messages that quote such a text outside ``repr``."""
    if lines:
        text = text.replace("\r\n", "\n")  # a CSV file's line ends, not a control to show
    pattern = _HIDDEN_IN_TEXT if lines else _HIDDEN_IN_LINE
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def hidden_character(text: str) -> str | None:
    """The first character of ``text`` that :func:`visible` would escape on one line (a control,
    a tab or newline, a bidirectional override), or an invisible direction mark, else None: what
    a name may not hold."""
    found = _NOT_IN_NAME.search(text)
    return found.group() if found else None


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as a whole number from 1 to :data:`MAX_K`, else :class:`InvalidQuery`."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"{name} must be a whole number from 1 to {MAX_K}, got {k!r}.")
    return k


def check_fusion(rrf_k: Any, weights: Any) -> tuple[int, tuple[float, float]]:
    """The reciprocal-rank fusion's ``rrf_k`` (a whole number >= 0) and ``weights`` (two finite
    numbers >= 0: dense, lexical), as (rrf_k, weights as floats), else :class:`InvalidQuery`."""
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise InvalidQuery(f"rrf_k must be a whole number of at least 0, got {rrf_k!r}.")
    if (
        not isinstance(weights, tuple | list)
        or len(weights) != 2
        or not all(
            isinstance(w, int | float | np.integer | np.floating)
            and not isinstance(w, bool)
            and math.isfinite(float(w))
            and float(w) >= 0
            for w in weights
        )
    ):
        raise InvalidQuery(f"weights must be two numbers >= 0 (dense, lexical), got {weights!r}.")
    return rrf_k, (float(weights[0]), float(weights[1]))


def check_hybrid(k: int, candidates: int, weights: tuple[float, float]) -> None:
    """What a hybrid search of the core needs beyond :func:`check_fusion`, else :class:`InvalidQuery`.

    * a weight above 0: with both at 0 every fused score is 0 and the hits come in an arbitrary
      order (Django's ``hybrid_search`` accepts it: there the queryset's own ordering decides).
    * ``candidates`` (per side) of at least ``k``: :func:`check_candidates`."""
    if not any(w > 0 for w in weights):
        raise InvalidQuery(
            f"weights {weights!r} give every hit the score 0 (an arbitrary order): give at least one weight "
            "above 0, e.g. (1, 0) for the dense side alone or (0, 1) for the lexical side alone."
        )
    check_candidates(k, candidates)


def check_candidates(k: int | None, candidates: int) -> None:
    """Refuse a hybrid search's ``candidates`` (per side) below ``k`` (:class:`InvalidQuery`); the
    core and Django's ``hybrid_search`` both check here. Each side brings at most ``candidates``
    documents, so with fewer the k asked for come back only when the sides find different
    documents, a result whose size depends on how much the sides agree. A caller who asks for k
    hits expects k (or all there are): refused rather than answered short, or silently widened
    (an explicit ``candidates`` is a cost bound the caller chose). ``k=None`` (Django: every fused
    candidate) asks for no number of hits and takes any ``candidates``."""
    if k is not None and candidates < k:
        raise InvalidQuery(
            f"candidates={candidates} is below k={k}: each side of a hybrid search brings at most `candidates` "
            "documents, so fewer than k hits could come back. Give candidates of at least k (default max(k, 100))."
        )


def check_many(values: Any, what: str, error: type[InvalidInput] = InvalidInput) -> None:
    """Refuse one text where a collection of them is asked for: iterated, it is its characters
    (``delete(coll, "abc")`` deleted the documents "a", "b" and "c"); and refuse None or another
    value that is no collection at all (iterating it raised a bare TypeError)."""
    if isinstance(values, str | bytes):
        raise error(f"{what} takes a list of them, not one text: pass [{values!r}].")
    if not isinstance(values, Iterable):
        raise error(f"{what} takes a list of them, got {values!r}.")


def check_text(value: Any, what: str, error: type[InvalidInput] = InvalidInput) -> str:
    """A text PostgreSQL can store: no NUL character, and valid UTF-8 (a lone surrogate, which is
    how Python holds undecodable bytes of a command line or file name, is not). Anything but a
    ``str`` is refused naming ``what`` (``in`` on a number raised a bare TypeError)."""
    if not isinstance(value, str):
        raise error(f"The {what} must be a text, got {type(value).__name__} {value!r}.")
    if "\x00" in value:
        raise error(f"The {what} holds a NUL character, which PostgreSQL cannot store: remove it.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(
            f"The {what} is not valid UTF-8 (character {exc.start + 1}, {value[exc.start]!r}): give it as UTF-8 text."
        ) from None
    return value


def check_name(name: Any, what: str = "collection name", *, existing: bool = False) -> str:
    """A non-empty name of at most :data:`MAX_NAME_LENGTH` characters, stripped, without the
    characters a terminal acts on (:func:`hidden_character`): a name is printed in listings and
    commands to copy, where an escape sequence or a newline would forge what is shown.
    ``existing``: the name of something that may have been made before that rule, which stays usable."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"A {what} must be a non-empty text, got {name!r}.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"A {what} must be at most {MAX_NAME_LENGTH} characters long, got {len(name)}.")
    checked = check_text(name, what).strip()
    hidden = None if existing else hidden_character(checked)
    if hidden is not None:
        raise InvalidInput(
            f"A {what} may not hold control characters (tabs, newlines, escapes, bidirectional overrides or marks): "
            f"{checked!r} holds {hidden!r}. Use printable characters only."
        )
    return checked


def check_id(value: Any, what: str = "document id") -> str:
    """A document id PostgreSQL can store and index: text (see :func:`check_text`) of at most
    :data:`MAX_ID_BYTES` bytes in UTF-8, as a ``str``. A whole number stands for its decimal text,
    wherever an id is taken (upsert stores ``42`` as ``'42'``, and get, similar and delete find it
    by ``42``); anything else (None, a float, bytes, a bool) is refused naming ``what``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"The {what} must be a text or a whole number, got {type(value).__name__} {value!r}.")
    check_text(value, what)
    size = len(value.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise InvalidInput(
            f"The {what} {value[:40]!r}... is {size} bytes long; ids may have at most {MAX_ID_BYTES} "
            "(they are index keys). Use a shorter id, e.g. a hash of this one."
        )
    return value


def check_json_value(value: Any, what: str, error: type[InvalidInput] = InvalidInput) -> None:
    """A value JSON, and so PostgreSQL's jsonb, can hold: no NaN or infinity, no NUL, UTF-8 text."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)  # keeps lone surrogates visible
    except (TypeError, ValueError):
        raise error(
            f"The {what} holds {value!r}, which JSON (and PostgreSQL's jsonb) cannot store: use a finite "
            "number, a text, true, false or null."
        ) from None
    if "\\u0000" in text:
        raise error(f"The {what} holds a NUL character, which PostgreSQL's jsonb cannot store: remove it.")
    check_text(text, what, error)


def check_vectors(
    vectors: npt.NDArray[np.float32],
    what: str = "vectors",
    error: type[InvalidInput] = InvalidInput,
    *,
    metric: str | None = None,
) -> None:
    """Refuse NaN or infinite values (PostgreSQL's vector type does too, less clearly), and a
    zero vector where ``metric`` cannot measure one (cosine: it has no direction)."""
    if not np.all(np.isfinite(vectors)):
        raise error(f"The {what} hold NaN or infinite values.")
    if metric is not None and METRICS[metric].needs_direction:
        zero = np.flatnonzero(~np.any(np.atleast_2d(vectors) != 0, axis=1))
        if zero.size:
            where = f" (row {int(zero[0])})" if np.ndim(vectors) == 2 else ""
            raise error(
                f"The {what} hold a zero vector{where}: {metric} similarity is undefined for it. "
                "Give vectors with at least one non-zero value."
            )
