"""The transport seam: how a stream sends its request and reads the response.

The stream loop (``_stream.py``) sees only these two small protocols. A
:class:`StreamTransport` opens one request and returns a
:class:`StreamResponse`: the status, the headers and the body as a byte
source. Everything that touches the network (connecting, the pool, writing,
reading, closing) lives behind them, and so does every exception translation:
a transport raises only tokstream errors, chosen by the type of what failed.
Two implementations slot in: the trio-native HTTP/1.1 transport with its own
pool (``_http.py``, the default) and httpx (``_httpx.py``); the stream loop
imports neither.

Contract, for every implementation:

* ``await transport.open(request, head_timeout)`` sends the request and waits
  for the response head, at most ``head_timeout`` seconds (``math.inf``: none)
  counted from the moment the request was written: waiting for a pool slot
  and connecting are bounded by the transport's own timeouts (``pool``,
  ``connect``), never charged to the stream's. It returns the response, or
  ``None`` if ``head_timeout`` passed first. It raises
  :class:`~tokstream.TransportError` (:class:`~tokstream.ConnectError`,
  :class:`~tokstream.ConnectTimeout`, :class:`~tokstream.PoolTimeout`) when the
  request got no response, :class:`~tokstream.ProtocolError` for a response it
  cannot read, and :class:`~tokstream.ClientClosedError` once the transport is
  closed. If cancelled, it releases what it holds and lets ``trio.Cancelled``
  through.
* ``response.status`` and ``response.headers`` (lower-case names) are the
  response head; ``response.sent_at`` is when the request was written (trio
  time), from which the stream counts ``first_token``.
* ``await response.receive_some(deadline)`` returns the next body bytes as
  they arrive (any amount, never ``b""`` before the end), ``b""`` at the end
  of the body, or ``None`` if ``deadline`` passed with no bytes. It raises
  :class:`~tokstream.StreamError` (:class:`~tokstream.RemoteDisconnected` or
  :class:`~tokstream.ProtocolError`). With ``deadline=math.inf`` it waits
  without a cancel scope of its own. If ``response.cancel_safe`` is true,
  cancelling it loses no bytes and a later call goes on where it stopped; the
  nursery form then enforces its deadlines with one cancel scope per stream
  whose deadline it moves lazily, instead of one per read.
* ``await response.aclose()`` releases the connection: back to the pool when
  the body was read to its end (the stream loop reads the few bytes after
  ``[DONE]`` for this), else closed, which is how vLLM learns to abort the
  request. Idempotent; never raises a tokstream error; if cancelled it still
  closes (forcefully), as trio's ``aclose`` contract asks. Callers shield it
  and bound it in time (:func:`close_scope`). ``response.release_nowait()``
  does the same at once and returns True when that needs no I/O (the trio
  transport: keeping or closing a socket is synchronous); it returns False,
  doing nothing, when ``aclose()`` must be awaited (httpx). Cancelling 10,000
  streams then costs no cancel scope per stream to close them.
* ``await transport.aclose()`` closes the pool; later ``open`` calls raise
  :class:`~tokstream.ClientClosedError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import trio

from ._config import CLOSE_TIMEOUT

__all__ = ["StreamRequest", "StreamResponse", "StreamTransport", "close_scope"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One streaming completion request, as the transport sends it (a POST).

    Attributes:
        url: The full URL.
        body: The JSON body, already encoded.
        headers: Headers for this request only; the transport adds its own
            (``accept``, ``authorization``, the user's extra headers).
        request_id: The request ID, to name in error messages.
    """

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    request_id: str | None = None


class StreamResponse(Protocol):
    """An open response: its head, and its body as a byte source (see the module docs)."""

    @property
    def status(self) -> int:
        """The HTTP status code."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers, looked up by lower-case name."""
        ...

    @property
    def sent_at(self) -> float:
        """When the request was written (trio time)."""
        ...

    @property
    def cancel_safe(self) -> bool:
        """Whether cancelling :meth:`receive_some` loses no bytes."""
        ...

    async def receive_some(self, deadline: float) -> bytes | None:
        """Return the next body bytes; ``b""`` at the end; ``None`` once ``deadline`` passed.

        Raises:
            StreamError: The connection broke or the body's framing is invalid.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection: reuse it if the body was read to its end, else close it."""
        ...

    def release_nowait(self) -> bool:
        """Release the connection now if that needs no I/O; return whether it did."""
        ...


class StreamTransport(Protocol):
    """Opens streaming requests (see the module docs for the whole contract)."""

    async def open(self, request: StreamRequest, head_timeout: float) -> StreamResponse | None:
        """Send ``request``; return the response head, ``None`` ``head_timeout`` s after sending.

        Raises:
            TransportError: No response (refused, DNS, TLS, connect or pool
                timeout, broken write...).
            ProtocolError: A response that cannot be read.
            ClientClosedError: The transport was closed.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection pool; later ``open`` calls raise ``ClientClosedError``."""
        ...


def close_scope() -> trio.CancelScope:
    """Return the scope to close a connection or pool in: shielded, and bounded in time.

    Shielded, so that cancellation still closes the connection; bounded by
    :data:`~tokstream._trio._config.CLOSE_TIMEOUT`, so that a hung peer cannot
    hold a cancellation forever.
    """
    return trio.move_on_after(CLOSE_TIMEOUT, shield=True)
