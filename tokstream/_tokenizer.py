"""Tokenizer: a thin, exact wrapper over a Hugging Face ``tokenizers`` tokenizer.

It loads a ``tokenizer.json`` (or a model directory holding one), looks up
special-token IDs by name, encodes text to ``np.int32`` arrays (never adding
special tokens on its own), decodes, and **detokenizes incrementally**: feed
token IDs one at a time and get text deltas that never contain a U+FFFD made by
cutting a UTF-8 character between tokens.

Theory of operation (incremental detokenizer):

* Byte-level BPE tokenizers (GPT-2 style ``ByteLevel`` decoder: Qwen, Llama 3,
  ...) map every token to a fixed byte string. We build that table once per
  tokenizer (the same rule as the Rust decoder: map each character through the
  byte-level alphabet, or take the token's UTF-8 bytes when a character is
  outside it, as for added tokens) and push each token's bytes through Python's
  incremental UTF-8 decoder, which holds back an incomplete trailing sequence.
  Each step costs O(bytes of the new token), independent of history.
* Other decoders (SentencePiece ``Metaspace``/``ByteFallback``, WordPiece...)
  use vLLM's prefix/read-offset window: decode a few tokens of context plus the
  new ones, emit the new suffix unless it ends in U+FFFD. Each step costs
  O(window), not O(history).

``flush()`` ends the stream: incomplete bytes still held back come out as
U+FFFD, exactly as a full ``decode()`` renders them, so the concatenation of
all deltas equals ``decode(all_ids)``.

This module deliberately does not render chat templates (see ``tokstream.chat``)
and never adds BOS/EOS or other special tokens implicitly.
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ._exceptions import TokenizerNotFoundError, UnknownTokenError

if TYPE_CHECKING:
    import tokenizers

__all__ = ["IncrementalDetokenizer", "Tokenizer"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE_TRANSLATION = {ord(c): b for b, c in _BYTE_TO_CHAR.items()}
_ALPHABET = frozenset(_BYTE_TO_CHAR.values())


class Tokenizer:
    """A loaded tokenizer: exact encode/decode plus incremental detokenization.

    Build one with :meth:`load` (a model directory or a ``tokenizer.json``) or
    wrap an existing ``tokenizers.Tokenizer``. Instances are immutable in use and
    safe to share between streams; each stream gets its own
    :meth:`detokenizer`.

    Args:
        hf: The Hugging Face ``tokenizers.Tokenizer`` to wrap.
        source: Where it came from, for messages (optional).
    """

    __slots__ = ("_byte_table", "_hf", "_names", "_source", "_str_table", "_vocab_size")

    def __init__(self, hf: tokenizers.Tokenizer, *, source: str | None = None) -> None:
        self._hf = hf
        self._source = source
        self._vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self._names: dict[str, int] | None = None
        self._byte_table: list[bytes] | None = None
        self._str_table: list[str | None] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load from a model directory (holding ``tokenizer.json``) or the file itself.

        Args:
            path: A directory containing ``tokenizer.json``, or a path to a
                ``tokenizer.json`` file.

        Returns:
            The loaded tokenizer.

        Raises:
            TokenizerNotFoundError: The directory or file does not exist, or the
                directory has no ``tokenizer.json``. The message names the exact
                path that was looked for.
        """
        import tokenizers

        p = Path(path)
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            if p.is_dir():
                what = (
                    f"model directory {str(p)!r} has no tokenizer.json (looked for {str(file)!r})"
                )
            else:
                what = f"tokenizer file {str(file)!r} does not exist"
            raise TokenizerNotFoundError(
                f"cannot load tokenizer: {what}; pass a model directory that holds "
                "tokenizer.json or the path of a tokenizer.json file",
                path=str(file),
            )
        return cls(tokenizers.Tokenizer.from_file(str(file)), source=str(file))

    @property
    def hf(self) -> tokenizers.Tokenizer:
        """The wrapped Hugging Face ``tokenizers.Tokenizer`` (an escape hatch)."""
        return self._hf

    @property
    def source(self) -> str | None:
        """The file this tokenizer was loaded from, if known."""
        return self._source

    @property
    def vocab_size(self) -> int:
        """The number of token IDs the tokenizer knows, added tokens included.

        The model's embedding matrix may be larger (padded); IDs beyond this
        decode to nothing.
        """
        return self._vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(source={self._source!r}, vocab_size={self._vocab_size})"

    def _added(self) -> dict[str, int]:
        if self._names is None:
            self._names = {tok.content: i for i, tok in self._hf.get_added_tokens_decoder().items()}
        return self._names

    def token_id(self, name: str) -> int:
        """Return the ID of a token by name, e.g. ``"<|im_end|>"`` or ``"<tool_call>"``.

        Added/special tokens are matched by their content; any other name is
        looked up in the base vocabulary (in its raw, byte-level spelling).

        Args:
            name: The token's text.

        Returns:
            The token ID.

        Raises:
            UnknownTokenError: No token has this name. The message lists the
                closest added-token names.
        """
        added = self._added()
        found = added.get(name)
        if found is None:
            found = self._hf.token_to_id(name)
        if found is None:
            near = difflib.get_close_matches(name, list(added), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            raise UnknownTokenError(
                f"unknown token name {name!r} in tokenizer {self._source or '<in-memory>'}"
                f"{hint} (added tokens: {len(added)}; base vocabulary names are byte-level "
                "spellings, e.g. 'Ġthe')",
                name=name,
                suggestions=near,
            )
        return int(found)

    @property
    def added_tokens(self) -> dict[str, int]:
        """Every added token (specials and tags such as ``<tool_call>``): name -> ID."""
        return dict(self._added())

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        """Encode text to token IDs, adding no special tokens of its own.

        Special-token text in ``text`` (e.g. ``"<|im_end|>"``) becomes that token,
        as a chat template's rendering does.

        Args:
            text: The text.

        Returns:
            A fresh int32 array.
        """
        return np.array(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], list[tuple[int, int]]]:
        """Encode text and return each token's ``(start, end)`` character span in it."""
        enc = self._hf.encode(text, add_special_tokens=False)
        return np.array(enc.ids, dtype=np.int32), list(enc.offsets)

    def decode(
        self, ids: Iterable[int] | npt.NDArray[np.integer], *, skip_special_tokens: bool = False
    ) -> str:
        """Decode token IDs to text, exactly (special tokens kept by default).

        Incomplete UTF-8 sequences render as U+FFFD. IDs the tokenizer does not
        know (e.g. in a padded embedding) decode to nothing.

        Args:
            ids: Token IDs.
            skip_special_tokens: Drop tokens marked special (``<|im_end|>``...).

        Returns:
            The text.
        """
        seq = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        return str(self._hf.decode(seq, skip_special_tokens=skip_special_tokens))

    def _bytes(self) -> list[bytes] | None:
        if self._byte_table is None:
            import tokenizers.decoders

            if not isinstance(self._hf.decoder, tokenizers.decoders.ByteLevel):
                return None
            table = [b""] * self._vocab_size
            for tok, i in self._hf.get_vocab(with_added_tokens=True).items():
                if i >= len(table):
                    table.extend([b""] * (i + 1 - len(table)))
                if _ALPHABET.issuperset(tok):
                    table[i] = bytes(tok.translate(_CHAR_TO_BYTE_TRANSLATION), "latin-1")
                else:
                    table[i] = tok.encode()
            strs: list[str | None] = []
            for b in table:
                try:
                    strs.append(b.decode())
                except UnicodeDecodeError:
                    strs.append(None)
            self._byte_table = table
            self._str_table = strs
        return self._byte_table

    def token_bytes(self, token_id: int) -> bytes | None:
        """Return the exact bytes one token stands for, or ``None`` if unknowable.

        Known only for byte-level tokenizers; ``None`` for other decoders.
        Unknown IDs give ``b""``.
        """
        table = self._bytes()
        if table is None:
            return None
        return table[token_id] if 0 <= token_id < len(table) else b""

    def detokenizer(self, *, skip_special_tokens: bool = False) -> IncrementalDetokenizer:
        """Return a fresh incremental detokenizer for one token stream.

        Args:
            skip_special_tokens: Drop tokens marked special, as :meth:`decode` does.
        """
        return IncrementalDetokenizer(self, skip_special_tokens=skip_special_tokens)


_WINDOW = 6


class IncrementalDetokenizer:
    """Turns a stream of token IDs into text deltas, never splitting a character.

    Feed IDs with :meth:`feed` (one or many at a time); each call returns the
    text that became complete. Bytes of a character that is not finished yet are
    held back. Call :meth:`flush` at the end of the stream: it returns what is
    still held back (incomplete bytes as U+FFFD, as :meth:`Tokenizer.decode`
    renders them) and resets the detokenizer for reuse.

    The concatenation of every returned delta equals
    ``tokenizer.decode(all_ids)``. Each step costs O(new tokens), not O(history).
    Not thread-safe; use one per stream.

    Args:
        tokenizer: The tokenizer the IDs come from.
        skip_special_tokens: Drop tokens marked special.
    """

    __slots__ = (
        "_decode",
        "_decoder",
        "_ids",
        "_pending",
        "_prefix",
        "_read",
        "_skip",
        "_specials",
        "_strs",
        "_table",
        "_tok",
    )

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._table = tokenizer._bytes()
        self._strs = tokenizer._str_table
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._decode = self._decoder.decode
        self._pending = False
        self._specials: frozenset[int] = frozenset()
        if skip_special_tokens:
            self._specials = frozenset(
                i for i, t in tokenizer.hf.get_added_tokens_decoder().items() if t.special
            )
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def feed(self, ids: int | np.integer | Iterable[int]) -> str:
        """Push one or more token IDs; return the newly completed text (maybe ``""``).

        Args:
            ids: A token ID (``int`` is the fast path) or an iterable of them
                (a list, a numpy array, ...).

        Returns:
            The text completed by these IDs.
        """
        table = self._table
        if table is not None:
            n = len(table)
            if isinstance(ids, int):
                if not 0 <= ids < n or ids in self._specials:
                    return ""
                if not self._pending:
                    text = self._strs[ids]  # type: ignore[index]
                    if text is not None:
                        return text
                return self._feed_bytes(table[ids])
            if isinstance(ids, np.integer):
                return self.feed(int(ids))
            specials = self._specials
            data = b"".join(table[i] for i in ids if 0 <= i < n and i not in specials)
            return self._feed_bytes(data) if data else ""
        if isinstance(ids, int | np.integer):
            self._ids.append(int(ids))
        else:
            self._ids.extend(int(i) for i in ids)
        return self._window_step()

    def _feed_bytes(self, data: bytes) -> str:
        text = self._decode(data)
        self._pending = bool(self._decoder.getstate()[0])
        return text

    def _window_step(self) -> str:
        buf = self._ids
        prefix_text = self._tok.decode(
            buf[self._prefix : self._read], skip_special_tokens=self._skip
        )
        full = self._tok.decode(buf[self._prefix :], skip_special_tokens=self._skip)
        if len(full) > len(prefix_text) and not full.endswith("\ufffd"):
            delta = full[len(prefix_text) :]
            self._prefix = max(self._read, len(buf) - _WINDOW)
            self._read = len(buf)
            if self._prefix > _WINDOW * 8:
                drop = self._prefix - _WINDOW
                del buf[:drop]
                self._prefix -= drop
                self._read -= drop
            return delta
        return ""

    def flush(self) -> str:
        """End the stream: return held-back text and reset.

        Incomplete UTF-8 bytes at the end come out as U+FFFD (as a full decode
        renders them). vLLM itself drops them from its streamed text instead.

        Returns:
            The remaining text (often ``""``).
        """
        if self._table is not None:
            out = self._decode(b"", final=True)
            self._decoder.reset()
            self._pending = False
            return out
        buf = self._ids
        prefix_text = self._tok.decode(
            buf[self._prefix : self._read], skip_special_tokens=self._skip
        )
        full = self._tok.decode(buf[self._prefix :], skip_special_tokens=self._skip)
        self._ids = []
        self._prefix = self._read = 0
        return full[len(prefix_text) :]
