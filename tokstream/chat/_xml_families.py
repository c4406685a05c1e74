"""Reply tables for Kimi K2, GLM-4.5 and MiniMax M2 (vLLM's ``kimi_k2``, ``glm45``, ``minimax_m2``).

* :data:`KIMI_K2`: ``<|tool_calls_section_begin|>`` holds
  ``<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}<|tool_call_end|>``
  calls, closed by ``<|tool_calls_section_end|>``; ``<think>`` reasoning.
* :data:`GLM45`: ``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>``;
  ``<think>`` reasoning; a reply ends at ``<|user|>`` / ``<|observation|>``.
* :data:`MINIMAX_M2`: ``<minimax:tool_call>`` holds ``<invoke name="NAME">`` calls
  of ``<parameter name="K">V</parameter>`` elements, each closed by ``</invoke>``
  (matched in text: ``<invoke`` is not a special token); ``<think>`` reasoning.

A redundant ``<think>`` from the model inside a block the prompt opened is
absorbed. Their chat framing is in ``_kimi``, ``_glm`` and ``_minimax``.

Where tokstream differs from vLLM, on purpose: content after the calls is kept
(vLLM drops it), a call to a tool that was not offered is reported
``UNKNOWN_TOOL`` (vLLM's GLM and MiniMax parsers drop it), and with tool
schemas GLM / MiniMax values convert to their declared types (vLLM keeps every
value a string).
"""

from __future__ import annotations

from ..core.parser import ReplyFormat, State, decode_glm, decode_kimi_k2, decode_minimax_m2

__all__ = ["GLM45", "KIMI_K2", "MINIMAX_M2"]

_THINK: tuple[tuple[State, str, State], ...] = (
    ("text", "<think>", "thinking"),
    ("thinking", "<think>", "thinking"),  # redundant: absorbed
    ("thinking", "</think>", "text"),
)

_KIMI_ROWS: tuple[tuple[State, str, State], ...] = (
    # state       tag                              leads to
    ("text",      "<|tool_calls_section_begin|>",  "calls"),
    ("thinking",  "<|tool_calls_section_begin|>",  "calls"),
    ("calls",     "<|tool_call_begin|>",           "tool_call"),
    ("calls",     "<|tool_calls_section_end|>",    "text"),
    ("tool_call", "<|tool_call_end|>",             "calls"),
    ("tool_call", "<|tool_calls_section_end|>",    "text"),
    ("tool_call", "<|tool_call_begin|>",           "tool_call"),  # cuts the open call
)  # fmt: skip

KIMI_K2 = ReplyFormat(
    "kimi_k2", (*_THINK, *_KIMI_ROWS), ("<|im_end|>", "[EOS]"), decode_kimi_k2, call_body="json"
)
"""Kimi K2 (vLLM ``--tool-call-parser kimi_k2 --reasoning-parser kimi_k2``)."""

_GLM_ROWS: tuple[tuple[State, str, State], ...] = (
    ("text",      "<tool_call>",  "tool_call"),
    ("thinking",  "<tool_call>",  "tool_call"),  # a call ends thinking implicitly
    ("tool_call", "</tool_call>", "text"),
    ("tool_call", "<tool_call>",  "tool_call"),
)  # fmt: skip

GLM45 = ReplyFormat(
    "glm45", (*_THINK, *_GLM_ROWS), ("<|user|>", "<|observation|>", "<|endoftext|>"), decode_glm
)
"""GLM-4.5 / 4.6 / 4.7 (vLLM ``--tool-call-parser glm45 --reasoning-parser glm45``)."""

_MINIMAX_ROWS: tuple[tuple[State, str, State], ...] = (
    ("text",      "<minimax:tool_call>",  "calls"),
    ("thinking",  "<minimax:tool_call>",  "calls"),
    ("text",      "<invoke",              "tool_call"),
    ("calls",     "<invoke",              "tool_call"),
    ("calls",     "</minimax:tool_call>", "text"),
    ("tool_call", "</invoke>",            "calls"),
    ("tool_call", "</minimax:tool_call>", "text"),
)  # fmt: skip

MINIMAX_M2 = ReplyFormat("minimax_m2", (*_THINK, *_MINIMAX_ROWS), ("[e~[",), decode_minimax_m2)
"""MiniMax M2 (vLLM ``--tool-call-parser minimax_m2 --reasoning-parser minimax_m2``)."""
