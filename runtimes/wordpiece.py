"""A WordPiece tokenizer whose vocabulary is one UTF-8 blob, for packages with a BERT-style tokenizer.json.

Why: the ``tokenizers`` library keeps a WordPiece vocabulary as two hash maps of owned strings (token -> id and
id -> token); for MiniLM's 30 522 tokens that is ~6.2 MB resident after load (7.9 MB before the heap is
trimmed), the largest single term of the int8 package's excess over weights + activations (issue 14). Here the
vocabulary is :class:`CompactVocab`: the tokens' UTF-8 bytes in id order in one ``bytes``, their offsets, and
an open-addressing table of token ids keyed by Python's string hash: ~0.6 MB for the same vocabulary.

What stays in the ``tokenizers`` library: the normalizer, the pre-tokenizer and the decoder, built from the
file's own sections (they hold no vocabulary), so text is normalized and split exactly as before. Done here:
splitting on the added tokens (literal, leftmost-longest, as the library does for tokens with
``normalized: false``), the greedy longest-match-first WordPiece of each word, the post-processor's template
(``TemplateProcessing`` / ``BertProcessing``) and truncation. :func:`load_tokenizer` returns the library's own
``Tokenizer`` for any file that needs more (another model type, added tokens that strip or match normalized
text, ids that are not ``0..V-1``), so every package still tokenizes.

The object offers the subset of ``tokenizers.Tokenizer`` the runtime uses: ``encode``, ``encode_batch`` (results
with ``ids`` and ``type_ids``), ``decode``, ``token_to_id``, ``id_to_token``, ``enable_truncation``,
``no_truncation``, ``no_padding``, ``get_vocab_size``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtimes.wordpiece_vocab import CompactVocab, read_vocab, vocab_from_map

__all__ = ["CompactWordPiece", "Encoding", "load_tokenizer"]

_SUPPORTED_TEMPLATES = ("TemplateProcessing", "BertProcessing")


@dataclass(frozen=True, slots=True)
class Encoding:
    """One encoded text: token ids and their type ids (what the runtime reads of ``tokenizers.Encoding``)."""

    ids: list[int]
    type_ids: list[int]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, kw_only=True)
class _AddedToken:
    id: int
    content: str
    special: bool


def _template(post: Mapping[str, Any] | None) -> list[tuple[int | None, int]]:
    """The single-sequence template as (special token id or None for the text, type id) items."""
    if not post:
        return [(None, 0)]
    if post["type"] == "BertProcessing":
        return [(int(post["cls"][1]), 0), (None, 0), (int(post["sep"][1]), 0)]
    items: list[tuple[int | None, int]] = []
    for item in post["single"]:
        if "Sequence" in item:
            items.append((None, int(item["Sequence"]["type_id"])))
        else:
            spec = item["SpecialToken"]
            items += [(int(i), int(spec["type_id"])) for i in post["special_tokens"][spec["id"]]["ids"]]
    return items


def _unsupported(doc: Mapping[str, Any]) -> str | None:
    """Why ``doc`` (a parsed tokenizer.json, its vocabulary read apart) needs the ``tokenizers`` library's own model, or None."""
    model = doc.get("model") or {}
    if model.get("type") != "WordPiece":
        return f"model type {model.get('type')!r}"
    post = doc.get("post_processor")
    if post and post.get("type") not in _SUPPORTED_TEMPLATES:
        return f"post-processor {post.get('type')!r}"
    if post and post["type"] == "TemplateProcessing" and sum("Sequence" in i for i in post["single"]) != 1:
        return "a single-sequence template without exactly one sequence"
    for tok in doc.get("added_tokens") or ():
        if tok.get("normalized") or tok.get("lstrip") or tok.get("rstrip") or tok.get("single_word"):
            return f"added token {tok.get('content')!r} matches normalized text or strips"
    return None


class CompactWordPiece:
    """A BERT-style WordPiece tokenizer over a :class:`CompactVocab` (see the module docstring)."""

    def __init__(self, doc: Mapping[str, Any], vocab: CompactVocab) -> None:
        from tokenizers import Tokenizer

        model = doc["model"]
        # The library's normalizer, pre-tokenizer and decoder, from the file's sections: a tokenizer over a
        # one-token vocabulary holds them without the vocabulary's cost.
        stub = Tokenizer.from_str(json.dumps({**doc, "model": {**model, "vocab": {model["unk_token"]: 0}}}))
        self.normalizer, self.pre_tokenizer, self.decoder = stub.normalizer, stub.pre_tokenizer, stub.decoder
        self.vocab = vocab
        self.unk_id = int(vocab.get(model["unk_token"]))  # type: ignore[arg-type]  (checked by _unsupported)
        self.prefix = str(model.get("continuing_subword_prefix", "##"))
        self.max_chars = int(model.get("max_input_chars_per_word", 100))
        added = [
            _AddedToken(id=int(t["id"]), content=t["content"], special=bool(t.get("special")))
            for t in doc.get("added_tokens") or ()
        ]
        self._added_by_id = {t.id: t for t in added}
        self._added_by_content = {t.content: t for t in added}
        # Literal alternatives, longest first: a left-to-right scan then finds the leftmost-longest match.
        contents = sorted({t.content for t in added if t.content}, key=len, reverse=True)
        self._split = re.compile("|".join(map(re.escape, contents))) if contents else None
        self._template = _template(doc.get("post_processor"))
        self._added_count = sum(1 for tid, _ in self._template if tid is not None)
        self._sequence_type = next(type_id for tid, type_id in self._template if tid is None)
        self.max_length: int | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> CompactWordPiece | None:
        """The compact tokenizer of ``path``, or None when the file needs what it does not implement."""
        raw = Path(path).read_bytes()
        read = read_vocab(raw)
        if read is None:  # not the layout the fast reader knows: parse it whole (same result, more transient)
            try:
                doc = json.loads(raw)
            except ValueError:  # a broken file: the library's loader names it as a tokenizer file, with the fix
                return None
            vocab_map = (doc.get("model") or {}).get("vocab")
            if _unsupported(doc) is not None or not isinstance(vocab_map, dict):
                return None
            doc["model"]["vocab"] = {}
            vocab = vocab_from_map(vocab_map)
        else:
            doc, vocab = read
        del raw
        if vocab is None or _unsupported(doc) is not None or vocab.get(doc["model"]["unk_token"]) is None:
            return None
        return cls(doc, vocab)

    # --- the tokenizers.Tokenizer subset ----------------------------------------------------------------

    def enable_truncation(self, max_length: int) -> None:
        self.max_length = int(max_length)

    def no_truncation(self) -> None:
        self.max_length = None

    def no_padding(self) -> None:
        """Padding is never applied here (the runtime pads each batch itself)."""

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        extra = sum(1 for tid in self._added_by_id if tid >= len(self.vocab)) if with_added_tokens else 0
        return len(self.vocab) + extra

    def token_to_id(self, token: str) -> int | None:
        added = self._added_by_content.get(token)
        return added.id if added is not None else self.vocab.get(token)

    def id_to_token(self, tid: int) -> str | None:
        added = self._added_by_id.get(int(tid))
        return added.content if added is not None else self.vocab.token(int(tid))

    def encode(self, text: str, add_special_tokens: bool = True) -> Encoding:
        ids = self._tokenize(text)
        if not add_special_tokens:
            ids = ids[: self.max_length] if self.max_length is not None else ids
            return Encoding(ids=ids, type_ids=[self._sequence_type] * len(ids))
        if self.max_length is not None:
            ids = ids[: max(0, self.max_length - self._added_count)]
        out_ids: list[int] = []
        out_types: list[int] = []
        for tid, type_id in self._template:
            piece = ids if tid is None else [tid]
            out_ids += piece
            out_types += [type_id] * len(piece)
        return Encoding(ids=out_ids, type_ids=out_types)

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = True) -> list[Encoding]:
        return [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        tokens = []
        for tid in ids:
            token = self.id_to_token(int(tid))
            if token is None:
                continue  # the library skips ids it does not know
            added = self._added_by_content.get(token)
            if skip_special_tokens and added is not None and added.special:
                continue
            tokens.append(token)
        return self.decoder.decode(tokens) if self.decoder is not None else " ".join(tokens)

    # --- the pipeline -------------------------------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens: added tokens split out, the rest normalized, split, WordPiece."""
        ids: list[int] = []
        start = 0
        if self._split is not None:
            for match in self._split.finditer(text):
                self._words(text[start : match.start()], ids)
                ids.append(self._added_by_content[match.group()].id)
                start = match.end()
        self._words(text[start:], ids)
        return ids

    def _words(self, text: str, out: list[int]) -> None:
        if not text:
            return
        normalized = self.normalizer.normalize_str(text) if self.normalizer is not None else text
        words = (
            self.pre_tokenizer.pre_tokenize_str(normalized) if self.pre_tokenizer is not None else [(normalized, None)]
        )
        for word, _ in words:
            self._word_pieces(word, out)

    def _word_pieces(self, word: str, out: list[int]) -> None:
        """Greedy longest-match-first, as the library's WordPiece: a word any piece of which is unknown, or
        longer than ``max_input_chars_per_word`` characters, is one UNK.
        """
        n = len(word)
        if n > self.max_chars:
            out.append(self.unk_id)
            return
        get, prefix, first = self.vocab.get, self.prefix, len(out)
        start = 0
        while start < n:
            end, found = n, None
            while start < end:  # the whole rest first: most words are one token
                found = get(word[start:end] if start == 0 else prefix + word[start:end])
                if found is not None:
                    break
                end -= 1
            if found is None:
                del out[first:]
                out.append(self.unk_id)
                return
            out.append(found)
            start = end


def load_tokenizer(path: str | Path) -> Any:
    """The package's tokenizer: a :class:`CompactWordPiece` when the file is one it implements, else the
    ``tokenizers`` library's ``Tokenizer`` (any other model: BPE, Unigram, ...).
    """
    compact = CompactWordPiece.from_file(path)
    if compact is not None:
        return compact
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
