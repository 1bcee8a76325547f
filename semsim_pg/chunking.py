"""Long texts split into passages: a token budget the model reads whole, sentence boundaries, overlap.

A bi-encoder reads only its first ``max_seq_length`` tokens (256 for all-MiniLM-L6-v2); the
rest of a longer text never reaches the vector. Splitting the text into passages of at most
``size`` tokens, each encoded on its own, lets search see all of it (ARCHITECTURE.md, decision 10).

The split is pure (no database, no model run): it needs only the character span of every token,
which :class:`semsim_pg.Encoder` gives through :class:`Tokenizer`. Passages end where a sentence
ends if one ends in the second half of the budget, else between words, else (one "word" of
more than half the budget) between tokens; the next passage starts up to ``overlap`` tokens
before the previous one ended, at a sentence or word start where there is one, so that a
sentence cut at a boundary is whole in one of the two passages.

A text that fits the budget is one passage covering it exactly: its vector is the one an
unsplit collection stores, so chunking changes nothing for short texts.

>>> from semsim_pg import get_encoder
>>> from semsim_pg.chunking import split_passages
>>> [p.text for p in split_passages("First sentence. Second one.", get_encoder(), size=16)]  # doctest: +SKIP
['First sentence. Second one.']
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from semsim_pg.errors import InvalidInput

__all__ = [
    "DEFAULT_CHUNK_TOKENS",
    "MIN_CHUNK_TOKENS",
    "Chunking",
    "Passage",
    "Tokenizer",
    "check_chunking",
    "default_overlap",
    "split_many",
    "split_passages",
]

#: below this a passage holds too little text to mean anything on its own
MIN_CHUNK_TOKENS = 16
#: the passage size ``semsim ingest --chunk`` takes without a number: on the dev half of the
#: SciFact train queries 256 tokens ranked as well as 128 (nDCG@10 0.693 against 0.692 semantic,
#: 0.728 against 0.727 hybrid) with half as many vectors to store and search (README, Performance).
#: It is all-MiniLM-L6-v2's whole window; a model that reads less needs a number.
DEFAULT_CHUNK_TOKENS = 256

#: where a new sentence starts: after . ! ? (and closing quotes or brackets) and white space,
#: before anything but a lower-case letter ("e.g. the" goes on), or after a blank line
_SENTENCE_START = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+(?=[^\sa-z])|\n\s*\n\s*")


class Tokenizer(Protocol):
    """What splitting needs of a model's tokenizer (:class:`semsim_pg.Encoder` has it)."""

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """For each text, the (start, end) character offsets of its tokens, special tokens left out."""
        ...

    @property
    def special_tokens(self) -> int:
        """How many tokens the model adds to every text (e.g. [CLS] and [SEP]: 2)."""
        ...


@dataclass(frozen=True)
class Passage:
    """One passage of a text: ``text == source[start:end]``; ``index`` counts from 0."""

    index: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Chunking:
    """How a collection splits its texts: passages of at most ``size`` tokens (the model's special
    tokens included, so ``size`` is what the model reads), consecutive ones sharing up to ``overlap``."""

    size: int
    overlap: int


def default_overlap(size: int) -> int:
    """An eighth of the passage, at most 32 tokens: enough to keep a cut sentence whole."""
    return min(32, size // 8)


def check_chunking(size: object, overlap: object = None, *, max_seq_length: int | None = None) -> Chunking:
    """``size`` and ``overlap`` (None: :func:`default_overlap`) checked; ``max_seq_length`` is what the
    model reads. Raises :class:`~semsim_pg.errors.InvalidInput` with a one-line message."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidInput(f"The chunk size must be a whole number of tokens, got {size!r}.")
    if size < MIN_CHUNK_TOKENS:
        raise InvalidInput(
            f"Chunk size {size} is below {MIN_CHUNK_TOKENS} tokens: passages that short mean little on their own. "
            f"Use at least {MIN_CHUNK_TOKENS} (e.g. 200)."
        )
    if max_seq_length is not None and size > max_seq_length:
        raise InvalidInput(
            f"Chunk size {size} is larger than the {max_seq_length} tokens the model reads: the rest of each "
            f"passage would be cut off. Use at most {max_seq_length}."
        )
    if overlap is None:
        overlap = default_overlap(size)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise InvalidInput(f"The chunk overlap must be a whole number of tokens >= 0, got {overlap!r}.")
    if overlap >= size:
        raise InvalidInput(
            f"Chunk overlap {overlap} must be smaller than the chunk size {size}: use e.g. {default_overlap(size)}."
        )
    return Chunking(size, overlap)


def split_passages(text: str, tokenizer: Tokenizer, size: int, overlap: int | None = None) -> list[Passage]:
    """``text`` as passages of at most ``size`` tokens (see the module's documentation)."""
    return split_many([text], tokenizer, size, overlap)[0]


def split_many(
    texts: Sequence[str], tokenizer: Tokenizer, size: int, overlap: int | None = None
) -> list[list[Passage]]:
    """:func:`split_passages` of each text, with one call of the tokenizer for all of them."""
    chunking = check_chunking(size, overlap)
    budget = chunking.size - tokenizer.special_tokens
    if budget < 1:
        raise InvalidInput(
            f"Chunk size {size} leaves no room for text next to the model's {tokenizer.special_tokens} special tokens."
        )
    texts = list(texts)
    spans = tokenizer.token_spans(texts)
    return [_split(text, s, budget, chunking.overlap) for text, s in zip(texts, spans, strict=True)]


def _split(text: str, spans: Sequence[tuple[int, int]], budget: int, overlap: int) -> list[Passage]:
    n = len(spans)
    if n <= budget:
        return [Passage(0, 0, len(text), text)]
    starts = [start for start, _ in spans]
    sentences = sorted(
        {bisect.bisect_left(starts, m.end()) for m in _SENTENCE_START.finditer(text)} - {0, n}
    )  # token indices where a sentence starts
    words = [i for i in range(1, n) if spans[i][0] > spans[i - 1][1]]  # tokens with white space before them
    passages: list[Passage] = []
    first = 0
    while True:
        if n - first <= budget:
            last = n
        else:
            limit = first + budget
            floor = first + budget // 2
            last = _last_in(sentences, floor, limit) or _last_in(words, floor, limit) or limit
        start = 0 if first == 0 else spans[first][0]
        end = len(text) if last == n else spans[last - 1][1]
        passages.append(Passage(len(passages), start, end, text[start:end]))
        if last == n:
            return passages
        # The next passage starts up to `overlap` tokens back, at the earliest sentence (else word)
        # start there: the most overlap the budget allows, never the same start twice.
        low = max(last - overlap, first + 1)
        first = _first_in(sentences, low, last) or _first_in(words, low, last) or low


def _last_in(indices: list[int], low: int, high: int) -> int | None:
    """The largest index in (low, high]."""
    i = bisect.bisect_right(indices, high)
    return indices[i - 1] if i and indices[i - 1] > low else None


def _first_in(indices: list[int], low: int, high: int) -> int | None:
    """The smallest index in [low, high)."""
    i = bisect.bisect_left(indices, low)
    return indices[i] if i < len(indices) and indices[i] < high else None
