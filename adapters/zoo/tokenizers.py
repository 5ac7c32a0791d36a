"""Tokenizers built locally, deterministically, with no download.

A byte-level BPE vocabulary (every byte, plus a few merges of common words) is enough for real
tokenisation: every text maps to ids, different texts to different ids.
"""

from __future__ import annotations

from functools import lru_cache

# Words worth a merge each; keeps prompt lengths small and token ids meaningful.
COMMON_WORDS = (
    "a photo of the cat dog car bird plane ship truck horse deer frog image picture "
    "what is this describe color red green blue white black yes no there in on"
).split()


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def word_merges(words: tuple[str, ...] | list[str], suffix: str = "") -> list[tuple[str, str]]:
    """Left-to-right merges that build each word (with ``suffix`` on its last symbol) from bytes."""
    b2u = byte_to_unicode()
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        symbols = [b2u[b] for b in word.encode()]
        if suffix:
            symbols[-1] += suffix
        left = symbols[0]
        for right in symbols[1:]:
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            left += right
    return merges


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style vocabulary: bytes, bytes + ``</w>``, merged words, then the two specials."""
    b2u = byte_to_unicode()
    symbols = list(b2u.values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = word_merges(COMMON_WORDS, suffix="</w>")
    vocab_list += [a + b for a, b in merges if a + b not in vocab_list]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges
