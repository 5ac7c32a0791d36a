"""Incremental detokenisation: streamed pieces add up to the full decode; stop strings are held back and cut."""

from __future__ import annotations

import pytest

from adapters.zoo.vlm import llava_tokenizer
from service.runners.detok import RowText

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer():
    return llava_tokenizer()  # byte-level BPE: a character like "é" or "🙂" spans several tokens


def stream(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str, bool]:
    row = RowText(tokenizer, stop)
    pieces = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        pieces.append(row.add(token))
        if row.stopped:
            break
    whole, rest = row.final()
    return [*pieces, rest], whole, row.stopped


def test_pieces_add_up_to_the_full_decode_and_never_split_a_character(tokenizer):
    text = "a photo of a café 🙂 and naïve tokens"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # multi-token characters are really there
    pieces, whole, stopped = stream(tokenizer, text)
    assert "".join(pieces) == whole == tokenizer.decode(ids, skip_special_tokens=True) and not stopped
    assert not any("\ufffd" in p for p in pieces)


def test_a_stop_string_is_held_back_then_cut_with_what_follows(tokenizer):
    pieces, whole, stopped = stream(tokenizer, "the cat sat. END and more text", stop=("END",))
    assert stopped and whole == "the cat sat. " and "".join(pieces) == whole
    assert not any("E" in p for p in pieces)  # the partial "E" was never streamed


def test_a_partial_stop_string_at_the_end_stays_text(tokenizer):
    pieces, whole, stopped = stream(tokenizer, "the cat sat EN", stop=("END",))
    assert not stopped and whole == "the cat sat EN" and "".join(pieces) == whole
