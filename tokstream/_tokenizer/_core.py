"""``Tokenizer`` (exact encode/decode, names, family) and its incremental detokenizer.

Theory of operation (incremental detokenizer):

* Byte-level tokenizers (GPT-2 style ``ByteLevel`` BPE: Qwen, Llama 3,
  DeepSeek, gpt-oss...; and every tiktoken vocabulary, Mistral's Tekken
  included) map every token to a fixed byte string. The backend builds that
  table once; each fed token's bytes go through Python's incremental UTF-8
  decoder, which holds back an incomplete trailing sequence. Each step costs
  O(bytes of the new token), independent of history. A second table caches
  each token's text when it is whole UTF-8, so the common step is one lookup.
* Other decoders (SentencePiece ``Metaspace``/``ByteFallback``, WordPiece...)
  use vLLM's prefix/read-offset window: decode a few tokens of context plus the
  new ones, emit the new suffix unless it ends in U+FFFD. Each step costs
  O(window), not O(history).

``flush()`` ends the stream: incomplete bytes still held back come out as
U+FFFD, exactly as a full ``decode()`` renders them, so the concatenation of
all deltas equals ``decode(all_ids)``.
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from .._exceptions import InvalidRequest, UnknownTokenError
from ._backends import Backend, HFBackend, TiktokenBackend
from ._convert import tiktoken_to_hf
from ._families import FAMILIES, detect_family, tiktoken_family
from ._files import open_backend, read_tiktoken_ranks

if TYPE_CHECKING:
    import tokenizers

__all__ = ["IncrementalDetokenizer", "Tokenizer"]


def _check_family(family: str | None) -> str | None:
    if family is not None and family not in FAMILIES:
        near = difflib.get_close_matches(family, FAMILIES, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise InvalidRequest("family", family, f"unknown family (known: {list(FAMILIES)}){hint}")
    return family


class Tokenizer:
    """A loaded tokenizer: exact encode/decode plus incremental detokenization.

    Build one with :meth:`load` (a model directory, a ``tokenizer.json``, a
    Tekken JSON or a tiktoken file), :meth:`from_tiktoken`, or wrap an existing
    ``tokenizers.Tokenizer``. Both backends, Hugging Face ``tokenizers`` and
    tiktoken, give the same guarantees: :meth:`encode` adds no special tokens,
    :meth:`decode` is exact, :meth:`token_id` and :attr:`added_tokens` know
    every added token, and each stream's :meth:`detokenizer` never splits a
    UTF-8 character. Instances are immutable in use and safe to share between
    streams.

    Args:
        hf: The Hugging Face ``tokenizers.Tokenizer`` to wrap.
        source: Where it came from, for messages (optional).
        family: The model family (one of ``tokstream._tokenizer.FAMILIES``);
            ``None`` detects it from the added tokens.

    Raises:
        InvalidRequest: ``family`` is not a known family name.
    """

    __slots__ = (
        "_backend",
        "_byte_table",
        "_family",
        "_family_known",
        "_names",
        "_source",
        "_special",
        "_str_table",
        "_vocab_size",
    )

    def __init__(
        self,
        hf: tokenizers.Tokenizer,
        *,
        source: str | None = None,
        family: str | None = None,
    ) -> None:
        self._setup(HFBackend(hf), source, family)

    def _setup(self, backend: Backend, source: str | None, family: str | None) -> None:
        self._backend = backend
        self._source = source
        self._vocab_size: int = backend.vocab_size
        self._family = _check_family(family)
        self._family_known = family is not None
        self._names: dict[str, int] | None = None
        self._special: frozenset[int] | None = None
        self._byte_table: list[bytes] | None = None
        self._str_table: list[str | None] | None = None

    @classmethod
    def _from_backend(cls, backend: Backend, source: str | None, family: str | None) -> Tokenizer:
        self = object.__new__(cls)
        self._setup(backend, source, family)
        return self

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, family: str | None = None) -> Tokenizer:
        """Load from a model directory or one tokenizer file.

        Accepted, in this order for a directory: ``tokenizer.json`` (Hugging
        Face), ``tekken.json`` (Mistral; IDs equal ``mistral_common``'s), a
        tiktoken file (``tiktoken.model``, ``tokenizer.model``, ``*.tiktoken``).
        A file is read by its kind: ``.json`` (Hugging Face or Tekken), else
        tiktoken ranks. A tiktoken file carries no pre-tokenizer pattern and no
        special tokens: they come from ``family`` (its table of the family's
        special tokens, e.g. Llama 3's 256 from 128000), with the added tokens
        of a ``tokenizer_config.json`` beside the file taking precedence.

        Args:
            path: A model directory or a tokenizer file.
            family: The model family (e.g. ``"llama3"``); required for a bare
                tiktoken file, else optional (``None`` detects it).

        Returns:
            The loaded tokenizer.

        Raises:
            TokenizerNotFoundError: The directory or file does not exist, or the
                directory holds no tokenizer file. The message names the exact
                path that was looked for.
            InvalidRequest: ``family`` is unknown, or missing for a tiktoken
                file, or its special-token IDs collide with the file's ranks.
            ModuleNotFoundError: A tiktoken or Tekken file, and tiktoken is not
                installed (``pip install 'tokstream[tiktoken]'``).
        """
        _check_family(family)
        backend, file, implied = open_backend(Path(path), family)
        return cls._from_backend(backend, str(file), implied)

    @classmethod
    def from_tiktoken(
        cls,
        ranks: str | os.PathLike[str] | Mapping[bytes, int],
        *,
        family: str | None = None,
        pattern: str | None = None,
        special_tokens: Mapping[str, int] | None = None,
        added_tokens: Mapping[str, int] | None = None,
        normalization: Literal["NFC"] | None = None,
        source: str | None = None,
    ) -> Tokenizer:
        """Build a tiktoken-backed tokenizer from BPE ranks.

        Anything not given comes from ``family``'s table (pattern, added
        tokens, normalisation); give ``pattern`` and tokens to describe a
        vocabulary of your own.

        Args:
            ranks: A tiktoken file, or ``{token bytes: ID}``.
            family: The family whose table fills what is not given.
            pattern: The pre-tokenization regex.
            special_tokens: Added tokens marked special (dropped by
                ``skip_special_tokens``): name -> ID.
            added_tokens: Added tokens that are not special (tags such as
                ``<tool_call>``): name -> ID.
            normalization: ``"NFC"`` to normalise input before encoding.
            source: Where it came from, for messages.

        Returns:
            The tokenizer.

        Raises:
            InvalidRequest: No pattern (none given and ``family`` has none), an
                unknown family, or added IDs that collide with the ranks.
            ModuleNotFoundError: tiktoken is not installed.
        """
        _check_family(family)
        table = tiktoken_family(family) if family is not None else None
        if isinstance(ranks, Mapping):
            base = ranks
        else:
            source = source or str(ranks)
            base = read_tiktoken_ranks(Path(ranks))
        pattern = pattern or (table.pattern if table else None)
        if pattern is None:
            raise InvalidRequest(
                "pattern", None, "give the pre-tokenization regex, or a family that has one"
            )
        if special_tokens is None and added_tokens is None:
            added = list(table.specials) if table else []
        else:
            added = [(n, i, True) for n, i in (special_tokens or {}).items()]
            added += [(n, i, False) for n, i in (added_tokens or {}).items()]
        if normalization is None and table is not None:
            normalization = "NFC" if table.normalization == "NFC" else None
        try:
            backend = TiktokenBackend(base, pattern, added, normalization=normalization)
        except ValueError as exc:
            raise InvalidRequest("special_tokens", None, str(exc)) from None
        return cls._from_backend(backend, source, family)

    @property
    def backend(self) -> Literal["hf", "tiktoken"]:
        """Which implementation encodes: ``"hf"`` (``tokenizers``) or ``"tiktoken"``."""
        return self._backend.kind

    @property
    def hf(self) -> tokenizers.Tokenizer:
        """The wrapped Hugging Face ``tokenizers.Tokenizer`` (an escape hatch).

        Raises:
            AttributeError: This tokenizer has a tiktoken backend.
        """
        if isinstance(self._backend, HFBackend):
            return self._backend.hf
        raise AttributeError(
            f"{self!r} has a tiktoken backend, not a Hugging Face tokenizer "
            "(check Tokenizer.backend)"
        )

    def to_hf(self) -> tokenizers.Tokenizer:
        """A Hugging Face ``tokenizers.Tokenizer`` with the same IDs, e.g. to write a model dir.

        An HF-backed tokenizer returns the one it wraps. A tiktoken-backed one is
        converted: byte-level BPE with the merge list recovered from the ranks
        (a few seconds for 200,000 tokens), the same regex and normalisation,
        and every added token at its ID.

        Raises:
            ValueError: An added token is spelled like a base token (one ID
                in ``tokenizers``, two here).
        """
        backend = self._backend
        if isinstance(backend, HFBackend):
            return backend.hf
        assert isinstance(backend, TiktokenBackend)
        added = [(n, i, s) for n, (i, s) in backend.added_tokens().items()]
        hf: tokenizers.Tokenizer = tiktoken_to_hf(
            backend.ranks(), backend.pattern, added, backend.normalization
        )
        return hf

    @property
    def source(self) -> str | None:
        """The file this tokenizer was loaded from, if known."""
        return self._source

    @property
    def vocab_size(self) -> int:
        """The number of token IDs the tokenizer knows, added tokens included.

        The model's embedding matrix may be larger (padded); IDs beyond this
        decode to nothing. For vocabularies with gaps it is the highest ID + 1.
        """
        return self._vocab_size

    @property
    def family(self) -> str | None:
        """The model family: ``"gpt-oss"``, ``"llama3"``, ``"deepseek-v3.1"``...

        The one given to :meth:`load` (or the constructor), or implied by the
        file (a Tekken file is ``"mistral"``), else detected from the added
        tokens (e.g. ``<|channel|>`` means gpt-oss), else ``None``. The names
        are ``tokstream._tokenizer.FAMILIES``.
        """
        if not self._family_known:
            self._family = detect_family(self._added())
            self._family_known = True
        return self._family

    def __repr__(self) -> str:
        return (
            f"Tokenizer(source={self._source!r}, vocab_size={self._vocab_size}, "
            f"backend={self.backend!r})"
        )

    def _added(self) -> dict[str, int]:
        if self._names is None:
            self._names = {n: i for n, (i, _) in self._backend.added_tokens().items()}
        return self._names

    def _special_ids(self) -> frozenset[int]:
        if self._special is None:
            added = self._backend.added_tokens().values()
            self._special = frozenset(i for i, special in added if special)
        return self._special

    def token_id(self, name: str) -> int:
        """Return the ID of a token by name, e.g. ``"<|im_end|>"`` or ``"<tool_call>"``.

        Added/special tokens are matched by their content; any other name is
        looked up in the base vocabulary (in its raw, byte-level spelling,
        ``"Ġthe"``; a tiktoken vocabulary also takes the token's plain text).

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
            found = self._backend.base_token_id(name)
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

    @property
    def special_tokens(self) -> dict[str, int]:
        """The added tokens marked special (what ``skip_special_tokens`` drops): name -> ID."""
        special = self._special_ids()
        return {n: i for n, i in self._added().items() if i in special}

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        """Encode text to token IDs, adding no special tokens of its own.

        Added-token text in ``text`` (e.g. ``"<|im_end|>"``) becomes that token,
        as a chat template's rendering does. (``mistral_common`` and
        ``llama_models`` encode such text as plain text unless told otherwise;
        their framing inserts control tokens by ID.)

        Args:
            text: The text.

        Returns:
            A fresh int32 array.
        """
        return self._backend.encode(text)

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], list[tuple[int, int]]]:
        """Encode text and return each token's ``(start, end)`` character span in it.

        A token that holds part of a character spans that whole character. A
        tiktoken vocabulary that normalises (NFC) maps tokens of a changed run
        of characters to that whole run.
        """
        return self._backend.encode_with_offsets(text)

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
        return self._backend.decode(seq, skip_special_tokens)

    def _bytes(self) -> list[bytes] | None:
        if self._byte_table is None:
            table = self._backend.byte_table()
            if table is None:
                return None
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

        Known for byte-level vocabularies (every tiktoken one included);
        ``None`` for other decoders. Unknown IDs give ``b""``.
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
            self._specials = tokenizer._special_ids()
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
