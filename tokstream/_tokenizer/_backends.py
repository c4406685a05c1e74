"""The two tokenizer backends behind :class:`~tokstream.Tokenizer`: HF ``tokenizers`` and tiktoken.

A backend is the object that owns a vocabulary and its encoding rules. The
:class:`Backend` protocol is what ``Tokenizer`` asks of one; everything else
(name lookup, the byte table's string cache, the incremental detokenizer,
families) lives in ``Tokenizer`` and is shared.

* :class:`HFBackend` wraps a ``tokenizers.Tokenizer`` (a ``tokenizer.json``).
  Its byte table exists only for byte-level BPE (the ``ByteLevel`` decoder),
  built with the Rust decoder's rule: a token whose characters are all in the
  byte-level alphabet maps through it, any other token (added tokens such as
  DeepSeek's full-width tool markers) is its UTF-8.
* :class:`TiktokenBackend` runs tiktoken's BPE over ``{token bytes: rank}``
  ranks plus a table of added tokens at fixed IDs (tiktoken "special tokens";
  whether each is *special* for ``skip_special_tokens`` is our own flag).
  Every token is bytes, so decoding, offsets and the detokenizer all read the
  byte table. Ranks may start above 0 (Mistral's Tekken puts its control
  tokens first) and IDs may have gaps (they decode to nothing).

Neither backend ever adds BOS/EOS. tiktoken is imported only when a tiktoken
backend is built (``pip install tokstream[tiktoken]``).
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import tokenizers

__all__ = ["Backend", "HFBackend", "TiktokenBackend", "bytes_to_unicode"]

Offsets = list[tuple[int, int]]


def bytes_to_unicode() -> dict[int, str]:
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


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE_TRANSLATION = {ord(c): b for b, c in _BYTE_TO_CHAR.items()}
_ALPHABET = frozenset(_BYTE_TO_CHAR.values())


def byte_level_bytes(token: str) -> bytes:
    """The bytes a byte-level token string stands for (its UTF-8 outside the alphabet)."""
    if _ALPHABET.issuperset(token):
        return bytes(token.translate(_CHAR_TO_BYTE_TRANSLATION), "latin-1")
    return token.encode()


class Backend(Protocol):
    """What :class:`~tokstream.Tokenizer` needs from a vocabulary implementation."""

    kind: Literal["hf", "tiktoken"]
    vocab_size: int

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        """Token IDs of ``text``; added-token text becomes that token; no BOS/EOS."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], Offsets]:
        """IDs plus each token's ``(start, end)`` character span in ``text``."""
        ...

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Exact text of ``ids`` (bad UTF-8 as U+FFFD, unknown IDs as nothing)."""
        ...

    def added_tokens(self) -> dict[str, tuple[int, bool]]:
        """Every added token: name -> ``(id, special)``."""
        ...

    def base_token_id(self, name: str) -> int | None:
        """The ID of a base-vocabulary token by its byte-level spelling, or ``None``."""
        ...

    def byte_table(self) -> list[bytes] | None:
        """Each ID's bytes (``b""`` for unknown IDs), or ``None`` if not byte-level."""
        ...


class HFBackend:
    """A Hugging Face ``tokenizers.Tokenizer``."""

    kind: Literal["hf", "tiktoken"] = "hf"

    def __init__(self, hf: tokenizers.Tokenizer) -> None:
        self.hf = hf
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        return np.array(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], Offsets]:
        enc = self.hf.encode(text, add_special_tokens=False)
        return np.array(enc.ids, dtype=np.int32), list(enc.offsets)

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return str(self.hf.decode(ids, skip_special_tokens=skip_special_tokens))

    def added_tokens(self) -> dict[str, tuple[int, bool]]:
        return {
            t.content: (i, bool(t.special)) for i, t in self.hf.get_added_tokens_decoder().items()
        }

    def base_token_id(self, name: str) -> int | None:
        found = self.hf.token_to_id(name)
        return None if found is None else int(found)

    def byte_table(self) -> list[bytes] | None:
        import tokenizers.decoders

        if not isinstance(self.hf.decoder, tokenizers.decoders.ByteLevel):
            return None
        table = [b""] * self.vocab_size
        for tok, i in self.hf.get_vocab(with_added_tokens=True).items():
            if i >= len(table):
                table.extend([b""] * (i + 1 - len(table)))
            table[i] = byte_level_bytes(tok)
        return table


class TiktokenBackend:
    """tiktoken's BPE over ``ranks`` plus added tokens at fixed IDs.

    Args:
        ranks: ``{token bytes: ID}`` of the base vocabulary (BPE merge priority
            is the ID order).
        pattern: The pre-tokenization regex.
        added: ``(name, id, special)`` for each added token; none may share an
            ID with ``ranks``.
        normalization: ``"NFC"`` to normalise input first (Qwen), else ``None``.
        name: A label for tiktoken.

    Raises:
        ValueError: An added token's ID is also a rank's ID, or two added
            tokens share a name or an ID.
        ModuleNotFoundError: tiktoken is not installed.
    """

    kind: Literal["hf", "tiktoken"] = "tiktoken"

    def __init__(
        self,
        ranks: Mapping[bytes, int],
        pattern: str,
        added: Sequence[tuple[str, int, bool]],
        *,
        normalization: str | None = None,
        name: str = "tokstream",
    ) -> None:
        try:
            import tiktoken
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "loading a tiktoken vocabulary needs the tiktoken package: "
                "pip install 'tokstream[tiktoken]'",
                name="tiktoken",
            ) from exc
        if normalization not in (None, "NFC"):
            raise ValueError(f"unsupported normalization {normalization!r} (None or 'NFC')")
        specials = {n: i for n, i, _ in added}
        if len(specials) != len(added) or len(set(specials.values())) != len(added):
            raise ValueError("two added tokens share a name or an ID")
        size = max([*ranks.values(), *specials.values()], default=-1) + 1
        table = [b""] * size
        for token, i in ranks.items():
            table[i] = token
        clash = [n for n, i in specials.items() if table[i]]
        if clash:
            raise ValueError(f"added tokens {clash[:5]} have IDs that base tokens already use")
        for n, i in specials.items():
            table[i] = n.encode()
        self._enc: Any = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=dict(ranks), special_tokens=specials
        )
        self._allowed = frozenset(specials)
        self._ranks = ranks
        self._added = {n: (i, s) for n, i, s in added}
        self._special_ids = frozenset(i for _, i, s in added if s)
        self._table = table
        self._nfc = normalization == "NFC"
        self.pattern = pattern
        self.normalization = normalization
        self.vocab_size: int = size

    def _clean(self, text: str) -> str:
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates: what tiktoken itself does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text

    def encode(self, text: str) -> npt.NDArray[np.int32]:
        if self._nfc:
            text = unicodedata.normalize("NFC", text)
        ids = self._enc.encode_to_numpy(text, allowed_special=self._allowed, disallowed_special=())
        return np.asarray(ids, dtype=np.int32)

    def encode_with_offsets(self, text: str) -> tuple[npt.NDArray[np.int32], Offsets]:
        text = self._clean(text)
        if self._nfc and not unicodedata.is_normalized("NFC", text):
            norm, starts, ends = _nfc_alignment(text)
        else:
            norm, starts, ends = text, None, None
        ids = self.encode(norm)
        table = self._table
        lengths = np.fromiter((len(table[i]) for i in ids.tolist()), np.int64, len(ids))
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        if norm.isascii():
            char_of_byte = np.arange(len(norm) + 1)
        else:
            cps = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32)
            widths = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
            char_of_byte = np.append(np.repeat(np.arange(len(norm)), widths), len(norm))
        first = char_of_byte[bounds[:-1]]
        last = char_of_byte[np.maximum(bounds[1:] - 1, 0)] + 1
        if starts is not None and ends is not None:
            first, last = starts[first], ends[last - 1]
        return ids, list(zip(first.tolist(), last.tolist(), strict=True))

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        table, n = self._table, len(self._table)
        skip = self._special_ids if skip_special_tokens else frozenset()
        data = b"".join(table[i] for i in ids if 0 <= i < n and i not in skip)
        return data.decode("utf-8", "replace")

    def added_tokens(self) -> dict[str, tuple[int, bool]]:
        return dict(self._added)

    def base_token_id(self, name: str) -> int | None:
        found = self._ranks.get(byte_level_bytes(name))
        if found is None:
            found = self._ranks.get(name.encode())
        return found

    def byte_table(self) -> list[bytes] | None:
        return self._table

    def ranks(self) -> Mapping[bytes, int]:
        """The base vocabulary, ``{token bytes: ID}`` (for converters)."""
        return self._ranks


_COMPOSES_WITH_PREVIOUS: frozenset[str] | None = None


def _composes_with_previous() -> frozenset[str]:
    """Characters NFC may merge into the character before them (second of a pair)."""
    global _COMPOSES_WITH_PREVIOUS
    if _COMPOSES_WITH_PREVIOUS is None:
        found = set()
        for cp in range(0x110000):
            parts = unicodedata.decomposition(chr(cp)).split()
            if len(parts) == 2 and not parts[0].startswith("<"):
                found.add(chr(int(parts[1], 16)))
        found.update(map(chr, range(0x1161, 0x1176)))  # Hangul V and T jamo
        found.update(map(chr, range(0x11A8, 0x11C3)))
        _COMPOSES_WITH_PREVIOUS = frozenset(found)
    return _COMPOSES_WITH_PREVIOUS


def _nfc_alignment(
    text: str,
) -> tuple[str, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """NFC-normalise ``text``; map each output character to an input span.

    The text is cut before every character that NFC can neither reorder nor
    compose with what precedes it, and each piece is normalised alone (their
    concatenation is NFC of the whole). Characters of a piece that NFC left
    unchanged map to themselves; those of a changed piece map to the piece.
    """
    second = _composes_with_previous()
    cuts = [0]
    for i in range(1, len(text)):
        c = text[i]
        if (
            unicodedata.combining(c) == 0
            and c not in second
            and unicodedata.is_normalized("NFC", c)
        ):
            cuts.append(i)
    cuts.append(len(text))
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for a, b in itertools.pairwise(cuts):
        piece = text[a:b]
        norm = unicodedata.normalize("NFC", piece)
        out.append(norm)
        if norm == piece:
            starts.extend(range(a, b))
            ends.extend(range(a + 1, b + 1))
        else:
            starts.extend([a] * len(norm))
            ends.extend([b] * len(norm))
    return "".join(out), np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
