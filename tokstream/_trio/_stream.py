"""One token stream: the loop between a transport and the decoder, with retries and resume.

:class:`EventStream` is what ``Client.stream()`` returns. Each network read is
pushed into the sans-IO :class:`~tokstream.core.StreamDecoder` and its events
are handed out from a buffer, so there is no per-token await or channel
operation. ``pump`` runs a stream in its own task for the nursery-explicit
form (``Client.start_stream``) and puts each read's events into an
:class:`~._channel.EventChannel` at once.

Theory of operation:

* **Attempts.** Entering sends the first attempt. An attempt that fails (no
  response, an HTTP error, a broken or stalled read, a terminal ``Error`` from
  the decoder) does not end the stream at once: it is parked as the stream's
  *failure*, and the next step of the loop (``_fill`` or ``pump``) hands it to
  the :class:`~tokstream.core._retry.AttemptLog`, which records it and asks the
  :class:`~tokstream.RetryPolicy`. A retry releases the response, sleeps the
  backoff (cancellable, and inside the channel's scope in the nursery form),
  restarts the decoder and sends the next attempt. A resume does the same with
  the continuation request (prompt plus the IDs received); the decoder appends
  its tokens to the same stream. Otherwise :meth:`EventStream._final_error`
  produces the stream's one terminal ``Error``. Tokens of a failing read are
  handed out before any backoff starts.
* **The per-token path is untouched**: retries are decided only when an attempt
  ends, so a read costs what it did without them.
* **Deadlines** (``stall``, ``first_token``, ``total``) are the loop's policy.
  Iterating ``stream()`` passes each read its deadline; the transport needs a
  cancel scope only for a read that must wait. ``pump`` keeps **one cancel
  scope per stream** when the transport's reads are cancel-safe: its deadline is
  set when the scope opens and not moved per read; if it passes while the
  stream is still alive (a long stream outlived it, or the consumer held the
  task up), the scope is reopened with the deadline of the read in progress,
  so a read times out exactly ``stall`` seconds after it began. ``first_token``
  counts per attempt from when its request was written; ``total`` counts from
  entering the stream, over every attempt and backoff.
* After ``Done`` the loop reads the few bytes left of the body (vLLM's chunked
  terminator), bounded in time and size, so that the connection goes back to
  the pool for the next request instead of being closed.

A stream gets everything it needs explicitly: its :class:`StreamConfig`, a
:class:`~tokstream._trio._transport.StreamTransport` (it never imports httpx,
and never its client), the client's :class:`StreamCounters` and its
:class:`~tokstream.RetryPolicy`.

Runtime failures become the terminal ``Error`` event; cancellation closes the
response at once (shielded, bounded in time) and propagates, during a backoff
too. Misuse (iterating without ``async with``, entering twice, a closed
client) raises.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from typing import Final

import trio

from .._events import Done, Error, Event, StreamStatistics
from .._exceptions import (
    FirstTokenTimeout,
    ProtocolError,
    StallTimeout,
    StreamError,
    TokstreamError,
    TotalTimeout,
    TransportError,
    UsageError,
)
from .._statistics import Attempt, ClientStatistics
from ..core._decoder import StreamDecoder
from ..core._http_errors import ERROR_BODY_LIMIT, body_preview, http_status_error
from ..core._request import CompletionRequest
from ..core._retry import NO_RETRY, AttemptLog, RetryPolicy
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

    __slots__ = ("abandoned", "failed", "finished", "open", "resumes", "retries", "tokens")

    def __init__(self) -> None:
        self.open = 0
        self.finished = 0
        self.failed = 0
        self.abandoned = 0
        self.tokens = 0
        self.retries = 0
        self.resumes = 0

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
        return ClientStatistics(
            self.open,
            self.finished,
            self.failed,
            self.abandoned,
            self.tokens,
            self.retries,
            self.resumes,
        )


class EventStream(trio.abc.AsyncResource, metaclass=NoPublicConstructor):
    """One token stream: an async context manager and an async iterator.

    ``async with client.stream(...) as events: async for ev in events:`` yields
    ``Token`` events and then exactly one ``Done`` or ``Error``; iteration ends
    after it. Entering sends the request; failures to connect or HTTP errors
    become that ``Error`` event rather than exceptions. Transient failures
    before the first token are retried as the stream's :class:`RetryPolicy`
    says (while iterating: the backoff is awaited there), and with resume a
    stream that drops is continued; the caller sees one unbroken sequence of
    tokens either way. Leaving the block (or cancellation) closes the response
    at once.

    Only ``Client.stream()`` builds one (there is no public constructor).

    Attributes:
        request: The request as sent (the first attempt's; a resume sends the
            prompt plus the IDs received).
        url: The URL it goes to.
        request_id: The request ID sent, or else the server's (once known).
        retry: The stream's retry policy.
    """

    def __init__(
        self,
        request: CompletionRequest,
        *,
        config: StreamConfig,
        transport: StreamTransport,
        counters: StreamCounters,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        self.request = request
        self.url = config.url
        self.request_id = request.request_id
        self.retry = retry
        self._model = config.model
        self._failed_requests = config.failed_requests
        self._replica_header = config.replica_header
        self._timeouts = config.timeouts
        self._transport = transport
        self._counters = counters
        self._decoder = StreamDecoder(
            max_event_size=config.max_event_size, url=self.url, request_id=request.request_id
        )
        self._log = AttemptLog(retry, request)
        self._pending: deque[Event] = deque()
        self._response: StreamResponse | None = None
        # An attempt's failure, waiting for the policy: (error, whether the body ended cleanly).
        self._failure: tuple[TokstreamError, bool] | None = None
        self._entered = False
        self._ended = False  # the terminal event was produced
        self._closed = False
        self._drain = False  # ended with Done before the body's end: read it for reuse
        self._t0 = 0.0
        self._t_sent = 0.0
        self._t_total = math.inf  # the Timeouts.total deadline
        self._t_end: float | None = None
        self._ttft: float | None = None

    def __repr__(self) -> str:
        return f"<tokstream.EventStream {self.url} request_id={self.request_id!r}>"

    # -- context manager ----------------------------------------------------

    async def __aenter__(self) -> EventStream:
        """Send the request and wait for the response head.

        Returns:
            This stream. A failure to get a response, an HTTP error status or
            a timeout becomes its one ``Error`` event (after the retries its
            policy allows, which iterating it runs), not an exception.

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
        self._t0 = trio.current_time()
        if self._timeouts.total is not None:
            self._t_total = self._t0 + self._timeouts.total
        try:
            self._failure = await self._attempt()
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
        """Return a frozen snapshot of this stream's counters, attempts included."""
        end = self._t_end if self._t_end is not None else trio.current_time()
        return dataclasses.replace(
            self._decoder.statistics(),
            time_to_first_token=self._ttft,
            elapsed=end - self._t0 if self._entered else 0.0,
            attempts=self._log.number,
            retry_wait=self._log.waited,
        )

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts that failed so far (a retried stream's history), in order."""
        return tuple(self._log.records)

    # -- internals: one attempt ---------------------------------------------

    def _deadline(self, since: float | None = None) -> float:
        """The read deadline: ``stall`` from ``since`` (now), capped by first_token and total."""
        timeouts = self._timeouts
        deadline = self._t_total
        if timeouts.stall is not None:
            deadline = min(
                deadline, (trio.current_time() if since is None else since) + timeouts.stall
            )
        if timeouts.first_token is not None and self._decoder.attempt_tokens == 0:
            deadline = min(deadline, self._t_sent + timeouts.first_token)
        return deadline

    def _head_timeout(self) -> float:
        timeouts = self._timeouts
        return min(
            math.inf if timeouts.stall is None else timeouts.stall,
            math.inf if timeouts.first_token is None else timeouts.first_token,
        )

    def _request_body(self) -> bytes:
        """This attempt's body: the request, or its continuation after the IDs received."""
        if not self._decoder.tokens:
            return self.request.encode(self._model)
        return self._log.next_request(self._decoder.received_ids()).encode(self._model)

    async def _attempt(self) -> tuple[TokstreamError, bool] | None:
        """Send one attempt; return its failure, or ``None`` once a stream's body is open."""
        headers = [("content-type", "application/json")]
        if self.request_id:
            headers.append(("x-request-id", self.request_id))
        if self.request.session_id is not None:
            headers.append(("x-session-id", self.request.session_id))
        request = StreamRequest(self.url, self._request_body(), tuple(headers), self.request_id)
        timeout = self._head_timeout()
        self._decoder.replica = None  # this attempt's, once its response says
        try:
            with trio.CancelScope(deadline=self._t_total) as scope:
                response = await self._transport.open(request, timeout)
        except (TransportError, StreamError) as exc:
            return exc, False
        if scope.cancelled_caught:
            return self._timeout_error("waiting for a connection or the response head"), False
        if response is None:
            self._t_sent = trio.current_time() - timeout
            return self._timeout_error("waiting for response headers"), False
        self._t_sent = response.sent_at
        self._response = response
        if self._replica_header is not None:
            self._decoder.replica = response.headers.get(self._replica_header)
        server_id = response.headers.get("x-request-id")
        if server_id and not self.request_id:
            self.request_id = server_id
            self._decoder.request_id = server_id
        status = response.status
        content_type = response.headers.get("content-type")
        self._decoder.response_info = f"HTTP {status}, content-type {content_type or '(none)'}"
        if status >= 400:
            return await self._http_error(response), False
        if status >= 300 or (
            content_type is not None and "text/event-stream" not in content_type.lower()
        ):
            return await self._not_a_stream(response, content_type), False
        return None

    async def _read_body(self, response: StreamResponse) -> bytes:
        """Read a short body (an error's), bounded in size and by the read deadline."""
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
        await self._release()
        return bytes(body)

    async def _http_error(self, response: StreamResponse) -> TokstreamError:
        headers = response.headers
        body = await self._read_body(response)
        return http_status_error(
            response.status,
            body,
            url=self.url,
            request_id=headers.get("x-request-id") or self.request_id,
            headers=headers,
            now=time.time(),
        )

    async def _not_a_stream(
        self, response: StreamResponse, content_type: str | None
    ) -> TokstreamError:
        """A redirect, or a body that is not an event stream (a JSON completion, an HTML page)."""
        status = response.status
        location = response.headers.get("location")
        body = await self._read_body(response)
        where = f"{self.url} (request_id={self.request_id})" if self.request_id else self.url
        preview = body_preview(body, 200)
        if status >= 300:
            what = f"a redirect (HTTP {status}) to {location!r}" if location else f"HTTP {status}"
            hint = (
                "tokstream does not follow redirects: point base_url at the server's /v1 "
                "(an http:// URL answered by an https:// one, or a missing or extra path?)"
            )
        else:
            what = f"HTTP {status} with content-type {content_type}, not text/event-stream"
            hint = (
                "is base_url a vLLM server's /v1, and did it see stream=true? (a JSON body is "
                "a non-streamed answer or an error, an HTML page a proxy's or a web server's)"
            )
        return ProtocolError(
            f"the answer from {where} is not a token stream: {what}; body ({len(body)} bytes): "
            f"{preview!r}; {hint}",
            url=self.url,
            request_id=self.request_id,
        )

    # -- internals: reading -------------------------------------------------

    async def _fill(self) -> None:
        pending = self._pending
        while not pending and not self._ended:
            if self._failure is not None:
                await self._recover()
                continue
            response = self._response
            assert response is not None  # entered, not ended, no failure: a body is open
            try:
                data = await response.receive_some(self._deadline())
            except StreamError as exc:
                pending.extend(self._broken(exc))
                continue
            if data is None:
                self._failure = self._timeout_error("waiting for the next bytes"), False
                continue
            pending.extend(self._events_of(data))
        if self._ended and not self._closed:
            await self._release()

    def _events_of(self, data: bytes) -> list[Event]:
        """Decode one read (``b""``: the end of the body); park an attempt's failure."""
        decoder = self._decoder
        events = decoder.feed(data) if data else decoder.finish()
        if self._ttft is None and decoder.tokens:
            self._ttft = trio.current_time() - self._t_sent
        if decoder.finished:
            terminal = events[-1]
            if isinstance(terminal, Error):
                events.pop()  # the attempt failed; the policy decides what follows
                self._failure = terminal.error, not data
            else:
                self._drain = bool(data)
                self._finish_events(events)
        return events

    def _broken(self, exc: StreamError) -> list[Event]:
        """A read raised: the attempt failed, unless the stream had already finished."""
        if self._decoder.finish_reason is not None:
            # Every ID arrived (the finish chunk did); only usage or [DONE] was lost.
            return self._events_of(b"")
        self._failure = exc, False
        return []

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

    def _timeout_error(self, scope_reason: str) -> TokstreamError:
        timeouts = self._timeouts
        now = trio.current_time()
        waited = now - self._t_sent
        stats = self.statistics().describe()
        if now >= self._t_total:
            return TotalTimeout(
                f"the stream to {self.url} outlived total={timeouts.total}s ({scope_reason}; "
                f"request_id={self.request_id}); raise Timeouts.total to allow longer streams; "
                f"diagnostics: {stats}",
            )
        if (
            timeouts.first_token is not None
            and self._decoder.attempt_tokens == 0
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

    # -- internals: after an attempt ----------------------------------------

    async def _recover(self) -> None:
        """Handle the parked failure: retry or resume as the log decides, else end the stream.

        The decision is the core's (``AttemptLog.failed``); this only releases
        the response, sleeps the wait and sends the next attempt. Returns with
        a new attempt's body open, or with the stream ended. Cancellation
        (during the backoff too) propagates.
        """
        decoder = self._decoder
        while self._failure is not None:
            exc, body_ended = self._failure
            self._failure = None
            decision = self._log.failed(
                exc,
                tokens=decoder.attempt_tokens,
                received=decoder.tokens,
                empty=body_ended and decoder.attempt_bytes == 0,
                cut_short=body_ended and decoder.ended_early,
                time_left=self._t_total - trio.current_time(),
                replica=decoder.replica,
            )
            await self._release()
            if not decision.retry:
                self._final_error(exc, decision.reason)
                return
            await trio.sleep(decision.wait)
            self._counters.retries += 1
            if self._log.begin(decision, decoder.tokens):
                self._counters.resumes += 1
            decoder.restart()
            self._failure = await self._attempt()

    def _final_error(self, exc: TokstreamError, reason: str = "") -> None:
        """End the stream with its one terminal ``Error``: the failure no retry could mend.

        Every way a stream finally fails comes here once, after all attempts:
        the exception gets every attempt (``exc.attempts``) and its message
        says them; the ``Error`` event gets them too, with the IDs that
        arrived, and is queued for the caller.
        """
        attempts = self._log.close(exc, reason)
        error = self._decoder.fail(exc)
        events: list[Event] = [dataclasses.replace(error, attempts=attempts)]
        self._finish_events(events)
        self._pending.extend(events)

    def _finish_events(self, events: list[Event]) -> None:
        """Stamp the terminal event (last of ``events``, in place) and count the end."""
        self._t_end = trio.current_time()
        terminal = events[-1]
        assert isinstance(terminal, (Done, Error))
        stats = dataclasses.replace(
            terminal.diagnostics,
            elapsed=self._t_end - self._t0,
            time_to_first_token=self._ttft,
            attempts=self._log.number,
            retry_wait=self._log.waited,
        )
        if isinstance(terminal, Error):
            terminal.error.diagnostics = stats
            error = dataclasses.replace(terminal, diagnostics=stats)
            if self._failed_requests is not None:
                error = self._save_failed(error)
            events[-1] = error
        else:
            events[-1] = dataclasses.replace(
                terminal,
                diagnostics=stats,
                attempts=self._log.succeeded(self._decoder.attempt_tokens, self._decoder.replica),
                splices=tuple(self._log.splices),
            )
        self._ended = True
        self._counters.ended(isinstance(terminal, Done), self._decoder.tokens)

    def _save_failed(self, event: Error) -> Error:
        """The failed-request store's hook: save this request, say where on the ``Error``.

        Called once, with the stream's final ``Error``: after every retry, with
        every attempt on it (issue 10, section 4). The body saved is the
        request as the caller made it (a resume's continuation is derived from
        it and the IDs, which the record holds too).
        """
        assert self._failed_requests is not None
        return self._failed_requests.record(
            event, request=self.request, model=self._model, url=self.url, request_id=self.request_id
        )

    # -- the nursery form ---------------------------------------------------

    async def _run_into(self, channel: EventChannel) -> None:
        """Move this entered stream's events into ``channel``, up to and with its last event."""
        last: list[Event] = []
        while not self._ended:
            if self._failure is not None:
                with trio.CancelScope() as scope:
                    channel.attach(scope)
                    await self._recover()
                if channel.closed:
                    return
                continue
            response = self._response
            assert response is not None
            last = await self._read_into(channel, response)
            if channel.closed:
                return
        if not self._closed:
            await self._release()  # reads vLLM's terminator first: reuse before Done is out
        channel.put(last)
        channel.put(self._pending)
        self._pending.clear()

    async def _read_into(self, channel: EventChannel, response: StreamResponse) -> list[Event]:
        """Read until the attempt ends; return the last read's events if it was ``Done``'s."""
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
                        events = self._broken(exc)
                    else:
                        reading_since = None
                        if data is None:
                            self._failure = self._timeout_error("waiting for the next bytes"), False
                            return []
                        events = self._events_of(data)
                    if self._decoder.finished and self._failure is None:
                        return events  # Done's: sent once the connection is released
                    channel.put(events)
                    if self._failure is not None:
                        return []
            if channel.closed:
                return []
            # The scope's deadline passed. Time out only if the read in
            # progress is overdue; else reopen the scope with its deadline.
            if reading_since is not None and trio.current_time() >= self._deadline(reading_since):
                self._failure = self._timeout_error("waiting for the next bytes"), False
                return []
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
