"""The trio shell: the only package that imports trio or httpx.

It owns the HTTP transports (trio-native with its own pool, and httpx), the
client and its configuration, the stream loop
that pushes bytes into the sans-IO core, the reply runner that feeds the
response parser and hands out tool calls, and the agent turn loop. Everything
here is re-exported from :mod:`tokstream`.
"""

from __future__ import annotations

from ._channel import EventChannel
from ._client import Client, ClientStatistics, Limits, ModelInfo, Timeouts
from ._reply import ReplyHandle, StreamedReply, ToolCallChannel, open_reply, start_reply
from ._stream import EventStream
from ._turns import ToolResult, ToolStarted, Turn, run_agent, run_turn

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
