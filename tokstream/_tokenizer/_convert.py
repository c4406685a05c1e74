"""Convert a tiktoken vocabulary to a Hugging Face ``tokenizers.Tokenizer`` with the same IDs.

vLLM and transformers read ``tokenizer.json``; several families ship only
tiktoken ranks. The conversion is the one Hugging Face itself uses for Llama 3
and gpt-oss: byte-level BPE whose vocabulary is the ranks in the byte-level
alphabet, whose merge list is recovered from the ranks (tiktoken stores none),
with ``ignore_merges`` (a pre-token that is itself a token is taken whole, as
tiktoken does), the family's regex as a ``Split`` pre-tokenizer, and every
added token at its own ID. The tests check it against tiktoken and each
family's reference on many strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._backends import bytes_to_unicode

__all__ = ["recover_merges", "tiktoken_to_hf"]


def recover_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merge list, in priority order, that produces ``ranks``.

    A token of rank r was made by merging the two parts that remain when BPE
    runs on its bytes with only the merges of rank < r; those pairs, in rank
    order, are the merge list.
    """
    merges: list[tuple[int, bytes, bytes]] = []
    never = len(ranks) + 2**40
    get = ranks.get
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        # tiktoken's own loop: keep each adjacent pair's rank, merge the lowest.
        parts = [token[i : i + 1] for i in range(len(token))]
        pair = [get(parts[i] + parts[i + 1], never) for i in range(len(parts) - 1)]
        while len(parts) > 2:
            low = min(pair)
            if low >= rank:
                break
            i = pair.index(low)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
            del pair[i]
            if i > 0:
                pair[i - 1] = get(parts[i - 1] + parts[i], never)
            if i < len(parts) - 1:
                pair[i] = get(parts[i] + parts[i + 1], never)
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1]))
    merges.sort()
    return [(a, b) for _, a, b in merges]


def tiktoken_to_hf(
    ranks: Mapping[bytes, int],
    pattern: str,
    added: Sequence[tuple[str, int, bool]],
    normalization: str | None = None,
) -> Any:
    """A ``tokenizers.Tokenizer`` equal to tiktoken's BPE over ``ranks`` plus ``added``.

    Args:
        ranks: ``{token bytes: ID}``.
        pattern: The pre-tokenization regex.
        added: ``(name, id, special)`` of each added token.
        normalization: ``"NFC"`` or ``None``.

    Returns:
        The tokenizer (save it with ``.save(path)``).

    Raises:
        ValueError: An added token's text is also a base token's spelling
            (``tokenizers`` would give both one ID).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pre

    b2u = bytes_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(t): r for t, r in ranks.items()}
    clash = [n for n, _, _ in added if n in vocab]
    if clash:
        raise ValueError(f"added tokens {clash[:5]} are spelled like base tokens")
    # Added tokens sit in the model's vocabulary too, so that loading keeps
    # their IDs even where the IDs leave gaps.
    vocab.update({n: i for n, i, _ in added})
    merges = [(enc(a), enc(b)) for a, b in recover_merges(ranks)]
    tok = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=True
        )
    )
    if normalization == "NFC":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre.Sequence(
        [
            pre.Split(Regex(pattern), behavior="isolated", invert=False),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for name, _, special in sorted(added, key=lambda t: t[1]):
        token = AddedToken(name, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return tok
