"""Hermes-style tool calls (Hermes, Qwen2.5, Qwen3): a JSON object per call.

The body between ``<tool_call>`` and ``</tool_call>`` is
``{"name": NAME, "arguments": {...}}`` (surrounding whitespace allowed).
``"parameters"`` is accepted in place of ``"arguments"`` (Llama 3.1 writes it),
and arguments that were encoded as a JSON string are decoded once more. A
string ``"id"`` (Mistral's pre-v11 calls carry one) is the call's ``call_id``.
Any other key but ``"type"`` makes the call ``MALFORMED`` (``{"name": "f", "parameter": {...}}``
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

_KEYS = frozenset(("name", "arguments", "parameters", "type", "id"))


def decode_hermes(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one Hermes call body.

    Returns:
        ``(name, arguments, status, error, call_id)``. ``arguments`` is ``None``
        when the body is not a JSON object; ``error`` explains any status but
        ``OK``.
    """
    try:
        obj = json.loads(body)
    except ValueError as exc:
        return DecodedCall(
            None, None, ToolCallStatus.INVALID_JSON, f"tool call is not valid JSON: {exc}"
        )
    if not isinstance(obj, dict):
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "tool call JSON is not an object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, 'tool call has no string "name"')
    call_id = obj.get("id")
    call_id = call_id if isinstance(call_id, str) else None
    bad = ToolCallStatus.MALFORMED
    extra = sorted(set(obj) - _KEYS)
    if extra:
        # e.g. "parameter": the arguments are there, under a key no parser reads.
        return DecodedCall(name, None, bad, f"tool call has unexpected keys {extra}", call_id)
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return DecodedCall(name, None, bad, '"arguments" is a string, not JSON', call_id)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return DecodedCall(name, None, bad, '"arguments" is not a JSON object', call_id)
    if tools is not None and name not in tools:
        unknown = ToolCallStatus.UNKNOWN_TOOL
        return DecodedCall(name, args, unknown, f"unknown tool {name!r}", call_id)
    return DecodedCall(name, args, ToolCallStatus.OK, None, call_id)
