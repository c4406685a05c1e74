"""OpenAI harmony (gpt-oss): where a message goes, and its call arguments.

A harmony reply is a run of messages, each a header then a body::

    <|channel|>analysis<|message|>...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{...}<|call|>
    <|start|>assistant<|channel|>final<|message|>...<|return|>

The header (``<|start|>`` or ``<|channel|>`` up to ``<|message|>``) is routed
by :func:`route_harmony`, as vLLM's ``openai`` parser and ``openai_harmony``
read it:

* a recipient (``to=NAME``, before or after the channel) makes the message a
  tool call named ``NAME`` without its ``functions.`` prefix (built-in
  recipients such as ``browser.search`` or ``python`` too: they are calls the
  caller must answer, named as written);
* otherwise channel ``analysis`` is reasoning, and ``final`` or ``commentary``
  (a preamble) is content;
* a header holding a message's end or start (its ``<|message|>`` was damaged,
  so it ran into the next message) is a call with no name: ``MALFORMED``, raw
  text kept.

A call's body is its arguments, JSON (:func:`decode_harmony_arguments`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall, State
from ._tools import ToolSchemas

__all__ = ["decode_harmony_arguments", "route_harmony"]

_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([^\s<]+)")
_NOT_IN_HEADER = ("<|start|>", "<|end|>", "<|call|>", "<|return|>")


def route_harmony(header: str) -> tuple[State, str | None]:
    """Route a harmony header (``assistant<|channel|>analysis`` and the like).

    Returns:
        ``("tool_call", name)`` for a message with a recipient other than the
        assistant (``None`` for a header that ran into the next message),
        ``("thinking", None)`` for the ``analysis`` channel, and
        ``("text", None)`` for anything else.
    """
    if any(tag in header.removeprefix("<|start|>") for tag in _NOT_IN_HEADER):
        # A damaged <|message|>: the header ran into the next message. Report a
        # nameless (malformed) call rather than guess which message was meant.
        return "tool_call", None
    m = _RECIPIENT.search(header)
    if m is not None and m.group(1) != "assistant":
        return "tool_call", m.group(1).removeprefix("functions.")
    channel = _CHANNEL.search(header)
    if channel is not None and channel.group(1) == "analysis":
        return "thinking", None
    return "text", None


def decode_harmony_arguments(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse a harmony call's body: its JSON arguments (the header named the call).

    Returns:
        ``(None, arguments, status, error)``; the parser takes the name from
        the header and checks it against ``tools``.
    """
    try:
        args: Any = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        return DecodedCall(
            None, None, ToolCallStatus.INVALID_JSON, f"arguments are not valid JSON: {exc}"
        )
    if not isinstance(args, dict):
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "arguments are not a JSON object")
    return DecodedCall(None, args, ToolCallStatus.OK, None)
