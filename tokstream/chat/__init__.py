"""Chat framing: render messages as the model's chat template does, one message at a time.

Each family is one small class implementing :class:`ChatFormat`: ``_qwen.py``
(ChatML / Qwen2.5 / Qwen3, with tools and thinking) and ``_llama3.py`` (Llama 3
headers, about 100 lines). A family also owns its reply table
(:meth:`ChatFormat.reply_format`, a :class:`~tokstream.core.parser.ReplyFormat`):
the tags and stop tokens the response parser reads. Importing this package
registers Qwen's ``"hermes"`` and ``"qwen3_coder"`` tables under those names.
:func:`chat_format` picks a family by name or by the tokenizer's special tokens.
The context tree (:class:`tokstream.Context`) uses a format to tokenize each
message once, when it is added.

Deliberately not here: a jinja interpreter. Formats are hand-written and tested
token-for-token against the model's own template; a family whose template is
not append-only documents where and what tokstream does instead (it always keeps
the sampled IDs).

To add a family: write a class with the :class:`ChatFormat` methods whose
constructor takes a :class:`~tokstream.Tokenizer` (its reply table is a
``ReplyFormat`` plus, if its calls are new, a call decoder), and register it
with :func:`register_chat_format`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import InvalidRequest
from ..core.parser import register_reply_format
from ._base import ChatFormat, FormatFactory, LeafKind, Rendering, Role, Segment
from ._deepseek import (
    DEEPSEEK_V3,
    DEEPSEEK_V4,
    DEEPSEEK_V31,
    DEEPSEEK_V32,
    DeepSeekV31Format,
    DeepSeekV32Format,
)
from ._deepseek_v4 import DEEPSEEK_V4_REASONING_EFFORT, DeepSeekV4Format
from ._glm import GLM45Format
from ._harmony import GPT_OSS, HarmonyFormat
from ._kimi import KimiK2Format
from ._llama3 import LLAMA3, LLAMA3_JSON, Llama3Format
from ._llama4 import LLAMA4_PYTHONIC, Llama4Format
from ._minimax import MiniMaxM2Format
from ._mistral import MISTRAL, MISTRAL_V11, MistralFormat
from ._qwen import HERMES, QWEN3_CODER, QwenFormat
from ._xml_families import GLM45, KIMI_K2, MINIMAX_M2

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = [
    "DEEPSEEK_V3",
    "DEEPSEEK_V4",
    "DEEPSEEK_V31",
    "DEEPSEEK_V32",
    "DEEPSEEK_V4_REASONING_EFFORT",
    "GLM45",
    "GPT_OSS",
    "HERMES",
    "KIMI_K2",
    "LLAMA3",
    "LLAMA3_JSON",
    "LLAMA4_PYTHONIC",
    "MINIMAX_M2",
    "MISTRAL",
    "MISTRAL_V11",
    "QWEN3_CODER",
    "FAMILY_FORMATS",
    "ChatFormat",
    "DeepSeekV31Format",
    "DeepSeekV32Format",
    "DeepSeekV4Format",
    "GLM45Format",
    "HarmonyFormat",
    "KimiK2Format",
    "LeafKind",
    "Llama3Format",
    "Llama4Format",
    "MiniMaxM2Format",
    "MistralFormat",
    "QwenFormat",
    "Rendering",
    "Role",
    "Segment",
    "chat_format",
    "register_chat_format",
]

for _fmt in (
    HERMES,
    QWEN3_CODER,
    DEEPSEEK_V3,
    DEEPSEEK_V31,
    DEEPSEEK_V32,
    DEEPSEEK_V4,
    GPT_OSS,
    KIMI_K2,
    GLM45,
    MINIMAX_M2,
    LLAMA3_JSON,
    MISTRAL,
    MISTRAL_V11,
    LLAMA4_PYTHONIC,
):
    register_reply_format(_fmt)

_FORMATS: dict[str, tuple[FormatFactory, str]] = {
    "qwen": (QwenFormat, "<|im_start|>"),
    "llama3": (Llama3Format, "<|start_header_id|>"),
    "deepseek_v32": (DeepSeekV32Format, "｜DSML｜"),
    "harmony": (HarmonyFormat, "<|channel|>"),
    "mistral": (MistralFormat, "[INST]"),
    "llama4": (Llama4Format, "<|header_start|>"),
    "deepseek_v31": (DeepSeekV31Format, "<｜tool▁output▁begin｜>"),
    "deepseek_v4": (DeepSeekV4Format, "<｜latest_reminder｜>"),
    "kimi_k2": (KimiK2Format, "<|im_middle|>"),
    "glm45": (GLM45Format, "<|observation|>"),
    "minimax_m2": (MiniMaxM2Format, "]~b]"),
}


FAMILY_FORMATS: dict[str, str] = {
    "qwen": "qwen",
    "qwen3.5": "qwen",
    "llama3": "llama3",
    "deepseek-v3.2": "deepseek_v32",
    "gpt-oss": "harmony",
    "mistral": "mistral",
    "llama4": "llama4",
    "deepseek-v3.1": "deepseek_v31",
    "kimi-k2": "kimi_k2",
    "glm-4.5": "glm45",
    "minimax-m2": "minimax_m2",
}
"""The chat format of each tokenizer family (``Tokenizer.family``) that has one."""


def register_chat_format(name: str, factory: FormatFactory, *, marker: str) -> None:
    """Register a family so :func:`chat_format` can find it.

    Args:
        name: The format's :attr:`ChatFormat.name`.
        factory: Builds the format from a tokenizer (usually the class).
        marker: An added-token name that identifies the family in a tokenizer
            (e.g. ``"<|start_header_id|>"`` for Llama 3), used for detection.
    """
    _FORMATS[name] = (factory, marker)


def chat_format(tokenizer: Tokenizer, name: str | None = None) -> ChatFormat:
    """Return the chat format for a tokenizer.

    Args:
        tokenizer: The model's tokenizer.
        name: A registered format name (``"qwen"``, ``"llama3"``,
            ``"deepseek_v32"``, ``"harmony"``). ``None`` picks it from the
            tokenizer's family (:data:`FAMILY_FORMATS`), else from its added
            tokens (each registered format's marker).

    Returns:
        The format, bound to the tokenizer.

    Raises:
        InvalidRequest: ``name`` is not registered, the tokenizer's family has
            no chat framing, or no registered family matches the tokenizer
            (also a ``ValueError``).
    """
    if name is not None:
        entry = _FORMATS.get(name)
        if entry is None:
            raise InvalidRequest(
                "chat_format",
                name,
                f"unknown chat format {name!r}; registered: {sorted(_FORMATS)} "
                "(add one with tokstream.chat.register_chat_format)",
            )
        return entry[0](tokenizer)
    family = getattr(tokenizer, "family", None)
    if family is not None:
        if family in FAMILY_FORMATS:
            return _FORMATS[FAMILY_FORMATS[family]][0](tokenizer)
        raise InvalidRequest(
            "chat_format",
            None,
            f"tokstream has no chat framing for the {family!r} family yet (its replies "
            f"parse with ResponseParser); families with one: {sorted(FAMILY_FORMATS)}",
        )
    added = tokenizer.added_tokens
    for factory, marker in _FORMATS.values():
        if marker in added:
            return factory(tokenizer)
    raise InvalidRequest(
        "chat_format",
        None,
        f"cannot detect the chat format of {tokenizer!r}: none of the markers "
        f"{[m for _, m in _FORMATS.values()]} is an added token; pass name= explicitly",
    )
