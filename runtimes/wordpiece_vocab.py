"""A WordPiece vocabulary in one UTF-8 blob, and a reader that fills it from tokenizer.json without a dict.

Why: the ``tokenizers`` library's WordPiece keeps two hash maps of owned strings (6.2 MB resident for MiniLM's
30 522 tokens); :class:`CompactVocab` holds the same vocabulary in ~0.6 MB. :func:`read_vocab` reads the file's
``model.vocab`` object pair by pair from the raw bytes into that blob, so loading never builds the 30 522-entry
dict either (``json.loads`` of the whole file peaks ~6 MB above the result).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CompactVocab", "read_vocab", "vocab_from_map"]

_EMPTY16, _EMPTY32 = 0xFFFF, 0xFFFFFFFF
# One "token": id pair of a flat JSON object, and what follows it (a comma, or the closing brace).
_PAIR = re.compile(rb'\s*"((?:[^"\\]|\\.)*)"\s*:\s*(\d+)\s*([,}])')
_VOCAB_KEY = re.compile(rb'"vocab"\s*:\s*\{')


class CompactVocab:
    """Token <-> id over one UTF-8 blob: ids ``0..V-1`` in order, offsets into the blob, a hash table of ids.

    The table has a power-of-two size at least twice the vocabulary (linear probing stays short); each slot
    holds a token id or the empty marker. A 32-bit check per token (the string hash's high half) rejects most
    probes without touching the blob. Python's string hash is salted per process, so the table is built at load
    (~40 ms for 30 522 tokens) and never stored.
    """

    def __init__(self, blob: bytes, offsets: array) -> None:
        """``blob``: the tokens' UTF-8 bytes in id order; ``offsets``: V + 1 positions in it (``array('I')``)."""
        self.blob, self.offsets = blob, offsets
        count = len(offsets) - 1
        size = 1 << max(4, (2 * count - 1).bit_length())
        wide = count >= _EMPTY16
        self._empty = _EMPTY32 if wide else _EMPTY16
        self.table = array("I" if wide else "H", [self._empty]) * size
        self.checks = checks = array("I", bytes(4 * count))
        self._mask = mask = size - 1
        table, empty = self.table, self._empty
        for tid in range(count):  # one token at a time: no list of 30 522 strings or hashes at load
            h = hash(blob[offsets[tid] : offsets[tid + 1]].decode("utf-8"))
            checks[tid] = (h >> 32) & 0xFFFFFFFF
            slot = h & mask
            while table[slot] != empty:
                slot = (slot + 1) & mask
            table[slot] = tid

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> CompactVocab:
        """The vocabulary of ``tokens``, token ``i`` having id ``i``."""
        offsets = array("I", [0])
        for token in tokens:
            offsets.append(offsets[-1] + len(token.encode("utf-8")))
        return cls("".join(tokens).encode("utf-8"), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        """Bytes of the structure's buffers (blob, offsets, table, checks), without the objects' headers."""
        return len(self.blob) + sum(a.itemsize * len(a) for a in (self.offsets, self.table, self.checks))

    def get(self, token: str) -> int | None:
        """The id of ``token``, or None when it is not in the vocabulary."""
        h = hash(token)
        check, slot, table, mask = (h >> 32) & 0xFFFFFFFF, h & self._mask, self.table, self._mask
        encoded = None
        while (tid := table[slot]) != self._empty:
            if self.checks[tid] == check:
                encoded = token.encode("utf-8") if encoded is None else encoded
                if self.blob[self.offsets[tid] : self.offsets[tid + 1]] == encoded:
                    return tid
            slot = (slot + 1) & mask
        return None

    def token(self, tid: int) -> str | None:
        """The token of id ``tid``, or None outside ``0..V-1``."""
        if not 0 <= tid < len(self.offsets) - 1:
            return None
        return self.blob[self.offsets[tid] : self.offsets[tid + 1]].decode("utf-8")


def _ordered(blob: bytes, offsets: array, ids: array) -> CompactVocab | None:
    """The vocabulary of tokens read in file order (``ids[i]`` the id of the i-th), or None unless the ids
    are exactly ``0..V-1``.
    """
    count = len(ids)
    if list(ids) == list(range(count)):
        return CompactVocab(blob, offsets)
    order = sorted(range(count), key=ids.__getitem__)
    if [ids[i] for i in order] != list(range(count)):
        return None
    pieces = [blob[offsets[i] : offsets[i + 1]] for i in order]
    out = array("I", [0])
    for piece in pieces:
        out.append(out[-1] + len(piece))
    return CompactVocab(b"".join(pieces), out)


def vocab_from_map(vocab: Mapping[str, int]) -> CompactVocab | None:
    """The vocabulary of a parsed ``model.vocab`` map, or None unless its ids are exactly ``0..V-1``."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        return None
    return CompactVocab.from_tokens(tokens)


def _pairs(raw: bytes, pos: int) -> tuple[bytes, array, array, int] | None:
    """The flat ``{"token": id, ...}`` object whose body starts at ``raw[pos]``: blob, offsets, ids, end."""
    blob, offsets, ids = bytearray(), array("I", [0]), array("I")
    while True:
        m = _PAIR.match(raw, pos)
        if m is None:
            return None
        key = m.group(1)
        if b"\\" in key:  # an escaped token: let the JSON decoder undo the escapes
            key = json.loads(b'"' + key + b'"').encode("utf-8")
        blob += key
        offsets.append(len(blob))
        ids.append(int(m.group(2)))
        pos = m.end()
        if m.group(3) == b"}":
            return bytes(blob), offsets, ids, pos


def read_vocab(raw: bytes) -> tuple[dict[str, Any], CompactVocab | None] | None:
    """The tokenizer.json in ``raw`` with ``model.vocab`` emptied, and that vocabulary as a :class:`CompactVocab`
    (None when its ids are not ``0..V-1``); None when the file is not laid out as expected (the caller parses
    it whole). Each ``"vocab": {`` is tried until the one the parsed document holds at ``model.vocab``.
    """
    for key in _VOCAB_KEY.finditer(raw):
        read = _pairs(raw, key.end())
        if read is None:
            continue
        blob, offsets, ids, end = read
        try:
            doc = json.loads(raw[: key.end() - 1] + b"{}" + raw[end:])
        except ValueError:
            continue
        model = doc.get("model") if isinstance(doc, dict) else None
        if isinstance(model, dict) and model.get("vocab") == {}:
            return doc, _ordered(blob, offsets, ids)
    return None
