"""Statistics snapshots: frozen copies of a stream's or a client's counters.

:class:`StreamStatistics` is what ``EventStream.statistics()`` returns and what
every stream event and error carries as its diagnostics;
:class:`ClientStatistics` is what ``Client.statistics()`` returns. Data only, no
I/O; it sits below both the events and the error tree, so neither imports the
other for it. :class:`Attempt` (one try of a request, as the retry policy saw it)
lives here for the same reason: the ``Error``/``Done`` events and the final
exception both carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Attempt", "ClientStatistics", "PoolStatistics", "StreamStatistics"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a request: what it delivered, and how it ended.

    A stream that was retried or resumed carries one per attempt, in order, on
    its terminal event (``Error.attempts``, ``Done.attempts``) and on the final
    exception (``exc.attempts``).

    Attributes:
        number: 1 for the first attempt, then 2, 3, ...
        error: The exception's class name (``"ConnectError"``, ``"RateLimitError"``),
            or ``None`` for the attempt that succeeded.
        message: The exception's message (``""`` for success).
        status: The HTTP status of an HTTP error, else ``None``.
        waited: Seconds of backoff slept before this attempt (0 for the first).
        tokens: Token IDs this attempt delivered (a resumed stream's continuation
            counts only its own).
        retry_after: Seconds the server asked to wait (``Retry-After``,
            ``retry-after-ms``), if it did.
        replica: Which replica answered this attempt (the client's
            ``replica_header``), or ``None``: behind vllm-router, a retry
            after a replica died shows the switch here.
    """

    number: int
    error: str | None
    message: str = ""
    status: int | None = None
    waited: float = 0.0
    tokens: int = 0
    retry_after: float | None = None
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """A frozen snapshot of one stream's counters (see ``statistics()``).

    Attributes:
        bytes_received: HTTP body bytes received.
        chunks: Network reads that delivered body bytes.
        sse_lines: SSE lines parsed (data, comments, fields and blank lines).
        sse_events: SSE events dispatched.
        parse_errors: ``data:`` payloads that were not valid JSON (the first
            one ends the stream with ``ProtocolError``: tokens may be missing).
        parse_error_previews: The first few of those payloads, truncated.
        tokens: Token IDs delivered.
        time_to_first_token: Seconds from sending the request to the first
            token ID, or ``None`` if none arrived.
        elapsed: Seconds since the stream was entered, waiting for a connection
            included (to the end, once ended).
        buffer_preview: The tail of undecoded bytes, for diagnostics.
        attempts: Attempts made so far (1 unless the stream was retried or
            resumed; see ``RetryPolicy``).
        retry_wait: Seconds slept in backoff between attempts.
    """

    bytes_received: int = 0
    chunks: int = 0
    sse_lines: int = 0
    sse_events: int = 0
    parse_errors: int = 0
    parse_error_previews: tuple[str, ...] = ()
    tokens: int = 0
    time_to_first_token: float | None = None
    elapsed: float = 0.0
    buffer_preview: str = ""
    attempts: int = 1
    retry_wait: float = 0.0

    def describe(self) -> str:
        """Return a one-line human summary, as used in error messages."""
        ttft = "none" if self.time_to_first_token is None else f"{self.time_to_first_token:.3f}s"
        parts = [
            f"chunks={self.chunks}",
            f"bytes={self.bytes_received}",
            f"sse_lines={self.sse_lines}",
            f"events={self.sse_events}",
            f"tokens={self.tokens}",
            f"parse_errors={self.parse_errors}",
            f"ttft={ttft}",
            f"elapsed={self.elapsed:.3f}s",
        ]
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
            parts.append(f"retry_wait={self.retry_wait:.3f}s")
        if self.parse_error_previews:
            parts.append(f"first_bad_payloads={list(self.parse_error_previews)!r}")
        parts.append(f"buffer={self.buffer_preview!r}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A frozen snapshot of a connection pool's counters (the ``"trio"`` stream transport).

    Attributes:
        connections: Connections open now (active, idle or being opened).
        active: Connections carrying a request now.
        idle: Connections kept alive for reuse now.
        waiting: Requests waiting for a free connection now.
        opened: Connections opened so far.
        reused: Requests sent on a kept-alive connection.
        closed: Connections closed so far (including expired and stale ones).
        expired: Idle connections closed after ``Limits.keepalive_expiry``.
        stale: Kept-alive connections the server had closed, found before or by
            a request (a request that failed on one was retried once).
        pool_timeouts: Requests that gave up waiting (``PoolTimeout``).
        work: Steps the pool's bookkeeping took (queue and list operations);
            it grows linearly with the requests served, whatever happens to
            them (the pool has no quadratic path).
    """

    connections: int = 0
    active: int = 0
    idle: int = 0
    waiting: int = 0
    opened: int = 0
    reused: int = 0
    closed: int = 0
    expired: int = 0
    stale: int = 0
    pool_timeouts: int = 0
    work: int = 0


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A frozen snapshot of a client's stream counters (see ``Client.statistics()``).

    Equality compares the stream counters only: ``pool`` is extra information.

    Attributes:
        streams_open: Streams started and not yet ended.
        streams_finished: Streams that ended with ``Done``.
        streams_failed: Streams that ended with ``Error``.
        streams_abandoned: Streams closed or cancelled before their last event.
        tokens: Token IDs received over all streams.
        retries: Attempts beyond each stream's first (``RetryPolicy``), over
            all streams, resumes included.
        resumes: Streams continued after a drop (``RetryPolicy(resume=True)``),
            counted once per splice.
        pool: The stream transport's connection pool counters (``"trio"``
            transport), or ``None`` (``"httpx"``, whose pool is not counted).
    """

    streams_open: int = 0
    streams_finished: int = 0
    streams_failed: int = 0
    streams_abandoned: int = 0
    tokens: int = 0
    retries: int = 0
    resumes: int = 0
    pool: PoolStatistics | None = field(default=None, compare=False)
