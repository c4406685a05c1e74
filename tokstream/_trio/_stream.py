"""One token stream: the pull-based loop between the HTTP body and the decoder.

:class:`EventStream` is what ``Client.stream()`` returns. Each network read is
pushed into the sans-IO :class:`~tokstream._chunks.StreamDecoder` and its
events are handed out from a buffer, so there is no per-token await or channel
operation. ``pump`` moves a stream's events onto a memory channel for the
nursery-explicit form, with ``send_nowait`` while the buffer has room.

Runtime failures become the terminal ``Error`` event; cancellation closes the
response at once (shielded) and propagates.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
import trio

from .._events import Done, Error, Event, StreamStatistics
from .._exceptions import FirstTokenTimeout, StallTimeout, TokstreamError
from ..core._decoder import StreamDecoder, with_timing
from ..core._http_errors import ERROR_BODY_LIMIT, http_status_error
from ..core._request import CompletionRequest
from ._transport import ByteSource, HttpxByteSource, map_httpx_error

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["EventStream", "pump"]


class EventStream:
    """One token stream: an async context manager and an async iterator.

    ``async with client.stream(...) as events: async for ev in events:`` yields
    ``Token`` events and then exactly one ``Done`` or ``Error``; iteration ends
    after it. Entering sends the request; failures to connect or HTTP errors
    become that ``Error`` event rather than exceptions. Leaving the block (or
    cancellation) closes the response at once.
    """

    def __init__(self, client: Client, request: CompletionRequest) -> None:
        self._client = client
        self.request = request
        self.url = client.completions_url
        self.request_id = request.request_id
        self._decoder = StreamDecoder(
            max_event_size=client.max_event_size, url=self.url, request_id=request.request_id
        )
        self._pending: deque[Event] = deque()
        self._source: ByteSource | None = None
        self._entered = False
        self._ended = False  # the terminal event was produced
        self._closed = False
        self._t0 = 0.0
        self._t_end: float | None = None
        self._ttft: float | None = None

    # -- context manager ----------------------------------------------------

    async def __aenter__(self) -> EventStream:
        if self._entered:
            raise RuntimeError("an EventStream can be entered only once")
        self._entered = True
        self._client._stream_started()
        try:
            await self._open()
        except BaseException:
            # Cancelled while connecting or reading an error body: release the
            # connection and the open-stream count before trio.Cancelled goes on.
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the response now; idempotent. Unread events are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._source is not None:
            await self._source.aclose()
        if not self._ended:
            self._client._stream_ended(None, self._decoder.tokens)

    # -- iteration ----------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        # Buffered events (and bytes httpx already holds) need no I/O, but a
        # cancelled scope must still stop the loop at once. This raises only if
        # cancelled and otherwise does not yield, so it costs no scheduling.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._pending:
            if self._ended or self._closed:
                raise StopAsyncIteration
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
        timeouts = self._client.timeouts
        deadline = math.inf
        if timeouts.stall is not None:
            deadline = trio.current_time() + timeouts.stall
        if timeouts.first_token is not None and self._decoder.tokens == 0:
            deadline = min(deadline, self._t0 + timeouts.first_token)
        return deadline

    async def _open(self) -> None:
        client = self._client
        self._t0 = trio.current_time()
        http_request = client._build_http_request(self.request)
        response: httpx.Response | None = None
        try:
            with trio.move_on_at(self._deadline()):
                response = await client._http.send(http_request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._terminate(
                map_httpx_error(exc, url=self.url, request_id=self.request_id, started=False)
            )
            return
        if response is None:
            self._timed_out(scope_reason="waiting for response headers")
            return
        self._source = HttpxByteSource(response)
        server_id = response.headers.get("x-request-id")
        if server_id and not self.request_id:
            self.request_id = server_id
            self._decoder.request_id = server_id
        if response.status_code >= 400:
            await self._http_error(response)

    async def _http_error(self, response: httpx.Response) -> None:
        assert self._source is not None
        body = bytearray()
        try:
            with trio.move_on_at(self._deadline()):
                while len(body) < ERROR_BODY_LIMIT:
                    data = await self._source.receive_some()
                    if not data:
                        break
                    body += data
        except httpx.HTTPError:
            pass  # report the status with whatever body arrived
        self._terminate(
            http_status_error(
                response.status_code,
                bytes(body),
                url=self.url,
                request_id=response.headers.get("x-request-id") or self.request_id,
            )
        )
        await self._source.aclose()

    async def _fill(self) -> None:
        source = self._source
        decoder = self._decoder
        while not self._pending and not self._ended:
            assert source is not None
            try:
                with trio.move_on_at(self._deadline()) as scope:
                    data = await source.receive_some()
            except httpx.HTTPError as exc:
                self._terminate(
                    map_httpx_error(exc, url=self.url, request_id=self.request_id, started=True)
                )
                break
            if scope.cancelled_caught:
                self._timed_out(scope_reason="waiting for the next bytes")
                break
            events = decoder.feed(data) if data else decoder.finish()
            if self._ttft is None and decoder.tokens:
                self._ttft = trio.current_time() - self._t0
            if decoder.finished:
                self._finish_events(events)
            else:
                self._pending.extend(events)
        if self._ended and self._source is not None and not self._closed:
            await self._source.aclose()

    def _timed_out(self, scope_reason: str) -> None:
        timeouts = self._client.timeouts
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
        self._client._stream_ended(isinstance(terminal, Done), self._decoder.tokens)


async def pump(stream: EventStream, send: trio.MemorySendChannel[Event]) -> None:
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
