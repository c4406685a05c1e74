"""tokstream: a token-level streaming engine for self-hosted vLLM.

Send pre-tokenized prompts to vLLM's ``/v1/completions`` and receive every
sampled token ID, exactly, as it arrives, as ``Token`` / ``Done`` / ``Error``
events on trio.

Layers (``docs/design.md``): a sans-IO core (:mod:`tokstream.core`, the
context tree :mod:`tokstream.context` and chat formats :mod:`tokstream.chat`)
that never imports trio or httpx, and a thin trio shell (``tokstream._trio``)
whose names load on first use. See ``README.md`` for a quickstart.
"""

from __future__ import annotations

import typing as _typing

from ._events import Attempt, Done, Error, Event, Token, Usage
from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConnectError,
    ConnectTimeout,
    ContextError,
    FirstTokenTimeout,
    HTTPStatusError,
    InBandError,
    InternalServerError,
    InvalidRecord,
    InvalidRequest,
    NotFoundError,
    OutputError,
    PermissionDeniedError,
    PoolTimeout,
    ProtocolError,
    RateLimitError,
    RemoteDisconnected,
    RequestAborted,
    StallTimeout,
    StreamError,
    TokenizerNotFoundError,
    TokstreamError,
    TotalTimeout,
    TransportError,
    UnknownTokenError,
    UnprocessableEntityError,
    UsageError,
)
from ._failed import FailedRequest, FailedRequestStore, ReplayComparison, SavedAttempt, SavedError
from ._statistics import ClientStatistics, PoolStatistics, StreamStatistics
from ._tokenizer import IncrementalDetokenizer, Tokenizer
from ._version import __version__ as __version__
from .context import Context, Leaf, Message, ReplyBuilder
from .core import CompletionRequest, RetryPolicy, SSEDecoder, SSEEvent, StreamDecoder
from .core.parser import (
    NEED_TOKENS,
    ParseEvent,
    Reply,
    ReplySegment,
    ResponseParser,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallOpened,
    ToolCallStatus,
    parse_output,
)

if _typing.TYPE_CHECKING:
    from ._trio import (
        Client,
        EventChannel,
        EventStream,
        Limits,
        ModelInfo,
        ReplyHandle,
        StreamedReply,
        Timeouts,
        ToolCallChannel,
        ToolResult,
        ToolStarted,
        Turn,
        open_reply,
        run_agent,
        run_turn,
        start_reply,
    )

# The trio shell (and with it trio and httpx) loads on first use of one of its
# names, so ``import tokstream.core`` works where neither is importable.
_SHELL = frozenset(
    (
        "Client",
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
    )
)


def __getattr__(name: str) -> _typing.Any:
    if name in _SHELL:
        from . import _trio

        value = getattr(_trio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tokstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SHELL)


__all__ = [
    "APIError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientClosedError",
    "ClientStatistics",
    "CompletionRequest",
    "ConnectError",
    "ConnectTimeout",
    "Context",
    "ContextError",
    "Done",
    "Error",
    "Event",
    "EventChannel",
    "EventStream",
    "FailedRequest",
    "FailedRequestStore",
    "FirstTokenTimeout",
    "HTTPStatusError",
    "InBandError",
    "IncrementalDetokenizer",
    "InternalServerError",
    "InvalidRecord",
    "InvalidRequest",
    "Leaf",
    "Limits",
    "Message",
    "ModelInfo",
    "NEED_TOKENS",
    "NotFoundError",
    "OutputError",
    "ParseEvent",
    "PermissionDeniedError",
    "PoolStatistics",
    "PoolTimeout",
    "ProtocolError",
    "RateLimitError",
    "RemoteDisconnected",
    "ReplayComparison",
    "Reply",
    "ReplyBuilder",
    "ReplyHandle",
    "ReplySegment",
    "RequestAborted",
    "ResponseParser",
    "RetryPolicy",
    "SSEDecoder",
    "SSEEvent",
    "SavedAttempt",
    "SavedError",
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
    "ToolCallOpened",
    "ToolCallStatus",
    "ToolResult",
    "ToolStarted",
    "TotalTimeout",
    "TransportError",
    "Turn",
    "UnknownTokenError",
    "UnprocessableEntityError",
    "Usage",
    "UsageError",
    "open_reply",
    "parse_output",
    "run_agent",
    "run_turn",
    "start_reply",
]
