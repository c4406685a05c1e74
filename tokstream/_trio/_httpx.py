"""The httpx transport, and the one place httpx exceptions become tokstream ones.

:class:`HttpxTransport` implements the stream seam of ``_transport.py`` over
one ``httpx.AsyncClient`` (and its connection pool), and also serves the
client's short GETs (``models()``, ``health()``). It reads the raw body
(``aiter_raw``), so each network read reaches the SSE decoder as it arrived.

:func:`map_httpx_error` translates by exception **type** only, as httpcore's
``map_exceptions`` does; the message is carried along (with any bearer token
redacted), never inspected. Two tables, one per phase:

=============================  ===============================  =====================
httpx exception                before the response head         after it (mid-body)
=============================  ===============================  =====================
``PoolTimeout``                ``PoolTimeout``                  ``RemoteDisconnected``
``ConnectTimeout``             ``ConnectTimeout``               ``RemoteDisconnected``
``ConnectError``               ``ConnectError``                 ``RemoteDisconnected``
``DecodingError``              ``TransportError``               ``ProtocolError``
any other ``HTTPError``,       ``TransportError``               ``RemoteDisconnected``
``InvalidURL``
=============================  ===============================  =====================

httpx raises one type (``RemoteProtocolError``) both for a body cut short and
for broken chunk framing, so mid-body both are ``RemoteDisconnected``: either
way the connection is gone and the request can be replayed. httpx's
``StreamError`` family (``StreamClosed``, ...) signals a bug in the caller, not
an I/O failure, and is not translated.

The time to the response head is counted from when httpcore reports the
request body written (its ``trace`` extension), so waiting for a pool slot
(``Timeouts.pool``, httpx's pool timeout) or connecting is never charged to it.
Reads of the body are not cancel-safe (httpx drops a response whose read was
cancelled), so the stream loop gives each read its own deadline here.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Mapping

import httpx
import trio

from .._exceptions import (
    ClientClosedError,
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    RemoteDisconnected,
    TokstreamError,
    TransportError,
)
from ._config import Limits, Timeouts
from ._transport import StreamRequest

__all__ = ["HttpxResponse", "HttpxTransport", "map_httpx_error"]

# What an httpx call can raise for I/O reasons: everything map_httpx_error maps.
HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL)

_BEFORE_RESPONSE: tuple[tuple[type[Exception], type[TokstreamError]], ...] = (
    (httpx.PoolTimeout, PoolTimeout),
    (httpx.ConnectTimeout, ConnectTimeout),
    (httpx.ConnectError, ConnectError),
    (httpx.HTTPError, TransportError),
    (httpx.InvalidURL, TransportError),
)
_MID_BODY: tuple[tuple[type[Exception], type[TokstreamError]], ...] = (
    (httpx.DecodingError, ProtocolError),
    (httpx.HTTPError, RemoteDisconnected),
    (httpx.InvalidURL, RemoteDisconnected),
)
_MESSAGES: dict[type[TokstreamError], str] = {
    PoolTimeout: (
        "no free connection to {where} within the pool timeout ({detail}): all "
        "Limits.max_connections were busy; nothing was sent, so retrying is safe; "
        "raise Limits.max_connections or Timeouts.pool"
    ),
    ConnectTimeout: (
        "timed out connecting to {where} ({detail}); is the server up and reachable? "
        "raise Timeouts.connect if it is slow to accept"
    ),
    ConnectError: (
        "cannot connect to {where} ({detail}); is the vLLM server running there? check base_url"
    ),
    TransportError: (
        "the request to {where} failed before a response ({detail}); nothing was streamed, "
        "so retrying is safe"
    ),
    ProtocolError: (
        "the HTTP body from {where} could not be decoded mid-stream ({detail}); "
        "a proxy in front of the server may be re-encoding it"
    ),
    RemoteDisconnected: (
        "the connection to {where} broke mid-stream ({detail}); the tokens that arrived "
        "are on the Error event, and the request can be replayed"
    ),
}

# httpx quotes header values in some errors; a key must never reach a message.
_BEARER = re.compile(r"Bearer\s+[^\s'\"]+", re.IGNORECASE)


def map_httpx_error(
    exc: Exception, *, url: str, request_id: str | None, started: bool
) -> TokstreamError:
    """Translate an httpx exception into the tokstream tree, by its type.

    Args:
        exc: An instance of one of :data:`HTTPX_ERRORS`.
        url: The request URL, named in the message.
        request_id: The request ID, named in the message.
        started: Whether the response head had arrived (the body was being read).

    Returns:
        The tokstream error to raise or report (see the module's table).
    """
    table = _MID_BODY if started else _BEFORE_RESPONSE
    cls = next(target for source, target in table if isinstance(exc, source))
    where = f"{url} (request_id={request_id})" if request_id else url
    text = _BEARER.sub("Bearer <redacted>", str(exc))
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return cls(_MESSAGES[cls].format(where=where, detail=detail), url=url, request_id=request_id)


class HttpxResponse:
    """A :class:`~tokstream._trio._transport.StreamResponse` over an httpx streaming response."""

    __slots__ = ("_next", "_request", "_response", "headers", "sent_at", "status")

    cancel_safe = False

    def __init__(self, response: httpx.Response, request: StreamRequest, sent_at: float) -> None:
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.sent_at = sent_at
        self._response = response
        self._request = request
        raw: AsyncIterator[bytes] = response.aiter_raw()
        self._next = raw.__anext__

    async def receive_some(self, deadline: float) -> bytes | None:
        """Return the next network read of the body; ``b""`` at the end; ``None`` at ``deadline``.

        Raises:
            RemoteDisconnected: The connection broke (see the module's table).
            ProtocolError: The body could not be decoded.
        """
        try:
            if deadline == math.inf:
                return await self._next()
            with trio.move_on_at(deadline):
                return await self._next()
            return None
        except StopAsyncIteration:
            return b""
        except HTTPX_ERRORS as exc:
            request = self._request
            raise map_httpx_error(
                exc, url=request.url, request_id=request.request_id, started=True
            ) from None

    async def aclose(self) -> None:
        """Release the connection: httpx pools it if the body was read to its end, else drops it."""
        await self._response.aclose()

    def release_nowait(self) -> bool:
        """Return False: httpx closes a response with I/O (``aclose``)."""
        return False


class HttpxTransport:
    """The httpx stream transport (and the client's GETs), owning one ``httpx.AsyncClient``.

    Args:
        headers: Headers for every request (``accept``, ``authorization``, the
            user's own).
        timeouts: ``connect``, ``write`` and ``pool`` apply to every request;
            ``stall`` is the read timeout of GETs (streams enforce theirs by
            deadline).
        limits: The connection pool's limits.
        transport: An httpx transport to use instead of the network (tests, or
            a custom httpx setup); ``None`` for httpx's own.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        limits: Limits,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        t = timeouts
        self._get_timeout = httpx.Timeout(
            connect=t.connect, read=t.stall or 60.0, write=t.write, pool=t.pool
        )
        self._http = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.write, pool=t.pool),
            limits=httpx.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
            ),
            transport=transport,
            trust_env=False,
        )
        self._closed = False

    async def open(self, request: StreamRequest, head_timeout: float) -> HttpxResponse | None:
        """Send ``request``; return the response head, ``None`` ``head_timeout`` s after sending.

        Raises:
            TransportError: No response (see the module's table).
            ClientClosedError: The transport was closed.
        """
        self._check_open(request.url)
        sent_at = math.nan
        with trio.CancelScope() as scope:

            async def trace(name: str, info: Mapping[str, object]) -> None:
                nonlocal sent_at
                if name.endswith(".send_request_body.complete"):
                    sent_at = trio.current_time()
                    scope.deadline = sent_at + head_timeout

            try:
                http_request = self._http.build_request(
                    "POST",
                    request.url,
                    content=request.body,
                    headers=request.headers,
                    extensions={"trace": trace},
                )
                response = await self._http.send(http_request, stream=True)
            except HTTPX_ERRORS as exc:
                raise map_httpx_error(
                    exc, url=request.url, request_id=request.request_id, started=False
                ) from None
            if math.isnan(sent_at):  # a transport without httpcore's trace events
                sent_at = trio.current_time()
            return HttpxResponse(response, request, sent_at)
        return None

    async def get(self, url: str) -> tuple[int, str | None, bytes]:
        """GET ``url`` with a read timeout; return the status, ``x-request-id`` and body.

        Raises:
            TransportError: No complete response (see the module's table).
            ClientClosedError: The transport was closed.
        """
        self._check_open(url)
        try:
            response = await self._http.get(url, timeout=self._get_timeout)
        except HTTPX_ERRORS as exc:
            raise map_httpx_error(exc, url=url, request_id=None, started=False) from None
        return response.status_code, response.headers.get("x-request-id"), response.content

    async def aclose(self) -> None:
        """Close the connection pool; idempotent. Callers shield and bound it."""
        self._closed = True
        await self._http.aclose()

    def _check_open(self, url: str) -> None:
        if self._closed:
            raise ClientClosedError(
                f"cannot send a request to {url}: its tokstream.Client is closed; "
                "use the client inside its `async with` block, or open a new Client"
            )
