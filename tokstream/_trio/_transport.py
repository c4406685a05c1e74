"""The transport seam: how a stream sends its request and reads the response.

The stream loop (``_stream.py``) sees only these two small protocols. A
:class:`StreamTransport` opens one request and returns a
:class:`StreamResponse`: the status, the headers and the body as a byte
source. Everything that touches the network (connecting, the pool, writing,
reading, closing) lives behind them, and so does every exception translation:
a transport raises only tokstream errors, chosen by the type of what failed.
httpx is the first implementation (``_httpx.py``); a trio-native HTTP/1.1
transport with its own pool can slot in beside it, and the stream loop does
not change.

Contract, for every implementation:

* ``await transport.open(request, deadline)`` sends the request and waits for
  the response head. It returns the response, or ``None`` if ``deadline`` (in
  trio time) passed first. It raises :class:`~tokstream.TransportError` (or
  :class:`~tokstream.ConnectError` / :class:`~tokstream.ConnectTimeout`) when
  the request got no response, and :class:`~tokstream.ClientClosedError` once
  the transport is closed. If cancelled, it releases what it holds and lets
  ``trio.Cancelled`` through.
* ``response.status`` and ``response.headers`` (lower-case names) are the
  response head.
* ``await response.receive_some(deadline)`` returns the next body bytes as
  they arrive (any amount, never ``b""`` before the end), ``b""`` at the end
  of the body, or ``None`` if ``deadline`` passed with no bytes. It raises
  :class:`~tokstream.StreamError` (:class:`~tokstream.RemoteDisconnected` or
  :class:`~tokstream.ProtocolError`). The deadline is the stream loop's policy
  (stall, first token); how it is enforced is the transport's (a cancel scope
  per read, or one per stream whose deadline it moves lazily).
* ``await response.aclose()`` releases the connection: back to the pool when
  the body was read to its end (or the transport can finish it without
  waiting), else closed, which is how vLLM learns to abort the request.
  Idempotent; never raises a tokstream error; if cancelled it still closes
  (forcefully), as trio's ``aclose`` contract asks. Callers shield it and bound
  it in time (:func:`close_scope`).
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

    async def receive_some(self, deadline: float) -> bytes | None:
        """Return the next body bytes; ``b""`` at the end; ``None`` once ``deadline`` passed.

        Raises:
            StreamError: The connection broke or the body's framing is invalid.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection: reuse it if the body was read to its end, else close it."""
        ...


class StreamTransport(Protocol):
    """Opens streaming requests (see the module docs for the whole contract)."""

    async def open(self, request: StreamRequest, deadline: float) -> StreamResponse | None:
        """Send ``request``; return the response once its head arrived, ``None`` at ``deadline``.

        Raises:
            TransportError: No response (refused, DNS, TLS, connect timeout,
                broken write...).
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
