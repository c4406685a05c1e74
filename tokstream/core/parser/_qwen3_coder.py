"""Qwen3-Coder tool calls: XML-ish markup, one parameter per element.

The body between ``<tool_call>`` and ``</tool_call>`` is::

    <function=NAME>
    <parameter=P>
    VALUE
    </parameter>
    </function>

Rules (they match what Qwen3-Coder emits and what its chat template renders):

* Exactly one leading and one trailing newline inside a parameter are markup,
  not value: ``<parameter=x>\\n\\nA\\n\\n</parameter>`` has the value ``"\\nA\\n"``.
* A ``</parameter>`` is structural only when what follows it (after
  whitespace) is ``<parameter=``, ``</function>`` or the end of the body.
  Anywhere else it is text of the value, so code that mentions the tag
  survives. The first structural one ends the value. A ``<parameter=`` at the
  start of a line before any structural end starts the next parameter: the
  current one then has no end (``MISSING_PARAMETER_END``) and its value stops
  there.
* A ``<parameter=`` tag whose line ends before its ``>`` is damaged
  (``MALFORMED``): its name is the rest of that line, its value starts on the
  next one.
* With a tool schema, a value converts to the type its property declares
  (``integer``, ``number``, ``boolean``, ``object``, ``array``, ``null``; a
  list of types or ``anyOf`` tries each, ``string`` last). A value that does
  not convert stays the raw string and the call's status says so. Without a
  schema, or for an undeclared parameter, values stay strings.

Called once per complete call, never per token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall
from ._tools import ToolSchemas

__all__ = ["convert_value", "decode_qwen3_coder"]

_FUNC = "<function="
_PARAM = "<parameter="
_PARAM_END = "</parameter>"
_FUNC_END = "</function>"
_WS = " \t\r\n"


def _skip_ws(body: str, pos: int) -> int:
    n = len(body)
    while pos < n and body[pos] in _WS:
        pos += 1
    return pos


def _structural_end(body: str, start: int) -> tuple[int, int] | None:
    """Find the first structural ``</parameter>`` at or after ``start``.

    It must come before the next ``<parameter=`` that starts a line: past
    that, this parameter has no end of its own.
    """
    limit = body.find("\n" + _PARAM, start)
    idx = body.find(_PARAM_END, start)
    while idx >= 0 and (limit < 0 or idx < limit):
        after = idx + len(_PARAM_END)
        q = _skip_ws(body, after)
        if q == len(body) or body.startswith(_PARAM, q) or body.startswith(_FUNC_END, q):
            return idx, after
        idx = body.find(_PARAM_END, idx + 1)
    return None


def _schema_types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    types: list[str] = []
    if isinstance(declared, str):
        types.append(declared)
    elif isinstance(declared, list):
        types.extend(t for t in declared if isinstance(t, str))
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            if isinstance(sub, Mapping):
                types.extend(_schema_types(sub))
    if "enum" in schema and not types:
        types.append("string")
    return types


def _convert_one(text: str, kind: str) -> tuple[bool, Any]:
    s = text.strip()
    if kind == "string":
        return True, text
    if kind == "integer":
        try:
            return True, int(s, 10)
        except ValueError:
            return False, None
    if kind == "number":
        try:
            num = json.loads(s)
        except ValueError:
            try:
                return True, float(s)
            except ValueError:
                return False, None
        return (isinstance(num, (int, float)) and not isinstance(num, bool)), num
    if kind == "boolean":
        low = s.lower()
        if low in ("true", "false"):
            return True, low == "true"
        return False, None
    if kind == "null":
        return (s.lower() in ("null", "none")), None
    if kind in ("object", "array"):
        try:
            val = json.loads(s)
        except ValueError:
            return False, None
        return isinstance(val, dict if kind == "object" else list), val
    return True, text


def convert_value(text: str, schema: Mapping[str, Any] | None) -> tuple[bool, Any]:
    """Convert a parameter's text to its schema type.

    Returns:
        ``(True, value)`` on success (or when there is nothing to convert to),
        ``(False, text)`` when no declared type accepts the text.
    """
    if not schema:
        return True, text
    types = _schema_types(schema)
    if not types:
        return True, text
    for kind in sorted(types, key=lambda t: t == "string"):
        ok, val = _convert_one(text, kind)
        if ok:
            return True, val
    return False, text


def decode_qwen3_coder(body: str, tools: ToolSchemas | None) -> DecodedCall:
    """Parse one Qwen3-Coder call body.

    Returns:
        ``(name, arguments, status, error)``: the first problem found decides
        ``status``; the parameters read before and after it are still returned.
    """
    status = ToolCallStatus.OK
    error: str | None = None

    def problem(st: ToolCallStatus, msg: str) -> None:
        nonlocal status, error
        if status is ToolCallStatus.OK:
            status, error = st, msg

    pos = _skip_ws(body, 0)
    if not body.startswith(_FUNC, pos):
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "tool call has no <function=NAME>")
    gt = body.find(">", pos + len(_FUNC))
    name = body[pos + len(_FUNC) : gt].strip() if gt >= 0 else ""
    if gt < 0 or not name or "\n" in name:
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "tool call has no <function=NAME>")
    known = tools is None or name in tools
    props: Mapping[str, Any] = {}
    if tools is not None and known:
        raw_props = tools[name].get("properties")
        if isinstance(raw_props, Mapping):
            props = raw_props
    args: dict[str, Any] = {}
    pos = gt + 1
    while True:
        p = _skip_ws(body, pos)
        if body.startswith(_PARAM, p):
            gt = body.find(">", p + len(_PARAM))
            line_end = body.find("\n", p + len(_PARAM))
            if line_end >= 0 and (gt < 0 or line_end < gt):
                # A name never spans lines: the tag lost its ">", and the
                # value starts on the next line.
                problem(ToolCallStatus.MALFORMED, "<parameter= tag has no '>' on its line")
                pname = body[p + len(_PARAM) : line_end].strip()
                vstart = line_end + 1
            elif gt < 0:
                problem(ToolCallStatus.MALFORMED, "unclosed <parameter= tag")
                break
            else:
                pname = body[p + len(_PARAM) : gt].strip()
                vstart = gt + 1
                if body.startswith("\n", vstart):
                    vstart += 1
            found = _structural_end(body, vstart)
            if found is None:
                problem(
                    ToolCallStatus.MISSING_PARAMETER_END,
                    f"parameter {pname!r} has no </parameter>",
                )
                ends = [
                    i for i in (body.find(_PARAM, vstart), body.find(_FUNC_END, vstart)) if i >= 0
                ]
                vend = min(ends) if ends else len(body)
                after = vend
            else:
                vend, after = found
            value = body[vstart:vend]
            if value.endswith("\n"):
                value = value[:-1]
            ok, converted = convert_value(value, props.get(pname))
            if not ok:
                problem(
                    ToolCallStatus.INVALID_ARGUMENTS,
                    f"parameter {pname!r}={value!r} does not match its schema type",
                )
            args[pname] = converted
            pos = after
        elif body.startswith(_FUNC_END, p):
            rest = body[p + len(_FUNC_END) :]
            if rest.strip(_WS):
                problem(ToolCallStatus.MALFORMED, f"text after </function>: {rest.strip()[:40]!r}")
            break
        elif p >= len(body):
            problem(ToolCallStatus.MALFORMED, "tool call has no </function>")
            break
        else:
            problem(ToolCallStatus.MALFORMED, f"unexpected text in tool call: {body[p : p + 40]!r}")
            break
    if not known:
        problem(ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}")
    return DecodedCall(name, args, status, error)
