"""Tool definitions as the parser needs them: name -> JSON-schema parameters.

Accepts OpenAI-style definitions (``{"type": "function", "function": {"name":
..., "parameters": {...}}}``), bare function objects (``{"name": ...,
"parameters": {...}}``), or a mapping of name to parameters schema. Nothing
here validates arguments against a schema: the parser only needs names (to
flag unknown tools) and declared parameter types (to convert Qwen3-Coder
values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from ..._exceptions import InvalidRequest

__all__ = ["ToolSchemas", "ToolSpecs", "normalise_tools"]

ToolSpecs: TypeAlias = Iterable[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]
ToolSchemas: TypeAlias = dict[str, Mapping[str, Any]]


def normalise_tools(tools: ToolSpecs | None) -> ToolSchemas | None:
    """Return ``{name: parameters_schema}`` for ``tools``, or ``None`` if not given.

    Raises:
        InvalidRequest: A definition has no function name.
    """
    if tools is None:
        return None
    if isinstance(tools, Mapping):
        return {str(name): dict(schema or {}) for name, schema in tools.items()}
    out: ToolSchemas = {}
    for spec in tools:
        fn = spec.get("function", spec)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tools", spec, "a tool definition needs a function name")
        params = fn.get("parameters") or {}
        out[name] = params if isinstance(params, Mapping) else {}
    return out
