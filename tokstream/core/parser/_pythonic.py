"""Pythonic tool calls (Llama 4, Llama 3.2): a Python list of calls, ``[f(a=1), g(b="x")]``.

The body is the whole list; :func:`decode_pythonic` reads it once, when the
list's bracket balances, with Python's own ``ast`` (no code runs), and returns
one call per element: its name (``f``, or dotted: ``browser.search``), its
keyword arguments, and its own source text as ``raw``. Values are literals, as
vLLM's ``pythonic`` / ``llama4_pythonic`` parsers read them: strings, numbers,
``True``/``False``/``None`` (and JSON's ``true``/``false``/``null``), dicts with
literal keys, lists, tuples and sets (as lists), ``-1``. An element that is not
a call with keyword arguments is ``MALFORMED``; a value that is not a literal
makes its call ``INVALID_ARGUMENTS``; a body that is not a Python list is one
``MALFORMED`` call with the whole text.

Calls of one list are handed out together at the list's close (the parser
cannot tell where an element ends without reading Python); a list cut off by
the end of the reply is one ``UNTERMINATED`` call with the raw text so far.
"""

from __future__ import annotations

import ast
from typing import Any

from ._events import ToolCallStatus
from ._format import DecodedCall
from ._tools import ToolSchemas

__all__ = ["decode_pythonic"]

_NAMES = {"true": True, "false": False, "null": None}


class _NotLiteral(ValueError):
    pass


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, str | int | float)
    ):
        return node.value
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if not isinstance(k, ast.Constant):
                raise _NotLiteral("a dict key is not a literal")
            out[k.value] = _literal(v)
        return out
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_literal(v) for v in node.elts]
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.JoinedStr) and all(isinstance(p, ast.Constant) for p in node.values):
        return "".join(str(p.value) for p in node.values if isinstance(p, ast.Constant))
    raise _NotLiteral(f"{ast.dump(node)[:60]} is not a literal")


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _one(body: str, node: ast.expr, tools: ToolSchemas | None) -> DecodedCall:
    raw = ast.get_source_segment(body, node) or ""
    if not isinstance(node, ast.Call):
        return DecodedCall(None, None, ToolCallStatus.MALFORMED, "not a call", raw=raw)
    name = _dotted(node.func)
    if name is None:
        bad = ToolCallStatus.MALFORMED
        return DecodedCall(None, None, bad, "the callee is not a name", raw=raw)
    if node.args or any(k.arg is None for k in node.keywords):
        bad = ToolCallStatus.MALFORMED
        return DecodedCall(name, None, bad, "arguments must be keyword=value", raw=raw)
    try:
        args = {str(k.arg): _literal(k.value) for k in node.keywords}
    except _NotLiteral as exc:
        return DecodedCall(name, None, ToolCallStatus.INVALID_ARGUMENTS, str(exc), raw=raw)
    if tools is not None and name not in tools:
        unknown = ToolCallStatus.UNKNOWN_TOOL
        return DecodedCall(name, args, unknown, f"unknown tool {name!r}", raw=raw)
    return DecodedCall(name, args, ToolCallStatus.OK, None, raw=raw)


def decode_pythonic(body: str, tools: ToolSchemas | None) -> list[DecodedCall]:
    """Parse a pythonic call list (``[f(a=1), g()]``) into its calls, in order.

    Returns:
        One :class:`DecodedCall` per element; one ``MALFORMED`` call when the
        body is not a Python list.
    """
    text = body.strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError) as exc:
        error = f"not a Python list of calls: {exc}"
        return [DecodedCall(None, None, ToolCallStatus.MALFORMED, error)]
    if not isinstance(tree, ast.List):
        return [DecodedCall(None, None, ToolCallStatus.MALFORMED, "not a Python list of calls")]
    return [_one(text, node, tools) for node in tree.elts]
