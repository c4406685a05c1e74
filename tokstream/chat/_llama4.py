"""Llama 4: its pythonic reply table and its chat framing.

:data:`LLAMA4_PYTHONIC` (``tool_format="llama4_pythonic"``, vLLM's
``--tool-call-parser llama4_pythonic``): a reply that calls tools opens with a
Python list of calls, ``[get_weather(city="Paris"), noop()]``, optionally
wrapped in ``<|python_start|>`` ... ``<|python_end|>``. The list is one call
body, decoded by ``core.parser.decode_pythonic`` when its bracket balances;
its calls are handed out together, then (documented on the decoder). More
lists may follow (``llama_models`` writes one per call). Any other text, at the
start or after the lists, is content (vLLM takes the whole output as content
unless all of it is one list); whitespace before or between lists is framing.
A reply that opens with ``[`` is a call list: if it is not one (content that
starts with ``[``, or a damaged list), it is reported as a ``MALFORMED`` call
with its raw text, where vLLM keeps the output as content.
``<|eot|>``, ``<|eom|>`` and ``<|end_of_text|>`` end the reply.

:class:`Llama4Format` frames messages as ``llama_models``' Llama 4
``ChatFormat.encode_dialog_prompt`` does (the Llama 3 layout with Llama 4's
tokens): ``<|begin_of_text|>``, ``<|header_start|>role<|header_end|>\n\n``
blocks ended by ``<|eot|>``, tool results as ``ipython`` messages ended by
``<|eom|>``, an assistant's calls after its content written as
``ToolPromptFormat.python_list`` writes them (``[get_weather(city="Paris")]``,
one list per call, strings not escaped; content and each call tokenized apart,
as ``llama_models`` encodes them) and ended by ``<|eom|>``, and the
generation prompt ``<|header_start|>assistant<|header_end|>\n\n``. It is
append-only. As for Llama 3, content is ``strip()``-ed (Hugging Face's
template trims it; ``llama_models`` keeps it as given), and tool definitions
and reasoning are not rendered (no reference renders them): passing them
raises :class:`~tokstream.InvalidRequest`.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import InvalidRequest
from ..core.parser import ReplyFormat, State, decode_pythonic
from ._llama3 import Llama3Format

__all__ = ["LLAMA4_PYTHONIC", "LLAMA4_STOPS", "Llama4Format"]

LLAMA4_STOPS = ("<|eot|>", "<|eom|>", "<|end_of_text|>")
"""What ends a Llama 4 reply."""

_PYTHONIC_ROWS: tuple[tuple[State, str, State], ...] = (
    # state    tag                 leads to
    ("calls",  "[",                "tool_call"),  # the bracket starts the list (the body)
    ("calls",  "<|python_start|>", "calls"),      # absorbed
    ("calls",  "<|python_end|>",   "calls"),      # absorbed
    ("text",   "<|python_start|>", "calls"),
)  # fmt: skip

LLAMA4_PYTHONIC = ReplyFormat(
    "llama4_pythonic",
    _PYTHONIC_ROWS,
    LLAMA4_STOPS,
    decode_calls=decode_pythonic,
    call_end="python",
    body_tags=frozenset({"["}),
    initial="calls",
)
"""Llama 4 pythonic tool calls (vLLM ``--tool-call-parser llama4_pythonic``)."""


def _python_value(value: Any) -> str:
    """A value as ``llama_models``' ``python_list`` writes it (its own rules)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int | float | bool) or value is None:
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_python_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_python_value(v)}" for k, v in value.items()) + "}"
    raise InvalidRequest("tool_calls", value, "a tool call argument must be a JSON value")


class Llama4Format(Llama3Format):
    """Llama 4 framing, as ``llama_models``' Llama 4 ``ChatFormat`` encodes it.

    Args:
        tokenizer: A tokenizer with ``<|begin_of_text|>``, ``<|header_start|>``,
            ``<|header_end|>``, ``<|eot|>`` and ``<|eom|>``.

    Raises:
        UnknownTokenError: One of those tokens is missing.
    """

    __slots__ = ()

    _HEAD = ("<|header_start|>", "<|header_end|>")
    _EOT = "<|eot|>"
    _EOM = "<|eom|>"
    _TOOL_END = "<|eom|>"
    _NAME = "llama4"

    def _call_text(self, name: str, arguments: Any) -> str:
        args = ", ".join(f"{k}={_python_value(v)}" for k, v in arguments.items())
        return f"[{name}({args})]"

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """:data:`LLAMA4_PYTHONIC`.

        Raises:
            InvalidRequest: Another ``tool_format``.
        """
        if tool_format in (None, "llama4_pythonic"):
            return LLAMA4_PYTHONIC
        raise InvalidRequest("tool_format", tool_format, "the llama4 format has llama4_pythonic")
