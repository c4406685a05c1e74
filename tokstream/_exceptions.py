"""The exception tree: every failure tokstream reports is one of these.

A stream reports runtime failures as an :class:`~tokstream.Error` event whose
``error`` is one of these classes; methods that are not streams raise them. Local
validation raises :class:`InvalidRequest` before any I/O. httpx exceptions never
reach the caller: they are translated at the boundary.

Hierarchy::

    TokstreamError
    ├── InvalidRequest            bad input, found locally; nothing was sent (also ValueError)
    │   └── InvalidRecord         a saved failed-request file that is missing, corrupt or
    │                             not tokstream's
    ├── TokenizerNotFoundError    no tokenizer at a path (also FileNotFoundError)
    ├── UnknownTokenError         no such special token name (also KeyError)
    ├── ContextError              a context-tree operation that would break exactness
    │                             (also ValueError)
    ├── UsageError                the API was used out of order: a bug in the calling code
    │   │                         (also RuntimeError)
    │   └── ClientClosedError     the Client was closed before this use
    ├── TransportError            the request never got going; safe to retry by policy
    │   ├── ConnectError          connection refused / DNS / TLS, naming the URL
    │   ├── ConnectTimeout        no connection within the connect timeout (also TimeoutError)
    │   └── PoolTimeout           no free connection within the pool timeout, all
    │                             Limits.max_connections busy (also TimeoutError)
    ├── StreamError               the stream broke after the server accepted the request;
    │   │                         tokens may have arrived (they are on the Error event)
    │   ├── RemoteDisconnected    the connection broke mid-stream (closed, reset, or its
    │   │                         HTTP framing broke off)
    │   ├── ProtocolError         bytes that are not a valid SSE / vLLM stream (a bad
    │   │                         payload, an ID out of range, a usage mismatch, a
    │   │                         redirect, a body that is no event stream, ...)
    │   ├── RequestAborted        the server aborted the request (finish_reason "abort":
    │   │                         a shutdown, generation paused for new weights)
    │   ├── StallTimeout          no bytes for ``timeouts.stall`` seconds (also TimeoutError)
    │   ├── FirstTokenTimeout     no token within ``timeouts.first_token`` (also TimeoutError)
    │   └── TotalTimeout          the stream outlived ``timeouts.total`` (also TimeoutError)
    ├── APIError                  the server answered with an error
    │   ├── HTTPStatusError       HTTP status >= 400 before the stream started
    │   │   ├── BadRequestError           400 (prompt too long, bad sampling value, ...)
    │   │   ├── AuthenticationError       401
    │   │   ├── PermissionDeniedError     403
    │   │   ├── NotFoundError             404 (unknown model)
    │   │   ├── UnprocessableEntityError  422
    │   │   ├── RateLimitError            429
    │   │   └── InternalServerError       >= 500
    │   └── InBandError           an error event inside an HTTP 200 stream
    └── OutputError               the model emitted malformed structure (response parser;
                                  ``ToolCall.raise_for_status()``)

What the default ``RetryPolicy`` does with a stream's failure (``core/_retry.py``):

============================================  ===========================================
failure                                       retried?
============================================  ===========================================
``TransportError`` (all three), an empty      yes, with full-jitter exponential backoff
response, ``FirstTokenTimeout``, HTTP 408,
409, 500, 502, 503, 504, ``InBandError``
before any token (unless its ``code`` is a
4xx)
``RemoteDisconnected``, ``StallTimeout``,     yes before the first token; after one, only
``RequestAborted``, a body cut short          with ``resume=True``, which continues a
                                              greedy or seeded stream from the tokens
                                              received
``RateLimitError`` (429), a 503 with          yes, waiting as the server asked (up to a
``Retry-After``                               cap), with more attempts
any other HTTP status (400, 401, 403, 404,    never (an ``x-should-retry: true|false``
422, ...), any other ``ProtocolError``,       header on an HTTP error overrides its
``TotalTimeout``, a token delivered           status)
``InvalidRequest``, ``UsageError``,           never (raised before any request)
cancellation
============================================  ===========================================

``ConnectTimeout``, ``PoolTimeout``, ``StallTimeout``, ``FirstTokenTimeout`` and
``TotalTimeout`` also derive from the builtin :class:`TimeoutError`, so ``except
TimeoutError`` catches every timeout. Time spent waiting for a pool slot or
connecting is never reported as a stall: the server had not received the request
yet.

Retries happen before the first token reaches the caller; after one, a stream
is only continued when resume is on (``RetryPolicy(resume=True)``). The
exception a stream finally ends with carries every attempt (``exc.attempts``,
also on the ``Error`` event) and its message says how many there were and how
long the backoff waited. HTTP errors carry the response headers and the
``Retry-After`` the server asked for (``exc.headers``, ``exc.retry_after``).

Every message says what happened, to which URL and request ID, and what to do
about it. URLs are shown without credentials: a ``user:password@`` in the base
URL becomes an ``Authorization`` header and never appears in a message. When a
stream finally fails (after its retries) and the failed request was saved for
replay, the error's ``saved_to`` names the file (and a note says so).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._statistics import Attempt, StreamStatistics

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConnectError",
    "ConnectTimeout",
    "ContextError",
    "FirstTokenTimeout",
    "HTTPStatusError",
    "InBandError",
    "InternalServerError",
    "InvalidRecord",
    "InvalidRequest",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "PoolTimeout",
    "ProtocolError",
    "RateLimitError",
    "RemoteDisconnected",
    "RequestAborted",
    "StallTimeout",
    "StreamError",
    "TokenizerNotFoundError",
    "TokstreamError",
    "TotalTimeout",
    "TransportError",
    "UnknownTokenError",
    "UnprocessableEntityError",
    "UsageError",
    "status_error_class",
]


class TokstreamError(Exception):
    """Base class of every tokstream error.

    Attributes:
        url: The URL the request went to, if any.
        request_id: The request ID (``X-Request-Id`` sent, or the server's), if any.
        diagnostics: The stream's counters when it failed, if a stream was running.
        attempts: Every attempt of the request, the last one included, when a
            stream ended with this error (empty otherwise); see
            :class:`~tokstream.Attempt`.
        saved_to: Where the failed request was saved for replay
            (``tokstream replay FILE``), if it was.
    """

    attempts: tuple[Attempt, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        request_id: str | None = None,
        diagnostics: StreamStatistics | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.request_id = request_id
        self.diagnostics = diagnostics
        self.saved_to: Path | None = None


class InvalidRequest(TokstreamError, ValueError):
    """A request failed local validation; nothing was sent.

    Attributes:
        field: The offending field's name.
        value: The offending value (or a short description of it).
    """

    def __init__(self, field: str, value: object, problem: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field}={shown}: {problem}")
        self.field = field
        self.value = value


class InvalidRecord(InvalidRequest):
    """A saved failed-request file cannot be used: missing, corrupt, or not tokstream's.

    Raised by ``FailedRequest.load``; nothing was sent.

    Attributes:
        path: The file.
    """

    def __init__(self, path: str, problem: str) -> None:
        TokstreamError.__init__(self, f"cannot read the saved failed request {path}: {problem}")
        self.field = "record"
        self.value = path
        self.path = path


class ContextError(TokstreamError, ValueError):
    """The context tree refused an operation (also a :class:`ValueError`).

    Raised when a reply's IDs differ from the streamed IDs, when a message is
    added while a reply is open, or when saved JSON is invalid.
    """


class TokenizerNotFoundError(TokstreamError, FileNotFoundError):
    """No ``tokenizer.json`` at the given path (also a :class:`FileNotFoundError`).

    Attributes:
        path: The path that was looked for.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
        self.filename = path

    def __str__(self) -> str:
        return self.message


class UnknownTokenError(TokstreamError, KeyError):
    """A token name is not in the tokenizer's vocabulary (also a :class:`KeyError`).

    Attributes:
        name: The name that was looked up.
        suggestions: Similar token names that do exist (may be empty).
    """

    def __init__(self, message: str, *, name: str, suggestions: Sequence[str]) -> None:
        super().__init__(message)
        self.name = name
        self.suggestions = tuple(suggestions)

    def __str__(self) -> str:
        return self.message


class UsageError(TokstreamError, RuntimeError):
    """tokstream was used out of order: a bug in the calling code (also a :class:`RuntimeError`).

    For example, iterating ``client.stream(...)`` without ``async with``, or
    entering one stream twice. Nothing was sent.
    """


class ClientClosedError(UsageError):
    """The :class:`~tokstream.Client` was closed (``aclose()`` or the end of its ``async with``).

    Raised by every method that would use it afterwards; open a new ``Client``.
    """


class TransportError(TokstreamError):
    """The request never got going (no connection). Retrying is safe."""


class ConnectError(TransportError):
    """The connection could not be opened (refused, DNS, TLS)."""


class ConnectTimeout(TransportError, builtins.TimeoutError):
    """No connection within the connect timeout."""


class PoolTimeout(TransportError, builtins.TimeoutError):
    """No free connection within ``Timeouts.pool``: all ``Limits.max_connections`` were busy.

    Nothing was sent; retrying is safe.
    """


class StreamError(TokstreamError):
    """The stream broke after the server accepted the request."""


class RemoteDisconnected(StreamError):
    """The connection broke before the stream ended.

    The server (or a proxy) closed it, it was reset, or the response's HTTP
    framing broke off. The tokens that arrived are on the ``Error`` event;
    replaying the request is safe.
    """


class ProtocolError(StreamError):
    """The server sent bytes that are not a valid SSE / vLLM completion stream."""


class RequestAborted(StreamError):
    """The server aborted the request: HTTP 200, ``finish_reason: "abort"``, then ``[DONE]``.

    vLLM aborts running requests when it shuts down or pauses generation (RL
    trainers pause it to load new weights). The tokens that arrived are on the
    ``Error`` event; with ``RetryPolicy(resume=True)`` the stream is continued
    from them.
    """


class StallTimeout(StreamError, builtins.TimeoutError):
    """No bytes arrived for longer than the stall (chunk) timeout."""


class FirstTokenTimeout(StreamError, builtins.TimeoutError):
    """No token arrived within the time-to-first-token timeout."""


class TotalTimeout(StreamError, builtins.TimeoutError):
    """The stream, retries and backoff included, outlived ``Timeouts.total``.

    Never retried: ``total`` is the whole budget. The tokens that arrived are
    on the ``Error`` event.
    """


class APIError(TokstreamError):
    """The server answered with an error.

    Attributes:
        server_message: The server's own error message.
        type: The server's error type (e.g. ``"BadRequestError"``), if given.
        param: The offending parameter the server named, if any.
        code: The server's error code (vLLM repeats the HTTP status), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        server_message: str,
        type: str | None = None,
        param: str | None = None,
        code: int | str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        diagnostics: StreamStatistics | None = None,
    ) -> None:
        super().__init__(message, url=url, request_id=request_id, diagnostics=diagnostics)
        self.server_message = server_message
        self.type = type
        self.param = param
        self.code = code


class HTTPStatusError(APIError):
    """The server answered with HTTP status >= 400 before streaming.

    Attributes:
        status_code: The HTTP status.
        body_preview: The start of the response body, decoded leniently.
        headers: The response headers, by lower-case name.
        retry_after: Seconds the server asked the client to wait before trying
            again (``Retry-After`` in seconds or as an HTTP date, or
            ``retry-after-ms``), else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body_preview: str,
        server_message: str,
        type: str | None = None,
        param: str | None = None,
        code: int | str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        diagnostics: StreamStatistics | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            server_message=server_message,
            type=type,
            param=param,
            code=code,
            url=url,
            request_id=request_id,
            diagnostics=diagnostics,
        )
        self.status_code = status_code
        self.body_preview = body_preview
        self.headers: dict[str, str] = dict(headers or {})
        self.retry_after = retry_after


class BadRequestError(HTTPStatusError):
    """HTTP 400: the server rejected the request (e.g. prompt over max-model-len)."""


class AuthenticationError(HTTPStatusError):
    """HTTP 401: missing or wrong API key."""


class PermissionDeniedError(HTTPStatusError):
    """HTTP 403."""


class NotFoundError(HTTPStatusError):
    """HTTP 404: e.g. an unknown model name."""


class UnprocessableEntityError(HTTPStatusError):
    """HTTP 422."""


class RateLimitError(HTTPStatusError):
    """HTTP 429: slow down; ``retry_after`` says how long the server asked to wait."""


class InternalServerError(HTTPStatusError):
    """HTTP >= 500 (a 503 may carry ``retry_after``)."""


class InBandError(APIError):
    """The server sent an error event inside an HTTP 200 stream.

    vLLM does this for checks that run after the response started, e.g. an
    out-of-vocabulary prompt token or a bad structured-output grammar.
    """


class OutputError(TokstreamError):
    """The model emitted malformed structure (e.g. an unparsable tool call)."""


_STATUS_CLASSES: dict[int, type[HTTPStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[HTTPStatusError]:
    """Return the :class:`HTTPStatusError` subclass for an HTTP status code."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, HTTPStatusError)
