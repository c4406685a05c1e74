"""One token stream: the loop between a transport and the decoder.

:class:`EventStream` is what ``Client.stream()`` returns. Each network read is
pushed into the sans-IO :class:`~tokstream.core.StreamDecoder` and its events
are handed out from a buffer, so there is no per-token await or channel
operation. ``pump`` runs a stream in its own task for the nursery-explicit
form (``Client.start_stream``) and puts each read's events into an
:class:`~._channel.EventChannel` at once.

Deadlines (``stall``, ``first_token``) are the loop's policy. Iterating
``stream()`` passes each read its deadline; the transport needs a cancel scope
only for a read that must wait. ``pump`` keeps **one cancel scope per stream**
when the transport's reads are cancel-safe: its deadline is set when the scope
opens and not moved per read; if it passes while the stream is still alive
(a long stream outlived it, or the consumer held the task up), the scope is
reopened with the deadline of the read in progress, so a read times out
exactly ``stall`` seconds after it began.

After ``Done`` the loop reads the few bytes left of the body (vLLM's chunked
terminator), bounded in time and size, so that the connection goes back to the
pool for the next request instead of being closed.

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
from ._channel import EventChannel
from ._config import StreamConfig
from ._transport import StreamRequest, StreamResponse, StreamTransport, close_scope
from ._util import NoPublicConstructor

__all__ = ["DRAIN_LIMIT", "DRAIN_TIMEOUT", "EventStream", "StreamCounters", "pump"]

DRAIN_TIMEOUT = 1.0
"""Seconds the loop waits, after ``Done``, for the end of the body (to reuse the connection)."""
DRAIN_LIMIT = 64 * 1024
"""Bytes the loop reads, after ``Done``, for the end of the body before it gives up on it."""

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
        self._failed_requests = config.failed_requests
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
        self._drain = False  # ended with Done before the body's end: read it for reuse
        self._t0 = 0.0
        self._t_sent = 0.0
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
        self._drain = False
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
        pending = self._pending
        if pending:
            return pending.popleft()
        if self._ended or self._closed:
            raise StopAsyncIteration
        if not self._entered:
            raise UsageError(_NOT_ENTERED.format(url=self.url))
        await self._fill()
        return pending.popleft()

    def statistics(self) -> StreamStatistics:
        """Return a frozen snapshot of this stream's counters."""
        end = self._t_end if self._t_end is not None else trio.current_time()
        return dataclasses.replace(
            self._decoder.statistics(),
            time_to_first_token=self._ttft,
            elapsed=end - self._t0 if self._entered else 0.0,
        )

    # -- internals ----------------------------------------------------------

    def _deadline(self, since: float | None = None) -> float:
        """The read deadline: ``stall`` after ``since`` (now), capped by ``first_token``."""
        timeouts = self._timeouts
        deadline = math.inf
        if timeouts.stall is not None:
            deadline = (trio.current_time() if since is None else since) + timeouts.stall
        if timeouts.first_token is not None and self._decoder.tokens == 0:
            deadline = min(deadline, self._t_sent + timeouts.first_token)
        return deadline

    def _head_timeout(self) -> float:
        timeouts = self._timeouts
        return min(
            math.inf if timeouts.stall is None else timeouts.stall,
            math.inf if timeouts.first_token is None else timeouts.first_token,
        )

    async def _open(self) -> None:
        self._t0 = trio.current_time()
        headers = [("content-type", "application/json")]
        if self.request_id:
            headers.append(("x-request-id", self.request_id))
        request = StreamRequest(
            self.url, self.request.encode(self._model), tuple(headers), self.request_id
        )
        timeout = self._head_timeout()
        try:
            response = await self._transport.open(request, timeout)
        except (TransportError, StreamError) as exc:
            self._terminate(exc)
            return
        if response is None:
            self._t_sent = trio.current_time() - timeout
            self._timed_out(scope_reason="waiting for response headers")
            return
        self._t_sent = response.sent_at
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
        pending = self._pending
        while not pending and not self._ended:
            try:
                data = await response.receive_some(self._deadline())
            except StreamError as exc:
                self._terminate(exc)
                break
            if data is None:
                self._timed_out(scope_reason="waiting for the next bytes")
                break
            pending.extend(self._events_of(data))
        if self._ended and not self._closed:
            await self._release()

    def _events_of(self, data: bytes) -> list[Event]:
        """Decode one read (``b""``: the end of the body); end the stream at its terminal event."""
        decoder = self._decoder
        events = decoder.feed(data) if data else decoder.finish()
        if self._ttft is None and decoder.tokens:
            self._ttft = trio.current_time() - self._t_sent
        if decoder.finished:
            self._drain = bool(data) and isinstance(events[-1], Done)
            self._finish_events(events)
        return events

    async def _release(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        try:
            if self._drain:
                self._drain = False
                await _read_to_end(response)
        finally:
            if not response.release_nowait():
                with close_scope():
                    await response.aclose()

    def _timed_out(self, scope_reason: str) -> None:
        self._terminate(self._timeout_error(scope_reason))

    def _timeout_error(self, scope_reason: str) -> TokstreamError:
        timeouts = self._timeouts
        now = trio.current_time()
        waited = now - self._t_sent
        stats = self.statistics().describe()
        if (
            timeouts.first_token is not None
            and self._decoder.tokens == 0
            and now >= self._t_sent + timeouts.first_token
        ):
            return FirstTokenTimeout(
                f"no token from {self.url} within first_token={timeouts.first_token}s "
                f"({scope_reason}; request_id={self.request_id}); diagnostics: {stats}",
            )
        return StallTimeout(
            f"no bytes from {self.url} for stall={timeouts.stall}s after {waited:.3f}s "
            f"({scope_reason}; request_id={self.request_id}); the server may be overloaded "
            f"or the request queued; raise Timeouts.stall to wait longer; diagnostics: {stats}",
        )

    def _terminate(self, exc: TokstreamError) -> None:
        events: list[Event] = [self._decoder.fail(exc)]
        self._finish_events(events)
        self._pending.extend(events)

    def _finish_events(self, events: list[Event]) -> None:
        """Time-stamp the terminal event (last of ``events``, in place) and count the end."""
        self._t_end = trio.current_time()
        terminal = events[-1]
        assert isinstance(terminal, (Done, Error))
        events[-1] = with_timing(terminal, self._t_end - self._t0, self._ttft)
        if self._failed_requests is not None and isinstance(events[-1], Error):
            events[-1] = self._save_failed(events[-1])
        self._ended = True
        self._counters.ended(isinstance(terminal, Done), self._decoder.tokens)

    def _save_failed(self, event: Error) -> Error:
        """The failed-request store's hook: save this request, say where on the ``Error``.

        Called once, with the stream's final ``Error`` (issue 10, section 4).
        """
        assert self._failed_requests is not None
        return self._failed_requests.record(
            event, request=self.request, model=self._model, url=self.url, request_id=self.request_id
        )

    async def _run_into(self, channel: EventChannel) -> None:
        """Move this entered stream's events into ``channel``, up to and with its last event."""
        response = self._response
        last: list[Event] = []
        if response is not None:
            last = await self._read_into(channel, response)
        if self._ended and not self._closed:
            await self._release()  # reads vLLM's terminator first: reuse before Done is out
        channel.put(last)
        channel.put(self._pending)
        self._pending.clear()

    async def _read_into(self, channel: EventChannel, response: StreamResponse) -> list[Event]:
        """Read until the stream ends; return the last read's events (held for the release)."""
        lazy = response.cancel_safe
        reading_since: float | None = None  # when the read in progress began
        while not self._ended:
            with trio.CancelScope(
                deadline=self._deadline(reading_since) if lazy else math.inf
            ) as scope:
                channel.attach(scope)
                while True:
                    if reading_since is None:
                        await channel.wait_for_room()
                        reading_since = trio.current_time()
                    try:
                        data = await response.receive_some(
                            math.inf if lazy else self._deadline(reading_since)
                        )
                    except StreamError as exc:
                        self._terminate(exc)
                        return []
                    reading_since = None
                    if data is None:
                        self._timed_out(scope_reason="waiting for the next bytes")
                        return []
                    events = self._events_of(data)
                    if self._decoder.finished:
                        return events
                    channel.put(events)
            if channel.closed:
                return []
            # The scope's deadline passed. Time out only if the read in
            # progress is overdue; else reopen the scope with its deadline.
            if reading_since is not None and trio.current_time() >= self._deadline(reading_since):
                self._timed_out(scope_reason="waiting for the next bytes")
        return []


async def _read_to_end(response: StreamResponse) -> None:
    """Read what is left of a finished body (vLLM's chunked terminator), bounded in time and size.

    Any failure just means the connection will not be reused, which ``aclose``
    then decides.
    """
    deadline = trio.current_time() + DRAIN_TIMEOUT
    left = DRAIN_LIMIT
    try:
        while left > 0:
            data = await response.receive_some(deadline)
            if not data:
                return
            left -= len(data)
    except StreamError:
        return


async def pump(stream: EventStream, channel: EventChannel) -> None:
    """Run ``stream`` in this task, putting its events into ``channel`` (``Client.start_stream``).

    The channel ends after the stream's last event. If the receiver closes the
    channel, the stream is closed at once (and counted abandoned).
    """
    try:
        async with stream:
            await stream._run_into(channel)
    finally:
        channel.finish()
