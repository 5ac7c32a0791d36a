"""Incremental detokenisation and stop strings for one generated row.

    text = RowText(tokenizer, stop=("\\n\\n",))
    delta = text.add(token)      # new text safe to stream ("" while held back), stop found -> text.stopped

Decoding every token again at every step costs O(n) per step; instead each step decodes a short
window (the tokens since ``prefix`` and the new ones) and keeps what the window adds, the method of
TGI and vLLM, so a tokenizer that merges spaces or bytes across tokens still yields the same text.
Text that may be the start of a stop string, or an incomplete UTF-8 sequence, is held back until it
is decided; a stop string is cut with everything after it (OpenAI's behaviour).
"""

from __future__ import annotations

from typing import Any


class RowText:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far (the stop string and after it removed once found)
        self.sent = 0  # characters of ``text`` already handed out
        self.stopped = False
        self._prefix = 0  # tokens[prefix:read] decode to the text's tail already counted
        self._read = 0

    def add(self, token: int) -> str:
        """Append ``token``; returns the text that is now safe to stream (may be empty)."""
        self.tokens.append(token)
        window = self.tokens[self._prefix:]
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(window)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete character or a token that adds nothing yet: wait for the next one
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(self.tokens)
        if self.stop:
            self._cut_at_stop()
        return self._ready()

    def final(self) -> tuple[str, str]:
        """At the end of the row: (the whole text, the part of it not streamed yet).

        The whole text is one full decode (cut at a stop string), so it never depends on how the
        windows fell; a partial stop string at the end stays text."""
        text = self._decode(self.tokens)
        if self.stop:
            hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
            if hits:
                text = text[:min(hits)]
        streamed = self.text[:self.sent]
        rest = text[len(streamed):] if text.startswith(streamed) else ""
        self.sent = len(self.text)
        return text, rest

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _cut_at_stop(self) -> None:
        window_start = max(0, len(self.text) - max(map(len, self.stop)) - 64)
        hits = [i for i in (self.text.find(s, window_start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True

    def _ready(self) -> str:
        """New text past ``sent``, minus a tail that could still become a stop string."""
        end = len(self.text)
        if self.stop and not self.stopped:
            end -= _held_back(self.text, self.stop)
        if end <= self.sent:
            return ""
        out = self.text[self.sent:end]
        self.sent = end
        return out


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
