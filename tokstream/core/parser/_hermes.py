"""Hermes-style tool calls (Hermes, Qwen2.5, Qwen3): a JSON object per call.

The body between ``<tool_call>`` and ``</tool_call>`` is
``{"name": NAME, "arguments": {...}}`` (surrounding whitespace allowed).
``"parameters"`` is accepted in place of ``"arguments"`` (Llama 3.1 writes it),
and arguments that were encoded as a JSON string are decoded once more. Any
other key but ``"type"`` makes the call ``MALFORMED`` (``{"name": "f", "parameter": {...}}``
must not pass as a call without arguments). Called once per complete
call, never per token.
"""

from __future__ import annotations

import json
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall
from ._tools import ToolSchemas

__all__ = ["decode_hermes"]

_KEYS = frozenset(("name", "arguments", "parameters", "type"))


def decode_hermes(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one Hermes call body.

    Returns:
        ``(name, arguments, status, error)``. ``arguments`` is ``None`` when the
        body is not a JSON object; ``error`` explains any status but ``OK``.
    """
    try:
        obj = json.loads(body)
    except ValueError as exc:
        return None, None, ToolCallStatus.INVALID_JSON, f"tool call is not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, None, ToolCallStatus.MALFORMED, "tool call JSON is not an object"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, None, ToolCallStatus.MALFORMED, 'tool call has no string "name"'
    extra = sorted(set(obj) - _KEYS)
    if extra:
        # e.g. "parameter": the arguments are there, under a key no parser reads.
        return name, None, ToolCallStatus.MALFORMED, f"tool call has unexpected keys {extra}"
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return name, None, ToolCallStatus.MALFORMED, '"arguments" is a string, not JSON'
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return name, None, ToolCallStatus.MALFORMED, '"arguments" is not a JSON object'
    if tools is not None and name not in tools:
        return name, args, ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}"
    return name, args, ToolCallStatus.OK, None
