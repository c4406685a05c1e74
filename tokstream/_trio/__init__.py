"""The trio shell: the only package that imports trio or httpx.

It owns the HTTP transports (trio-native with its own pool, and httpx), the
client and its configuration, the stream loop
that pushes bytes into the sans-IO core, the reply runner that feeds the
response parser and hands out tool calls, and the agent turn loop. Everything
here is re-exported from :mod:`tokstream`.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._channel import EventChannel
    from ._client import Client, ClientStatistics, Limits, ModelInfo, Timeouts
    from ._reply import ReplyHandle, StreamedReply, ToolCallChannel, open_reply, start_reply
    from ._stream import EventStream
    from ._turns import ToolResult, ToolStarted, Turn, run_agent, run_turn

# Each name loads its module on first use: a client alone never imports the
# reply runner or the agent loop (nor, through them, the parser).
_LAZY: dict[str, str] = {
    "EventChannel": "_channel",
    **dict.fromkeys(("Client", "ClientStatistics", "Limits", "ModelInfo", "Timeouts"), "_client"),
    **dict.fromkeys(
        ("ReplyHandle", "StreamedReply", "ToolCallChannel", "open_reply", "start_reply"), "_reply"
    ),
    "EventStream": "_stream",
    **dict.fromkeys(("ToolResult", "ToolStarted", "Turn", "run_agent", "run_turn"), "_turns"),
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Client",
    "ClientStatistics",
    "EventChannel",
    "EventStream",
    "Limits",
    "ModelInfo",
    "ReplyHandle",
    "StreamedReply",
    "Timeouts",
    "ToolCallChannel",
    "ToolResult",
    "ToolStarted",
    "Turn",
    "open_reply",
    "run_agent",
    "run_turn",
    "start_reply",
]
