"""The trio stream transport: HTTP/1.1 over a trio socket (TLS for https), with its own pool.

:class:`TrioTransport` implements the seam of ``_transport.py`` for the
streaming POST. It writes the request head and JSON body in one send, reads
the response head with the sans-IO parser of ``core/_http11.py``, and reads
the body in network-sized reads (64 KiB) through the bulk chunked decoder of
``core/_chunked.py``: one read of a fast stream carries hundreds of vLLM's
one-event chunks, and costs one decoder call and one stream-loop step.

* **Connections** come from a :class:`~._pool.ConnectionPool` per origin. A
  connection goes back to the pool only when its body was read to its end and
  the server keeps it alive (vLLM's streams end with a chunked terminator
  right after ``[DONE]``), so sequential streams share one connection.
* **Stale connections**: if a kept-alive connection fails before any byte of
  the response arrived (the server closed it while idle), the request is sent
  again once, on a new connection.
* **Timeouts**: ``pool`` (waiting for a free connection), ``connect`` (DNS, TCP
  and TLS) and ``write`` are enforced here and raise their own errors; the
  time to the response head (``open``'s ``head_timeout``) is counted from the
  moment the request was written, so queueing in the client is never
  reported as a server stall. ``receive_some`` waits until the stream loop's
  deadline, with a cancel scope only when that deadline is finite; it is
  cancel-safe, so the nursery form can enforce its deadline with one scope
  per stream instead.
* **Encodings**: it asks for ``accept-encoding: identity`` and reports a
  compressed body instead of decoding garbage.
* **Errors** are tokstream's, chosen by what failed: ``ConnectError`` /
  ``ConnectTimeout`` / ``PoolTimeout`` / ``TransportError`` before the request
  got a response, ``ProtocolError`` for a response that is not valid HTTP/1.1,
  ``RemoteDisconnected`` when the connection breaks mid-body.

What it deliberately does not do: HTTP proxies, HTTP/2 or custom socket
setups (use ``transport="httpx"`` there), or any request but the stream's POST
(``models()`` and ``health()`` go through httpx).
"""

from __future__ import annotations

import base64
import functools
import math
import ssl
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

import trio

from .._exceptions import (
    ClientClosedError,
    ProtocolError,
    RemoteDisconnected,
    TransportError,
)
from .._statistics import PoolStatistics
from ..core._http11 import (
    BodyReader,
    ResponseHeadParser,
    body_reader,
    check_header,
    encode_head,
)
from ._config import Limits, Timeouts
from ._connection import Connection, open_connection
from ._pool import ConnectionPool
from ._transport import StreamRequest

__all__ = ["READ_SIZE", "READ_SIZE_CROWDED", "TrioResponse", "TrioTransport", "default_ssl_context"]

READ_SIZE = 64 * 1024
"""Bytes asked of the socket per read: a fast stream's read carries hundreds of events."""
READ_SIZE_CROWDED = 16 * 1024
"""The read size of a stream opened while :data:`CROWDED` others are active.

With hundreds of fast streams, 64 KiB reads cost a lot of memory (512
streams x 2,000 tokens peaked at 110 MiB, against 70 MiB with 16 KiB reads)
and save little CPU (each read still carries about 70 events)."""
CROWDED = 16

# What a connection's I/O raises when it breaks (mapped by phase, never by message).
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)

# Headers whose values framing depends on: tokstream writes them, never the caller.
_RESERVED = frozenset(("content-length", "transfer-encoding", "connection", "accept-encoding"))


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """Return the SSL context every https connection shares, created on first use.

    It verifies certificates against certifi's bundle when certifi is
    installed (as httpx does), else the system's, and offers only HTTP/1.1.
    """
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Origin:
    """Where one URL's requests go: its pool, request target and host header."""

    __slots__ = ("host", "pool", "target")

    def __init__(self, pool: ConnectionPool, target: str, host: str) -> None:
        self.pool = pool
        self.target = target
        self.host = host


class TrioResponse:
    """A :class:`~tokstream._trio._transport.StreamResponse` over one pooled connection.

    Attributes:
        status: The HTTP status.
        headers: The response headers by lower-case name.
        sent_at: When the request was written (trio time).
        cancel_safe: True: cancelling :meth:`receive_some` loses no bytes.
    """

    __slots__ = (
        "_buffer",
        "_conn",
        "_keep_alive",
        "_pool",
        "_read_size",
        "_reader",
        "_request",
        "headers",
        "sent_at",
        "status",
    )

    cancel_safe = True

    def __init__(
        self,
        conn: Connection,
        pool: ConnectionPool,
        *,
        status: int,
        headers: Mapping[str, str],
        keep_alive: bool,
        reader: BodyReader,
        buffer: bytes,
        request: StreamRequest,
        sent_at: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self.sent_at = sent_at
        self._conn: Connection | None = conn
        self._pool = pool
        self._keep_alive = keep_alive
        self._reader = reader
        self._buffer = buffer
        self._request = request
        self._read_size = READ_SIZE if pool.active <= CROWDED else READ_SIZE_CROWDED

    async def receive_some(self, deadline: float) -> bytes | None:
        """Return the next body bytes; ``b""`` at the end; ``None`` once ``deadline`` passed.

        Cancel-safe: if cancelled, nothing is lost and the next call goes on.

        Raises:
            RemoteDisconnected: The connection broke, or closed before the end.
            ProtocolError: The body's framing is invalid.
        """
        reader = self._reader
        if self._buffer:
            buffered, self._buffer = self._buffer, b""
            body = self._feed(buffered)
            if body:
                return body
        if reader.error is not None:  # the read before returned the body ahead of it
            raise _located(reader.error, self._request)
        conn = self._conn
        size = self._read_size
        while not reader.done:
            if conn is None:
                raise self._broken(trio.ClosedResourceError("the response was released"))
            try:
                data = await conn.receive(size, deadline)
            except _BROKEN as exc:
                raise self._broken(exc) from None
            if data is None:
                return None
            if not data:
                if reader.end_of_input():
                    break
                raise self._broken(None)
            body = self._feed(data)
            if body:
                return body
        return b""

    async def aclose(self) -> None:
        """Give the connection back: to the pool if the body was read to its end, else closed.

        Synchronous underneath (it never waits), so it is prompt even when
        cancelled; idempotent; never raises.
        """
        self.release_nowait()

    def release_nowait(self) -> bool:
        """Do what :meth:`aclose` does, now (it needs no I/O); return True."""
        conn, self._conn = self._conn, None
        if conn is not None:
            reader = self._reader
            reusable = self._keep_alive and reader.done and not reader.unused
            self._pool.release(conn, reusable=reusable)
        return True

    def _feed(self, data: bytes) -> bytes:
        try:
            return self._reader.feed(data)
        except ProtocolError as exc:
            raise _located(exc, self._request) from None

    def _broken(self, exc: BaseException | None) -> RemoteDisconnected:
        request = self._request
        detail = "closed by the server" if exc is None else _describe(exc)
        return RemoteDisconnected(
            f"the connection to {_where(request)} broke mid-stream ({detail}) before the end "
            "of the response body; the tokens that arrived are on the Error event, and the "
            "request can be replayed",
            url=request.url,
            request_id=request.request_id,
        )


class TrioTransport:
    """The trio-native stream transport, owning one connection pool per origin.

    Args:
        headers: Headers for every request (``accept``, ``authorization``, the
            user's own); validated here, once.
        timeouts: ``connect``, ``write`` and ``pool`` apply here.
        limits: Each origin's pool limits.
        ssl_context: The context for https (default: :func:`default_ssl_context`,
            created on the first https connection).

    Raises:
        InvalidRequest: A header is invalid, or sets framing tokstream owns.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeouts: Timeouts,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        fields = []
        for name, value in headers.items():
            field = check_header(name, value)
            if field[0] in _RESERVED:
                continue  # framing and encodings are the transport's
            fields.append(field)
        fields.append(("accept-encoding", "identity"))
        self._fields = tuple(fields)
        self._user_host = next((v for n, v in fields if n == "host"), None)
        self._timeouts = timeouts
        self._limits = limits
        self._ssl_context = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}
        self._closed = False

    async def open(self, request: StreamRequest, head_timeout: float) -> TrioResponse | None:
        """Send ``request``; return the response once its head arrived.

        Args:
            request: The POST to send.
            head_timeout: Seconds to wait for the response head, counted from when
                the request was written (``math.inf``: no limit).

        Returns:
            The response, or ``None`` if ``head_timeout`` passed first.

        Raises:
            PoolTimeout: No free connection within ``Timeouts.pool``.
            ConnectError: The connection could not be opened.
            ConnectTimeout: Not within ``Timeouts.connect``.
            TransportError: The request got no response (write failed or
                timed out, the server closed the connection).
            ProtocolError: The response head is not valid HTTP/1.1, or its
                body is in an encoding tokstream does not read.
            ClientClosedError: The transport was closed.
        """
        if self._closed:
            raise _closed_error(request.url)
        origin = self._origins.get(request.url) or self._origin(request.url)
        for name, value in request.headers:
            check_header(name, value)
        head = encode_head(
            "POST",
            origin.target,
            [
                ("host", origin.host),
                *self._fields,
                *request.headers,
                ("content-length", str(len(request.body))),
            ],
        )
        payload = head + request.body
        pool = origin.pool
        fresh = False
        while True:
            conn = await pool.acquire(fresh=fresh, url=request.url, request_id=request.request_id)
            retry = conn.requests > 1 and not fresh  # kept alive: may have gone stale
            try:
                result = await self._exchange(conn, pool, payload, request, head_timeout, retry)
            except _Stale:
                pool.release(conn, reusable=False)
                pool.count_stale()
                fresh = True
                continue
            except BaseException:
                pool.release(conn, reusable=False)
                raise
            if result is None:
                pool.release(conn, reusable=False)
            return result

    async def aclose(self) -> None:
        """Close every pool (idle connections at once, active ones as they finish); idempotent."""
        self._closed = True
        for pool in self._pools.values():
            pool.close()

    def statistics(self) -> PoolStatistics:
        """Return the pool counters, summed over origins."""
        stats = [pool.statistics() for pool in self._pools.values()]
        if len(stats) == 1:
            return stats[0]
        total = [sum(values) for values in zip(*(_astuple(s) for s in stats), strict=True)]
        return PoolStatistics(*total) if stats else PoolStatistics()

    # -- internals ----------------------------------------------------------------

    async def _exchange(
        self,
        conn: Connection,
        pool: ConnectionPool,
        payload: bytes,
        request: StreamRequest,
        head_timeout: float,
        retry: bool,
    ) -> TrioResponse | None:
        write = self._timeouts.write
        try:
            with trio.move_on_after(write if write is not None else math.inf) as scope:
                await conn.send_all(payload)
        except _BROKEN as exc:
            if retry:
                raise _Stale from None
            raise _no_response(request, _describe(exc)) from None
        if scope.cancelled_caught:
            raise _no_response(request, f"timed out writing the request (write={write}s)")
        sent_at = trio.current_time()
        deadline = sent_at + head_timeout
        parser = ResponseHeadParser()
        got_bytes = False
        while True:
            try:
                data = await conn.receive(READ_SIZE, deadline)
                if data is None:
                    return None
            except _BROKEN as exc:
                if retry and not got_bytes:
                    raise _Stale from None
                raise _no_response(request, _describe(exc)) from None
            if not data:
                if retry and not got_bytes:
                    raise _Stale
                raise _no_response(request, "the server closed the connection without a response")
            got_bytes = True
            try:
                parsed = parser.feed(data)
                if parsed is None:
                    continue
                head, rest = parsed
                reader = body_reader(head)
            except ProtocolError as exc:
                raise _located(exc, request) from None
            return TrioResponse(
                conn,
                pool,
                status=head.status,
                headers=head.headers(),
                keep_alive=head.keep_alive,
                reader=reader,
                buffer=rest,
                request=request,
                sent_at=sent_at,
            )

    def _origin(self, url: str) -> _Origin:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = ConnectionPool(
                self._opener(scheme, host, port),
                limits=self._limits,
                connect_timeout=self._timeouts.connect,
                pool_timeout=self._timeouts.pool,
                where=f"{scheme}://{_host_port(host, port, default_port)}",
            )
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += "?" + parts.query
        if parts.username is not None and not any(n == "authorization" for n, _ in self._fields):
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(userinfo.encode()).decode("ascii")
            self._fields = (*self._fields, ("authorization", f"Basic {token}"))
        origin = _Origin(pool, target, self._user_host or _host_port(host, port, default_port))
        self._origins[url] = origin
        return origin

    def _opener(self, scheme: str, host: str, port: int) -> _Opener:
        if scheme == "https":
            return _Opener(host, port, self._ssl_context or default_ssl_context())
        return _Opener(host, port, None)


class _Opener:
    """Opens one connection to an origin: TCP, then TLS for https."""

    __slots__ = ("context", "host", "port")

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.context = context

    async def __call__(self) -> Connection:
        return await open_connection(self.host, self.port, self.context)


class _Stale(Exception):
    """A kept-alive connection failed before any response byte: send the request again."""


def _host_port(host: str, port: int, default_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


def _where(request: StreamRequest) -> str:
    return f"{request.url} (request_id={request.request_id})" if request.request_id else request.url


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _no_response(request: StreamRequest, detail: str) -> TransportError:
    return TransportError(
        f"the request to {_where(request)} failed before a response ({detail}); nothing "
        "was streamed, so retrying is safe",
        url=request.url,
        request_id=request.request_id,
    )


def _located(exc: ProtocolError, request: StreamRequest) -> ProtocolError:
    return ProtocolError(
        f"{exc.message} (from {_where(request)})", url=request.url, request_id=request.request_id
    )


def _closed_error(url: str) -> ClientClosedError:
    return ClientClosedError(
        f"cannot send a request to {url}: its tokstream.Client is closed; "
        "use the client inside its `async with` block, or open a new Client"
    )


def _astuple(stats: PoolStatistics) -> tuple[int, ...]:
    return tuple(getattr(stats, name) for name in stats.__dataclass_fields__)
