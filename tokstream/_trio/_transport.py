"""The HTTP body source seam, and translation of httpx exceptions.

The stream loop reads the response body through :class:`ByteSource`, one
small protocol: ``receive_some()`` returns the next bytes (``b""`` at the end)
and ``aclose()`` releases the connection. Today httpx provides it; a faster
transport (a raw trio socket with a bulk chunked decoder) can slot in later
without touching the decoders or the stream loop.

``map_httpx_error`` is the one place httpx exceptions become tokstream ones,
so they never leak to users (as httpcore's ``map_exceptions`` does).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Protocol

import httpx
import trio

from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    RemoteDisconnected,
    TokstreamError,
    TransportError,
)

__all__ = ["ByteSource", "HttpxByteSource", "map_httpx_error"]

# httpx quotes header values in some errors; a key must never reach a message.
_BEARER = re.compile(r"Bearer\s+[^\s'\"]+", re.IGNORECASE)


class ByteSource(Protocol):
    """Where the stream loop gets body bytes from."""

    async def receive_some(self) -> bytes:
        """Return the next body bytes as they arrive; ``b""`` at the end."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closing it if the body was not fully read)."""
        ...


class HttpxByteSource:
    """A :class:`ByteSource` over an httpx streaming response (raw body bytes)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._iter: AsyncIterator[bytes] = response.aiter_raw()

    async def receive_some(self) -> bytes:
        """Return the next network read of the body; ``b""`` at the end."""
        try:
            return await self._iter.__anext__()
        except StopAsyncIteration:
            return b""

    async def aclose(self) -> None:
        """Close the response at once, shielded from cancellation.

        Closing an unfinished response drops the connection, which is how vLLM
        learns to abort the request; it must happen even while cancelled.
        """
        with trio.CancelScope(shield=True):
            await self.response.aclose()


def map_httpx_error(
    exc: httpx.HTTPError | httpx.InvalidURL, *, url: str, request_id: str | None, started: bool
) -> TokstreamError:
    """Translate an httpx exception into the tokstream tree.

    Args:
        exc: The httpx exception.
        url: The request URL, named in the message.
        request_id: The request ID, named in the message.
        started: Whether the response had started (headers received).
    """
    where = f"{url} (request_id={request_id})" if request_id else url
    detail = _BEARER.sub("Bearer <redacted>", str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectTimeout(
            f"timed out connecting to {where}: {detail}; is the server up and reachable? "
            "raise Timeouts.connect if it is slow to accept",
            url=url,
            request_id=request_id,
        )
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(
            f"cannot connect to {where}: {detail}; is the vLLM server running there? "
            "check base_url",
            url=url,
            request_id=request_id,
        )
    if started:
        if isinstance(exc, httpx.RemoteProtocolError) and "incomplete" not in detail.lower():
            return ProtocolError(
                f"invalid HTTP from {where} mid-stream: {detail}", url=url, request_id=request_id
            )
        return RemoteDisconnected(
            f"the connection to {where} dropped mid-stream: {detail}; the request can be replayed",
            url=url,
            request_id=request_id,
        )
    return TransportError(
        f"the request to {where} failed before a response: {detail}",
        url=url,
        request_id=request_id,
    )
