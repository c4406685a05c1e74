"""Llama 4: its pythonic reply table.

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
"""

from __future__ import annotations

from ..core.parser import ReplyFormat, State, decode_pythonic

__all__ = ["LLAMA4_PYTHONIC", "LLAMA4_STOPS"]

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
