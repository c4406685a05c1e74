"""tokstream: a token-level streaming engine for self-hosted vLLM.

Send pre-tokenized prompts to vLLM's ``/v1/completions`` and receive every
sampled token ID, exactly, as it arrives, as ``Token`` / ``Done`` / ``Error``
events on trio.

The decoders are sans-IO (no trio, no httpx); the client is a thin trio shell
over one ``httpx.AsyncClient``. See ``README.md`` for a quickstart.
"""

from __future__ import annotations

from ._chunks import StreamDecoder
from ._client import Client, ClientStatistics, Limits, ModelInfo, Timeouts
from ._context import Context, ContextError, Leaf, Message, ReplyBuilder
from ._events import Done, Error, Event, StreamStatistics, Token, Usage
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectTimeout,
    FirstTokenTimeout,
    HTTPStatusError,
    InBandError,
    InternalServerError,
    InvalidRequest,
    NotFoundError,
    OutputError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RemoteDisconnected,
    StallTimeout,
    StreamError,
    TokstreamError,
    TransportError,
    UnprocessableEntityError,
)
from ._parser import (
    ParseEvent,
    Reply,
    ReplySegment,
    ResponseParser,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallStarted,
    ToolCallStatus,
    parse_output,
)
from ._request import CompletionRequest
from ._runner import ReplyHandle, StreamedReply, ToolCallChannel, open_reply, start_reply
from ._sse import SSEDecoder, SSEEvent
from ._stream import EventStream
from ._tokenizer import (
    IncrementalDetokenizer,
    Tokenizer,
    TokenizerNotFoundError,
    UnknownTokenError,
)
from ._turns import ToolResult, ToolStarted, Turn, run_agent, run_turn

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientStatistics",
    "CompletionRequest",
    "ConnectError",
    "ConnectTimeout",
    "Context",
    "ContextError",
    "Done",
    "Error",
    "Event",
    "EventStream",
    "FirstTokenTimeout",
    "HTTPStatusError",
    "InBandError",
    "IncrementalDetokenizer",
    "InternalServerError",
    "InvalidRequest",
    "Leaf",
    "Limits",
    "Message",
    "ModelInfo",
    "NotFoundError",
    "OutputError",
    "ParseEvent",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteDisconnected",
    "Reply",
    "ReplyBuilder",
    "ReplyHandle",
    "ReplySegment",
    "ResponseParser",
    "SSEDecoder",
    "SSEEvent",
    "StallTimeout",
    "StreamDecoder",
    "StreamError",
    "StreamStatistics",
    "StreamedReply",
    "TextDelta",
    "ThinkingDelta",
    "Timeouts",
    "Token",
    "Tokenizer",
    "TokenizerNotFoundError",
    "TokstreamError",
    "ToolCall",
    "ToolCallChannel",
    "ToolCallStarted",
    "ToolCallStatus",
    "ToolResult",
    "ToolStarted",
    "TransportError",
    "Turn",
    "UnknownTokenError",
    "UnprocessableEntityError",
    "Usage",
    "open_reply",
    "parse_output",
    "run_agent",
    "run_turn",
    "start_reply",
]
