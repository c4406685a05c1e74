"""Client configuration: timeouts, pool limits, and what one stream needs.

:class:`Timeouts` and :class:`Limits` are the user's knobs; :class:`StreamConfig`
is the part of a client's configuration that its streams read, handed to each
stream explicitly (a stream never reaches back into its client). Frozen data,
validated on construction; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._exceptions import InvalidRequest
from .._failed import FailureRecorder

__all__ = ["CLOSE_TIMEOUT", "Limits", "StreamConfig", "Timeouts"]

CLOSE_TIMEOUT = 5.0

DEFAULT_REPLICA_HEADER = "x-tokstream-replica"
"""The response header read as ``Done.replica`` / ``Error.replica`` by default.

vllm-router's answer names no replica; a replica can add this header itself
(the testing kit's replicas do, with a small ASGI ``--middleware``)."""
"""Seconds a shielded close may take (a response, or the client's pool).

Closes are shielded so that cancellation still closes the connection (which is
how vLLM learns to abort a request); this bound keeps a hung peer from holding
a cancellation forever. A close that runs out of time is abandoned.
"""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts, in seconds; ``None`` disables one.

    Closing a response or the client is not configurable: it is shielded from
    cancellation and bounded at 5 seconds.

    Attributes:
        connect: To open the connection (DNS, TCP and TLS).
        pool: To wait for a free connection when all ``Limits.max_connections``
            are busy (then ``PoolTimeout``); ``None`` waits as long as it takes.
            Unused with the default, unbounded pool.
        stall: The longest silence (no body bytes, or no response headers)
            tolerated once the request is sent. vLLM sends nothing while a
            request waits in its queue, so keep this above the longest
            expected queue wait. Waiting for a pool slot or a connection is
            not a stall: ``pool`` and ``connect`` bound those.
        first_token: From sending the request to the first token ID (per
            attempt: each retry gets its own).
        write: To send the request body.
        total: The whole stream's budget, from entering it to its last event:
            waiting for a connection, every attempt and every backoff
            included (then ``TotalTimeout``, never retried). Off by default.
            Where ``stall`` bounds a silence and ``first_token`` the wait for
            the first token, ``total`` also ends a stream that is never
            silent but never finishes: a server dripping a byte every half
            second, or sending only keep-alive comments.
    """

    connect: float | None = 10.0
    stall: float | None = 120.0
    first_token: float | None = None
    write: float | None = 60.0
    pool: float | None = None
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "stall", "first_token", "write", "pool", "total"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
                or math.isnan(value)
            ):
                raise InvalidRequest(f"timeouts.{name}", value, "must be a positive number or None")


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool limits.

    The default pool is unbounded: one connection per concurrent stream (the
    stock httpx limit of 100 gave PoolTimeout on 312 of 512 streams).

    A connection is reused once its response was read to the end (vLLM's
    streams are, at ``[DONE]``), so sequential streams share one connection.

    Attributes:
        max_connections: Cap on open connections; extra streams wait for one
            (up to ``Timeouts.pool``). ``None``: no cap.
        max_keepalive_connections: Idle connections kept for reuse (``0``: none;
            ``None``: no cap); the oldest idle one is closed to keep within it.
        keepalive_expiry: Seconds an idle connection is kept (``None``: no limit).
            uvicorn closes idle connections after 5 s, so keep this below that.
    """

    max_connections: int | None = None
    max_keepalive_connections: int | None = 64
    keepalive_expiry: float | None = 4.0

    def __post_init__(self) -> None:
        for name, low in (("max_connections", 1), ("max_keepalive_connections", 0)):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise InvalidRequest(f"limits.{name}", value, f"must be an int >= {low} or None")
        expiry = self.keepalive_expiry
        if expiry is not None and (
            isinstance(expiry, bool)
            or not isinstance(expiry, (int, float))
            or not expiry > 0
            or math.isnan(expiry)
        ):
            raise InvalidRequest(
                "limits.keepalive_expiry", expiry, "must be a positive number or None"
            )


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a stream needs from its client, fixed when the client is built.

    Attributes:
        url: The completions URL the stream posts to.
        model: The served model name written into each request body.
        timeouts: The client's timeouts. The stream loop enforces ``stall``,
            ``first_token`` and ``total``; ``connect``, ``write`` and ``pool``
            are the transport's.
        max_event_size: The largest SSE event accepted.
        failed_requests: Saves the request when the stream finally fails
            (``None``: saving is off).
        replica_header: The response header that names the replica which
            served a stream (``None``: none is read).
    """

    url: str
    model: str
    timeouts: Timeouts
    max_event_size: int
    failed_requests: FailureRecorder | None = None
    replica_header: str | None = DEFAULT_REPLICA_HEADER
