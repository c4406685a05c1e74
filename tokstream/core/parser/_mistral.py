"""Mistral v11+ tool calls: ``[TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{json}``.

A v11+ call is a header, ``[TOOL_CALLS]`` up to ``[ARGS]``, naming the call
(and, in v11, giving its ID after ``[CALL_ID]``; v13 writes none), then the
arguments as one JSON object, with no closing tag: the call ends where the
JSON balances. :func:`route_mistral` reads the header; the arguments are
decoded as harmony's are (``decode_harmony_arguments``). A header that holds
anything but a name and an ID (a second ``[TOOL_CALLS]``, a brace: the
model left ``[ARGS]`` out) is a call with no name: ``MALFORMED``, raw text
kept.

Pre-v11 calls (``[TOOL_CALLS][{"name": ..., "arguments": ..., "id": ...}]``)
need no code here: each object in the list is a Hermes-style JSON call
(``decode_hermes``), and the list's brackets are framing in the reply table.
"""

from __future__ import annotations

import re

from ._format import State

__all__ = ["route_mistral"]

_NAME = re.compile(r"[\w.\-]+")
_ID = re.compile(r"[A-Za-z0-9_\-]*")


def route_mistral(header: str) -> tuple[State, str | None, str | None]:
    """Route a v11+ call header (``[TOOL_CALLS]NAME[CALL_ID]ID[ARGS]``).

    Returns:
        ``("tool_call", name, call_id)``; ``name`` is ``None`` when the header
        is not a name (and an ID), ``call_id`` when it gives none.
    """
    text = header.removeprefix("[TOOL_CALLS]").removesuffix("[ARGS]")
    name, sep, call_id = text.partition("[CALL_ID]")
    name, call_id = name.strip(), call_id.strip()
    if not _NAME.fullmatch(name) or not _ID.fullmatch(call_id):
        return "tool_call", None, None
    return "tool_call", name, (call_id or None) if sep else None
