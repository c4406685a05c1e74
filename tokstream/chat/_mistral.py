"""Mistral: its reply tables (pre-v11 and v11+ tool calls).

* :data:`MISTRAL` (``tool_format="mistral"``, Tekken up to v7): ``[TOOL_CALLS]``
  opens a section holding a JSON list of calls,
  ``[{"name": ..., "arguments": {...}, "id": ...}, ...]`` (a bare object is
  read too). The list's ``[``, ``,`` and ``]`` are framing; each object is a
  call that ends where its JSON balances, and is handed out right then, not at
  the list's close. Text after ``]`` is content.
* :data:`MISTRAL_V11` (``tool_format="mistral_v11"``, Tekken v11 and later):
  each call is ``[TOOL_CALLS]NAME[ARGS]{json}`` (v11 puts ``[CALL_ID]ID``
  before ``[ARGS]``); the header is routed by ``core.parser.route_mistral``,
  and the call ends where its JSON arguments balance. v13's
  ``[THINK]...[/THINK]`` is reasoning.

``</s>`` ends the reply. The ID a call carries (``"id"``, ``[CALL_ID]``) is
its ``call_id``.

Where tokstream differs from vLLM's ``mistral`` parser, on purpose: text after
the calls is content (vLLM drops it, or keeps only text before the first
``[TOOL_CALLS]``), and a call whose JSON is broken is reported with its status
and raw text (vLLM turns the output into content).
"""

from __future__ import annotations

from ..core.parser import ReplyFormat, State, decode_harmony_arguments, decode_hermes, route_mistral

__all__ = ["MISTRAL", "MISTRAL_V11"]

_STOPS = ("</s>",)

_LIST_ROWS: tuple[tuple[State, str, State], ...] = (
    # state    tag             leads to
    ("text",   "[TOOL_CALLS]", "calls"),
    ("calls",  "[TOOL_CALLS]", "calls"),      # repeated: absorbed
    ("calls",  "[",            "calls"),      # the list opens: framing
    ("calls",  "{",            "tool_call"),  # the brace starts the call's JSON
    ("calls",  "]",            "text"),       # the list closes
)  # fmt: skip

MISTRAL = ReplyFormat(
    "mistral",
    _LIST_ROWS,
    _STOPS,
    decode_hermes,
    call_body="json",
    call_end="json",
    body_tags=frozenset({"{"}),
    calls_separators=",",
)
"""Pre-v11 Mistral calls: ``[TOOL_CALLS][{...}, {...}]`` (vLLM ``--tool-call-parser mistral``
with a tokenizer that has no ``[ARGS]``)."""

_V11_ROWS: tuple[tuple[State, str, State], ...] = (
    # state       tag             leads to
    ("text",      "[THINK]",      "thinking"),
    ("thinking",  "[THINK]",      "thinking"),  # redundant: absorbed
    ("thinking",  "[/THINK]",     "text"),
    ("text",      "[TOOL_CALLS]", "header"),
    ("thinking",  "[TOOL_CALLS]", "header"),    # a call ends thinking implicitly
    ("header",    "[ARGS]",       "routed"),
)  # fmt: skip

MISTRAL_V11 = ReplyFormat(
    "mistral_v11",
    _V11_ROWS,
    _STOPS,
    decode_harmony_arguments,
    call_body="json",
    route_header=route_mistral,
    call_end="json",
)
"""v11+ Mistral calls: ``[TOOL_CALLS]NAME[ARGS]{...}`` (vLLM ``--tool-call-parser mistral``
with a tokenizer that has ``[ARGS]``; ``[THINK]`` reasoning as its ``mistral``
reasoning parser reads it)."""
