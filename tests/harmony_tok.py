"""gpt-oss's real tokenizer (``openai_harmony``'s), shaped like ``tokstream.Tokenizer``.

Not a test module. Until ``tokstream.Tokenizer`` loads tiktoken vocabularies
(the tokenizer branch), the harmony tests use this adapter: the real IDs and
bytes from ``openai_harmony``, with ``encode`` (special-token text becomes the
token), ``encode_with_offsets``, ``decode``, ``token_id``, ``added_tokens``
and an incremental detokenizer with the same guarantees (never a split
character; ``flush`` gives U+FFFD for incomplete bytes).
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import openai_harmony


class _Detok:
    def __init__(self, tok: HarmonyTokenizer) -> None:
        self._bytes = tok.token_bytes
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, ids: int | Iterable[int]) -> str:
        if isinstance(ids, int | np.integer):
            return str(self._dec.decode(self._bytes(int(ids))))
        return str(self._dec.decode(b"".join(self._bytes(int(i)) for i in ids)))

    def flush(self) -> str:
        out = str(self._dec.decode(b"", final=True))
        self._dec.reset()
        return out


class HarmonyTokenizer:
    """The gpt-oss tokenizer from ``openai_harmony`` (see the module docstring)."""

    def __init__(self) -> None:
        name = openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS
        self._enc = openai_harmony.load_harmony_encoding(name)
        specials = self._enc.special_tokens_set
        specials = specials() if callable(specials) else specials
        self._added = {
            s: self._enc.encode(s, allowed_special="all")[0]
            for s in specials
            if not s.startswith("<|reserved")
        }
        self.source = "openai_harmony"

    def __repr__(self) -> str:
        return "HarmonyTokenizer()"

    @property
    def added_tokens(self) -> dict[str, int]:
        return dict(self._added)

    @functools.cache  # noqa: B019 - one instance per session
    def token_bytes(self, token_id: int) -> bytes:
        return bytes(self._enc._inner.decode_bytes([token_id]))

    def token_id(self, name: str) -> int:
        if name in self._added:
            return self._added[name]
        ids = self._enc.encode(name, allowed_special="all")
        if len(ids) != 1:
            raise KeyError(name)
        return int(ids[0])

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        return np.array(self._enc.encode(text, allowed_special="all"), dtype=np.int32)

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], list[tuple[int, int]]]:
        ids = self.encode(text)
        # Character index of each byte position: a token's span starts at the
        # character its first byte is in and ends after the character its last
        # byte is in (a token ending inside a character covers it).
        first = []
        for i, ch in enumerate(text):
            first += [i] * len(ch.encode())
        first.append(len(text))
        offsets, pos = [], 0
        for tid in ids.tolist():
            end = pos + len(self.token_bytes(tid))
            offsets.append((first[pos], first[end - 1] + 1 if end > pos else first[pos]))
            pos = end
        return ids, offsets

    def decode(self, ids: Any, *, skip_special_tokens: bool = False) -> str:
        seq = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
        return b"".join(self.token_bytes(i) for i in seq).decode("utf-8", "replace")

    def detokenizer(self, *, skip_special_tokens: bool = False) -> _Detok:
        return _Detok(self)
