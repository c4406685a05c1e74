"""DeepSeek tool calls: V3 / R1, V3.1 (``NAME<｜tool▁sep｜>JSON``) and V3.2 / V4 (DSML markup).

V3.1: the body between ``<｜tool▁call▁begin｜>`` and ``<｜tool▁call▁end｜>`` is
the function name, ``<｜tool▁sep｜>``, then the arguments as a JSON object.

V3 / R1 (V3-0324, R1, R1-0528): the same tags, and the body is the call's type
(``function``), ``<｜tool▁sep｜>``, the name and a newline, then the arguments
as a JSON object in a ```` ```json ```` fence. A body without the fence is read
as the JSON it holds (vLLM's ``deepseek_v3`` parser drops such a call).

V3.2 / V4 (DSML): the body after ``<｜DSML｜invoke`` up to
``</｜DSML｜invoke>`` is ``name="NAME">`` then one element per parameter::

    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>

A ``string="true"`` value is the raw text; any other value (``"false"`` or no
attribute) is JSON, or the raw text when it is not JSON (as vLLM's
``deepseek_v32`` parser reads it). A ``</｜DSML｜parameter>`` is structural
only when what follows it (after whitespace) is the next
``<｜DSML｜parameter`` or the end of the body; anywhere else it is text of the
value. A parameter with no structural end runs to the next parameter that
starts a line (``MISSING_PARAMETER_END``). With tool schemas, arguments that
the model wrapped as ``{"arguments": {...}}`` (or ``"input"``) are unwrapped
when the schema has no such property, as vLLM does.

Called once per complete call, never per token.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall
from ._tools import ToolSchemas

__all__ = ["decode_deepseek_v3", "decode_deepseek_v31", "decode_dsml"]

TOOL_SEP = "<｜tool▁sep｜>"
_DSML = "｜DSML｜"
_PARAM = f"<{_DSML}parameter"
_PARAM_END = f"</{_DSML}parameter>"
_NAME = re.compile(r'\s*name="([^"]*)"\s*>')
_PARAM_HEAD = re.compile(r'\s+name="([^"]+)"(?:\s+string="([^"]*)")?\s*>')
_WS = " \t\r\n"


def decode_deepseek_v31(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one DeepSeek V3.1 call body (``NAME<｜tool▁sep｜>{...}``).

    Returns:
        ``(name, arguments, status, error)``.
    """
    name, sep, raw = body.partition(TOOL_SEP)
    if not sep or not name.strip():
        return DecodedCall(
            None, None, ToolCallStatus.MALFORMED, "tool call has no NAME<｜tool▁sep｜>"
        )
    return _json_object(name.strip(), raw, tools)


def _json_object(name: str, raw: str, tools: ToolSchemas | None) -> DecodedCall:
    try:
        args: Any = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return DecodedCall(
            name, None, ToolCallStatus.INVALID_JSON, f"arguments are not valid JSON: {exc}"
        )
    if not isinstance(args, dict):
        return DecodedCall(name, None, ToolCallStatus.MALFORMED, "arguments are not a JSON object")
    if tools is not None and name not in tools:
        return DecodedCall(name, args, ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}")
    return DecodedCall(name, args, ToolCallStatus.OK, None)


_FENCE = re.compile(r"\s*```[a-z]*[ \t]*\n(.*?)\n?[ \t]*```\s*\Z", re.DOTALL)


def decode_deepseek_v3(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one DeepSeek V3 / R1 call body (``function<｜tool▁sep｜>NAME\\n```json ...```).

    Returns:
        ``(name, arguments, status, error)``.
    """
    _type, sep, rest = body.partition(TOOL_SEP)
    name, newline, raw = rest.partition("\n")
    name = name.strip()
    if not sep or not name:
        return DecodedCall(
            None, None, ToolCallStatus.MALFORMED, "tool call has no TYPE<｜tool▁sep｜>NAME"
        )
    if not newline:
        return DecodedCall(
            name, None, ToolCallStatus.MALFORMED, "tool call has no arguments after its name"
        )
    fenced = _FENCE.match(raw)
    return _json_object(name, raw if fenced is None else fenced.group(1), tools)


def _structural_end(body: str, start: int) -> tuple[int, int] | None:
    limit = body.find("\n" + _PARAM, start)
    idx = body.find(_PARAM_END, start)
    while idx >= 0 and (limit < 0 or idx < limit):
        after = idx + len(_PARAM_END)
        q = after
        while q < len(body) and body[q] in _WS:
            q += 1
        if q == len(body) or body.startswith(_PARAM, q):
            return idx, after
        idx = body.find(_PARAM_END, idx + 1)
    return None


def _unwrap(args: dict[str, Any], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    props = schema.get("properties") if schema else None
    if not isinstance(props, Mapping) or not props:
        return args
    for wrapper in ("arguments", "input"):
        if set(args) != {wrapper} or wrapper in props:
            continue
        inner = args[wrapper]
        if isinstance(inner, str):
            try:
                inner = json.loads(inner)
            except ValueError:
                return args
        if isinstance(inner, dict) and set(inner) <= set(props):
            return inner
    return args


def decode_dsml(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one DSML call body (`` name="NAME">`` and its parameters).

    Returns:
        ``(name, arguments, status, error)``: the first problem found decides
        ``status``; the parameters read before and after it are still returned.
    """
    m = _NAME.match(body)
    if m is None or not m.group(1):
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, 'tool call has no name="..."')
    name = m.group(1)
    status, error = ToolCallStatus.OK, None
    args: dict[str, Any] = {}
    pos = m.end()
    while True:
        while pos < len(body) and body[pos] in _WS:
            pos += 1
        if pos >= len(body):
            break
        head = _PARAM_HEAD.match(body, pos + len(_PARAM)) if body.startswith(_PARAM, pos) else None
        if head is None:
            if status is ToolCallStatus.OK:
                status = ToolCallStatus.MALFORMED
                error = f"unexpected text in tool call: {body[pos : pos + 40]!r}"
            break
        pname, is_str = head.group(1), head.group(2)
        vstart = head.end()
        found = _structural_end(body, vstart)
        if found is None:
            if status is ToolCallStatus.OK:
                status = ToolCallStatus.MISSING_PARAMETER_END
                error = f"parameter {pname!r} has no {_PARAM_END}"
            nxt = body.find("\n" + _PARAM, vstart)
            vend = after = nxt if nxt >= 0 else len(body)
        else:
            vend, after = found
        value: Any = body[vstart:vend]
        if is_str != "true":
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        args[pname] = value
        pos = after
    if tools is not None:
        if name not in tools:
            return DecodedCall(name, args, ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}")
        args = _unwrap(args, tools[name])
    return DecodedCall(name, args, status, error)
