"""One token stream: the pull-based loop between a transport and the decoder.

:class:`EventStream` is what ``Client.stream()`` returns. Each network read is
pushed into the sans-IO :class:`~tokstream.core.StreamDecoder` and its events
are handed out from a buffer, so there is no per-token await or channel
operation. ``pump`` moves a stream's events onto a memory channel for the
nursery-explicit form, with ``send_nowait`` while the buffer has room.

A stream gets everything it needs explicitly: its :class:`StreamConfig`, a
:class:`~tokstream._trio._transport.StreamTransport` (it never imports httpx,
and never its client) and the client's :class:`StreamCounters`.

Runtime failures become the terminal ``Error`` event; cancellation closes the
response at once (shielded, bounded in time) and propagates. Misuse (iterating
without ``async with``, entering twice, a closed client) raises.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Final

import trio

from .._events import Done, Error, Event, StreamStatistics
from .._exceptions import (
    FirstTokenTimeout,
    StallTimeout,
    StreamError,
    TokstreamError,
    TransportError,
    UsageError,
)
from .._statistics import ClientStatistics
from ..core._decoder import StreamDecoder, with_timing
from ..core._http_errors import ERROR_BODY_LIMIT, http_status_error
from ..core._request import CompletionRequest
from ._config import StreamConfig
from ._transport import StreamRequest, StreamResponse, StreamTransport, close_scope
from ._util import NoPublicConstructor

__all__ = ["EventStream", "StreamCounters", "pump"]

_NOT_ENTERED: Final = (
    "this stream to {url} was never opened: write `async with client.stream(...) as events:` "
    "and then `async for event in events:` (entering it sends the request; a bare `async for` "
    "over client.stream(...) would send nothing)"
)


class StreamCounters:
    """A client's stream counters; its streams update them as they start and end."""

    __slots__ = ("abandoned", "failed", "finished", "open", "tokens")

    def __init__(self) -> None:
        self.open = 0
        self.finished = 0
        self.failed = 0
        self.abandoned = 0
        self.tokens = 0

    def started(self) -> None:
        """Count a stream that is being opened."""
        self.open += 1

    def ended(self, ok: bool | None, tokens: int) -> None:
        """Count a stream's end: ``Done`` (True), ``Error`` (False) or abandoned (None)."""
        self.open -= 1
        self.tokens += tokens
        if ok is None:
            self.abandoned += 1
        elif ok:
            self.finished += 1
        else:
            self.failed += 1

    def snapshot(self) -> ClientStatistics:
        """Return a frozen copy of the counters."""
        return ClientStatistics(self.open, self.finished, self.failed, self.abandoned, self.tokens)


class EventStream(trio.abc.AsyncResource, metaclass=NoPublicConstructor):
    """One token stream: an async context manager and an async iterator.

    ``async with client.stream(...) as events: async for ev in events:`` yields
    ``Token`` events and then exactly one ``Done`` or ``Error``; iteration ends
    after it. Entering sends the request; failures to connect or HTTP errors
    become that ``Error`` event rather than exceptions. Leaving the block (or
    cancellation) closes the response at once.

    Only ``Client.stream()`` builds one (there is no public constructor).

    Attributes:
        request: The request as sent.
        url: The URL it goes to.
        request_id: The request ID sent, or else the server's (once known).
    """

    def __init__(
        self,
        request: CompletionRequest,
        *,
        config: StreamConfig,
        transport: StreamTransport,
        counters: StreamCounters,
    ) -> None:
        self.request = request
        self.url = config.url
        self.request_id = request.request_id
        self._model = config.model
        self._timeouts = config.timeouts
        self._transport = transport
        self._counters = counters
        self._decoder = StreamDecoder(
            max_event_size=config.max_event_size, url=self.url, request_id=request.request_id
        )
        self._pending: deque[Event] = deque()
        self._response: StreamResponse | None = None
        self._entered = False
        self._ended = False  # the terminal event was produced
        self._closed = False
        self._t0 = 0.0
        self._t_end: float | None = None
        self._ttft: float | None = None

    def __repr__(self) -> str:
        return f"<tokstream.EventStream {self.url} request_id={self.request_id!r}>"

    # -- context manager ----------------------------------------------------

    async def __aenter__(self) -> EventStream:
        """Send the request and wait for the response head.

        Returns:
            This stream. A failure to get a response, an HTTP error status or
            a timeout becomes its one ``Error`` event, not an exception.

        Raises:
            UsageError: The stream was entered before.
            ClientClosedError: Its client was closed.
        """
        if self._entered:
            raise UsageError(
                f"this stream to {self.url} was entered before; a stream is entered once "
                "(call client.stream(...) again to send another request)"
            )
        self._entered = True
        self._counters.started()
        try:
            await self._open()
        except BaseException:
            # Cancelled while connecting or reading an error body: release the
            # connection and the open-stream count before trio.Cancelled goes on.
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close the response now; idempotent. Unread events are dropped.

        Shielded from cancellation and bounded in time, so that leaving the
        block or a cancellation always returns promptly and always drops an
        unfinished response (which makes vLLM abort the request).
        """
        if self._closed:
            return
        self._closed = True
        await self._release()
        if not self._ended:
            self._counters.ended(None, self._decoder.tokens)

    # -- iteration ----------------------------------------------------------

    def __aiter__(self) -> EventStream:
        if not self._entered:
            raise UsageError(_NOT_ENTERED.format(url=self.url))
        return self

    async def __anext__(self) -> Event:
        # Buffered events (and bytes the transport already holds) need no I/O,
        # but a cancelled scope must still stop the loop at once. This raises
        # only if cancelled and otherwise does not yield, so it costs no
        # scheduling.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._pending:
            if self._ended or self._closed:
                raise StopAsyncIteration
            if not self._entered:
                raise UsageError(_NOT_ENTERED.format(url=self.url))
            await self._fill()
        return self._pending.popleft()

    def statistics(self) -> StreamStatistics:
        """Return a frozen snapshot of this stream's counters."""
        end = self._t_end if self._t_end is not None else trio.current_time()
        return dataclasses.replace(
            self._decoder.statistics(),
            time_to_first_token=self._ttft,
            elapsed=end - self._t0 if self._entered else 0.0,
        )

    # -- internals ----------------------------------------------------------

    def _deadline(self) -> float:
        timeouts = self._timeouts
        deadline = math.inf
        if timeouts.stall is not None:
            deadline = trio.current_time() + timeouts.stall
        if timeouts.first_token is not None and self._decoder.tokens == 0:
            deadline = min(deadline, self._t0 + timeouts.first_token)
        return deadline

    async def _open(self) -> None:
        self._t0 = trio.current_time()
        headers = [("content-type", "application/json")]
        if self.request_id:
            headers.append(("x-request-id", self.request_id))
        request = StreamRequest(
            self.url, self.request.encode(self._model), tuple(headers), self.request_id
        )
        try:
            response = await self._transport.open(request, self._deadline())
        except TransportError as exc:
            self._terminate(exc)
            return
        if response is None:
            self._timed_out(scope_reason="waiting for response headers")
            return
        self._response = response
        server_id = response.headers.get("x-request-id")
        if server_id and not self.request_id:
            self.request_id = server_id
            self._decoder.request_id = server_id
        if response.status >= 400:
            await self._http_error(response)

    async def _http_error(self, response: StreamResponse) -> None:
        body = bytearray()
        deadline = self._deadline()
        try:
            while len(body) < ERROR_BODY_LIMIT:
                data = await response.receive_some(deadline)
                if not data:  # the end (b"") or the deadline (None)
                    break
                body += data
        except StreamError:
            pass  # report the status with whatever body arrived
        self._terminate(
            http_status_error(
                response.status,
                bytes(body),
                url=self.url,
                request_id=response.headers.get("x-request-id") or self.request_id,
            )
        )
        await self._release()

    async def _fill(self) -> None:
        response = self._response
        assert response is not None  # entered, and not ended: the head arrived
        decoder = self._decoder
        while not self._pending and not self._ended:
            try:
                data = await response.receive_some(self._deadline())
            except StreamError as exc:
                self._terminate(exc)
                break
            if data is None:
                self._timed_out(scope_reason="waiting for the next bytes")
                break
            events = decoder.feed(data) if data else decoder.finish()
            if self._ttft is None and decoder.tokens:
                self._ttft = trio.current_time() - self._t0
            if decoder.finished:
                self._finish_events(events)
            else:
                self._pending.extend(events)
        if self._ended and not self._closed:
            await self._release()

    async def _release(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            with close_scope():
                await response.aclose()

    def _timed_out(self, scope_reason: str) -> None:
        timeouts = self._timeouts
        now = trio.current_time()
        waited = now - self._t0
        stats = self.statistics().describe()
        exc: TokstreamError
        if (
            timeouts.first_token is not None
            and self._decoder.tokens == 0
            and now >= self._t0 + timeouts.first_token
        ):
            exc = FirstTokenTimeout(
                f"no token from {self.url} within first_token={timeouts.first_token}s "
                f"({scope_reason}; request_id={self.request_id}); diagnostics: {stats}",
            )
        else:
            exc = StallTimeout(
                f"no bytes from {self.url} for stall={timeouts.stall}s after {waited:.3f}s "
                f"({scope_reason}; request_id={self.request_id}); the server may be overloaded "
                f"or the request queued; raise Timeouts.stall to wait longer; diagnostics: {stats}",
            )
        self._terminate(exc)

    def _terminate(self, exc: TokstreamError) -> None:
        self._finish_events([self._decoder.fail(exc)])

    def _finish_events(self, events: list[Event]) -> None:
        self._t_end = trio.current_time()
        terminal = events[-1]
        assert isinstance(terminal, (Done, Error))
        events[-1] = with_timing(terminal, self._t_end - self._t0, self._ttft)
        self._pending.extend(events)
        self._ended = True
        self._counters.ended(isinstance(terminal, Done), self._decoder.tokens)


async def pump(stream: EventStream, send: trio.MemorySendChannel[Event]) -> None:
    """Move ``stream``'s events onto ``send``, then close both (``Client.start_stream``)."""
    async with send, stream:
        async for event in stream:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                try:
                    await send.send(event)
                except trio.BrokenResourceError:
                    return
            except trio.BrokenResourceError:
                return
