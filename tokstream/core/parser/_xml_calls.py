"""Kimi K2, GLM-4.5 and MiniMax M2 tool calls: one call body each.

* Kimi K2: ``functions.NAME:IDX<|tool_call_argument_begin|>{json}`` (the part
  before the marker is Kimi's call ID, kept as the call's ``call_id``: Kimi's
  framing names a tool result by it; the name is its last dotted part before
  ``:IDX``).
* GLM-4.5 / 4.7: ``NAME`` then ``<arg_key>K</arg_key><arg_value>V</arg_value>``
  pairs (newlines between them allowed).
* MiniMax M2: `` name="NAME">`` (the rest of ``<invoke``) then
  ``<parameter name="K">V</parameter>`` elements.

Values of the markup formats are text, kept verbatim (as the families'
templates write them and vLLM reads them); with a tool schema a value converts
to its declared type (``integer``, ``object``, ...; see ``_qwen3_coder``), and a
value that does not convert stays text with ``INVALID_ARGUMENTS``. A value's end
tag (``</arg_value>``, ``</parameter>``) is structural only when what follows
it, after whitespace, is the next key or parameter or the end of the body;
anywhere else it is text of the value. A key or parameter that starts a line
before any structural end starts the next element: the open value then has no
end (``MISSING_PARAMETER_END``) and stops there. Called once per complete call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall
from ._qwen3_coder import convert_value
from ._tools import ToolSchemas

__all__ = ["decode_glm", "decode_kimi_k2", "decode_minimax_m2"]

KIMI_ARG = "<|tool_call_argument_begin|>"
_KIMI_ID = re.compile(r"(?P<id>.+:\d+)")
_WS = " \t\r\n"


def _check_name(name: str, tools: ToolSchemas | None) -> tuple[ToolCallStatus, str | None]:
    if tools is not None and name not in tools:
        return ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}"
    return ToolCallStatus.OK, None


def decode_kimi_k2(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one Kimi K2 call body.

    Returns:
        ``(name, arguments, status, error)``.
    """
    head, sep, raw = body.partition(KIMI_ARG)
    m = _KIMI_ID.match(head.strip())
    if not sep or m is None:
        bad = ToolCallStatus.MALFORMED
        return DecodedCall(None, None, bad, "tool call has no functions.NAME:IDX header")
    call_id = m.group("id")
    name = call_id.split(":")[0].split(".")[-1]
    try:
        args: Any = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        error = f"arguments are not valid JSON: {exc}"
        return DecodedCall(name, None, ToolCallStatus.INVALID_JSON, error, call_id)
    if not isinstance(args, dict):
        error = "arguments are not a JSON object"
        return DecodedCall(name, None, ToolCallStatus.MALFORMED, error, call_id)
    return DecodedCall(name, args, *_check_name(name, tools), call_id)


def _structural(body: str, end_tag: str, opener: str, start: int) -> int:
    """Index of the first structural ``end_tag`` at or after ``start``, or -1.

    It must come before the next ``opener`` that starts a line: past that, the
    value has no end of its own.
    """
    limit = body.find("\n" + opener, start)
    idx = body.find(end_tag, start)
    while idx >= 0 and (limit < 0 or idx < limit):
        q = idx + len(end_tag)
        while q < len(body) and body[q] in _WS:
            q += 1
        if q == len(body) or body.startswith(opener, q):
            return idx
        idx = body.find(end_tag, idx + 1)
    return -1


def _pairs(
    body: str,
    pos: int,
    head: re.Pattern[str],
    opener: str,
    end_tag: str,
    props: Mapping[str, Any],
) -> tuple[dict[str, Any], ToolCallStatus, str | None]:
    """Read ``head value end_tag`` elements from ``pos`` (``head`` starts with
    ``opener``): the arguments and the first problem."""
    args: dict[str, Any] = {}
    status, error = ToolCallStatus.OK, None

    def problem(st: ToolCallStatus, msg: str) -> None:
        nonlocal status, error
        if status is ToolCallStatus.OK:
            status, error = st, msg

    while True:
        while pos < len(body) and body[pos] in _WS:
            pos += 1
        if pos >= len(body):
            break
        m = head.match(body, pos)
        if m is None:
            problem(
                ToolCallStatus.MALFORMED, f"unexpected text in the call: {body[pos : pos + 40]!r}"
            )
            break
        key, vstart = m.group(1).strip(), m.end()
        end = _structural(body, end_tag, opener, vstart)
        if end < 0:
            problem(ToolCallStatus.MISSING_PARAMETER_END, f"{key!r} has no {end_tag}")
            nxt = body.find("\n" + opener, vstart)
            end = after = nxt if nxt >= 0 else len(body)
        else:
            after = end + len(end_tag)
        value = body[vstart:end]
        ok, converted = convert_value(value, props.get(key))
        if not ok:
            problem(ToolCallStatus.INVALID_ARGUMENTS, f"{key!r}={value!r} does not match its type")
        args[key] = converted
        pos = after
    return args, status, error


def _props(name: str, tools: ToolSchemas | None) -> Mapping[str, Any]:
    if tools is None or name not in tools:
        return {}
    props = tools[name].get("properties")
    return props if isinstance(props, Mapping) else {}


_GLM_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>", re.DOTALL)


def decode_glm(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one GLM-4.5 call body (``NAME<arg_key>...``).

    Returns:
        ``(name, arguments, status, error)``.
    """
    cut = body.find("<arg_key>")
    name = (body if cut < 0 else body[:cut]).strip()
    if not name or "\n" in name or "<" in name:
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "tool call has no function name")
    start = len(body) if cut < 0 else cut
    props = _props(name, tools)
    args, status, error = _pairs(body, start, _GLM_PAIR, "<arg_key>", "</arg_value>", props)
    if status is ToolCallStatus.OK:
        status, error = _check_name(name, tools)
    return DecodedCall(name, args, status, error)


_MINIMAX_NAME = re.compile(r"""\s*name\s*=\s*(?:"([^"]*)"|'([^']*)'|([^>\s]+))\s*>""")
_MINIMAX_PARAM = re.compile(r"""<parameter\s+name\s*=\s*["']?([^"'>]*)["']?\s*>""")


def decode_minimax_m2(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one MiniMax M2 call body (`` name="NAME">`` and its parameters).

    Returns:
        ``(name, arguments, status, error)``.
    """
    m = _MINIMAX_NAME.match(body)
    name = (m.group(1) or m.group(2) or m.group(3) or "").strip() if m else ""
    if m is None or not name:
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, 'tool call has no name="..."')
    props = _props(name, tools)
    args, status, error = _pairs(body, m.end(), _MINIMAX_PARAM, "<parameter", "</parameter>", props)
    if status is ToolCallStatus.OK:
        status, error = _check_name(name, tools)
    return DecodedCall(name, args, status, error)
