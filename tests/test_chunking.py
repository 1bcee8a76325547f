"""semsim_pg.chunking: passages within the token budget, at sentence starts, overlapping, with offsets."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest

from semsim_pg.chunking import MIN_CHUNK_TOKENS, check_chunking, default_overlap, split_many, split_passages
from semsim_pg.errors import InvalidInput


class Words:
    """One token per white-space separated word, plus two special tokens: easy to count by hand."""

    special_tokens = 2

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [[m.span() for m in re.finditer(r"\S+", text)] for text in texts]


def sentences(n: int, words: int = 5) -> str:
    return " ".join(f"S{i} " + " ".join(f"w{i}x{j}" for j in range(words - 2)) + " end." for i in range(n))


def test_a_text_within_the_budget_is_one_passage_covering_it_exactly() -> None:
    text = "  Short text. Two sentences.  "
    (passage,) = split_passages(text, Words(), 16)
    assert (passage.index, passage.start, passage.end, passage.text) == (0, 0, len(text), text)


def test_passages_end_at_sentence_starts_and_overlap_within_the_budget() -> None:
    text = sentences(12)  # 60 words in sentences of 5
    passages = split_passages(text, Words(), 20, overlap=6)  # 18 words of text per passage
    assert len(passages) > 3
    for p in passages:
        assert p.text == text[p.start : p.end]
        assert len(p.text.split()) <= 18
    for p in passages[:-1]:  # each full passage ends where a sentence ends (15 words: 3 sentences)
        assert p.text.endswith("end."), p.text
    for before, after in itertools.pairwise(passages):
        assert after.start < before.end  # overlap ...
        assert len(text[after.start : before.end].split()) <= 6  # ... of at most 6 tokens
        assert after.start > before.start
    assert passages[-1].end == len(text)
    assert [p.index for p in passages] == list(range(len(passages)))
    # every word is in some passage
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_no_overlap_when_asked_for_none() -> None:
    text = sentences(10)
    passages = split_passages(text, Words(), 16, overlap=0)
    for before, after in itertools.pairwise(passages):
        assert after.start >= before.end


def test_a_sentence_longer_than_the_budget_is_cut_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(100))  # one sentence of 100 words
    passages = split_passages(text, Words(), 32, overlap=4)
    assert all(len(p.text.split()) <= 30 for p in passages)
    assert all(re.fullmatch(r"(word\d+ ?)+", p.text) for p in passages)  # whole words only
    assert passages[-1].text.endswith("word99")


def test_real_tokenizer_passages_fit_the_model_and_offsets_point_into_the_text(encoder) -> None:  # type: ignore[no-untyped-def]
    paragraph = (
        "Glaciers in the Alps have lost half their volume since 1900. "
        "Warmer summers melt the ice faster than winter snow replaces it. "
        "Meltwater feeds rivers that farms and cities depend on, e.g. the Rhône and the Po. "
        "When the glaciers are gone, late-summer river flows will drop sharply."
    )
    text = " ".join([paragraph] * 3)
    passages = split_passages(text, encoder, 32)
    assert len(passages) > 3
    counts = encoder.runner.token_counts([p.text for p in passages])
    assert max(counts) <= 32  # what the model reads, special tokens included
    assert all(p.text == text[p.start : p.end] for p in passages)
    assert sum(1 for p in passages if p.text.rstrip().endswith(".")) >= len(passages) - 1
    assert "e.g. the Rhône" in " ".join(p.text for p in passages)  # no sentence break after "e.g."
    # one call for many texts gives the same passages
    assert split_many([text, "short"], encoder, 32)[0] == passages


def test_check_chunking_defaults_and_bad_values() -> None:
    assert check_chunking(200).overlap == default_overlap(200) == 25
    assert check_chunking(256, max_seq_length=256).size == 256
    assert default_overlap(512) == 32
    for size, overlap, message in [
        (MIN_CHUNK_TOKENS - 1, None, "below 16 tokens"),
        (300, None, "larger than the 256 tokens the model reads"),
        (64, 64, "must be smaller than the chunk size 64"),
        (64, -1, "whole number of tokens >= 0"),
        ("64", None, "whole number of tokens"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            check_chunking(size, overlap, max_seq_length=256)
