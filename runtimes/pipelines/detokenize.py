"""Incremental detokenization for streaming, and stop-sequence matching over the text stream.

Byte-level tokenizers split one multi-byte UTF-8 character over several tokens; decoding a prefix of those
tokens yields U+FFFD. :class:`StreamingDetokenizer` decodes a short window of recent tokens, emits only the
new stable suffix, and holds back while the text ends with U+FFFD, so a delta never carries half a character.
The window (``prefix_offset`` .. end) stays a few tokens long, so each step costs O(1), not O(length).
Seeding it with the last prompt tokens keeps a leading space that SentencePiece decoders strip at the start
of a sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class StreamingDetokenizer:
    __slots__ = ("_decode", "_ids", "_prefix_offset", "_prefix_text", "_read_offset")

    def __init__(self, decode: Callable[[list[int]], str], context: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids = list(context)
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._prefix_text = decode(self._ids) if self._ids else ""

    def add(self, token_id: int) -> str:
        """Take one token; return the text it completes ("" while a character is still partial)."""
        self._ids.append(token_id)
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) > len(self._prefix_text) and not text.endswith(REPLACEMENT):
            delta = text[len(self._prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self._prefix_text = self._decode(self._ids[self._prefix_offset :])
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character decodes as U+FFFD, as a full decode would)."""
        text = self._decode(self._ids[self._prefix_offset :])
        delta = text[len(self._prefix_text) :] if len(text) > len(self._prefix_text) else ""
        self._prefix_offset = self._read_offset = len(self._ids)
        self._prefix_text = ""
        self._ids = []
        return delta


class StopMatcher:
    """Cuts the text stream at the first stop sequence and never emits any part of one.

    Text that could be the start of a stop sequence is held until the next delta settles it.
    """

    __slots__ = ("_held", "_stops", "stopped")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Return the text that is safe to emit; sets ``stopped`` when a stop sequence completes."""
        if self.stopped or not delta:
            return ""
        text = self._held + delta
        cut = min((i for s in self._stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), keep, -1):
                if text.endswith(stop[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
