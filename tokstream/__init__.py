"""tokstream: a token-level streaming engine for self-hosted vLLM.

Send pre-tokenized prompts to vLLM's ``/v1/completions`` and receive every
sampled token ID, exactly, as it arrives, as ``Token`` / ``Done`` / ``Error``
events on trio.

The decoders are sans-IO (no trio, no httpx); the client is a thin trio shell
over one ``httpx.AsyncClient``. See ``README.md`` for a quickstart.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConnectError",
    "ConnectTimeout",
    "Done",
    "Error",
    "Event",
    "FirstTokenTimeout",
    "HTTPStatusError",
    "InBandError",
    "InternalServerError",
    "InvalidRequest",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteDisconnected",
    "StallTimeout",
    "StreamError",
    "StreamStatistics",
    "Token",
    "TokstreamError",
    "TransportError",
    "UnprocessableEntityError",
    "Usage",
]
