"""tokstream: a token-level streaming engine for self-hosted vLLM.

Send pre-tokenized prompts to vLLM's ``/v1/completions`` and receive every
sampled token ID, exactly, as it arrives, as ``Token`` / ``Done`` / ``Error``
events on trio.

Layers (``docs/design.md``): a sans-IO core (:mod:`tokstream.core`, the
context tree :mod:`tokstream.context` and chat formats :mod:`tokstream.chat`)
that never imports trio or httpx, and a thin trio shell (``tokstream._trio``).
Every public name but the events, statistics and exceptions loads on first
use. See ``README.md`` for a quickstart.
"""

from __future__ import annotations

import importlib as _importlib
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
from ._statistics import ClientStatistics, PoolStatistics, StreamStatistics
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from ._failed import (
        FailedRequest,
        FailedRequestStore,
        ReplayComparison,
        SavedAttempt,
        SavedError,
    )
    from ._tokenizer import IncrementalDetokenizer, Tokenizer
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

# Every other public name loads on first use, with only the modules it needs:
# ``import tokstream`` and one idle ``Client`` stay small (no parser, context
# tree, chat formats or tokenizer), and ``import tokstream.core`` works where
# trio and httpx are not importable (the trio shell is one of these modules).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("FailedRequest", "FailedRequestStore", "ReplayComparison", "SavedAttempt", "SavedError"),
        "_failed",
    ),
    **dict.fromkeys(("IncrementalDetokenizer", "Tokenizer"), "_tokenizer"),
    **dict.fromkeys(("Client", "Limits", "ModelInfo", "Timeouts"), "_trio._client"),
    "EventChannel": "_trio._channel",
    "EventStream": "_trio._stream",
    **dict.fromkeys(
        ("ReplyHandle", "StreamedReply", "ToolCallChannel", "open_reply", "start_reply"),
        "_trio._reply",
    ),
    **dict.fromkeys(("ToolResult", "ToolStarted", "Turn", "run_agent", "run_turn"), "_trio._turns"),
    **dict.fromkeys(("Context", "Leaf", "Message", "ReplyBuilder"), "context"),
    "CompletionRequest": "core._request",
    "RetryPolicy": "core._retry",
    **dict.fromkeys(("SSEDecoder", "SSEEvent"), "core._sse"),
    "StreamDecoder": "core._decoder",
    **dict.fromkeys(
        (
            "NEED_TOKENS",
            "ParseEvent",
            "Reply",
            "ReplySegment",
            "ResponseParser",
            "TextDelta",
            "ThinkingDelta",
            "ToolCall",
            "ToolCallOpened",
            "ToolCallStatus",
            "parse_output",
        ),
        "core.parser",
    ),
}


_SUBPACKAGES = frozenset(("chat", "context", "core"))


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        if name in _SUBPACKAGES:  # ``import tokstream`` used to load them
            return _importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'tokstream' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
