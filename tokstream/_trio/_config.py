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

__all__ = ["CLOSE_TIMEOUT", "Limits", "StreamConfig", "Timeouts"]

CLOSE_TIMEOUT = 5.0
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
        connect: To open the TCP connection.
        stall: The longest silence (no body bytes, or no response headers)
            tolerated once the request is sent. vLLM sends nothing while a
            request waits in its queue, so keep this above the longest
            expected queue wait.
        first_token: From sending the request to the first token ID.
        write: To send the request body.
    """

    connect: float | None = 10.0
    stall: float | None = 120.0
    first_token: float | None = None
    write: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "stall", "first_token", "write"):
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

    Attributes:
        max_connections: Cap on open connections; extra streams wait for one.
        max_keepalive_connections: Idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
    """

    max_connections: int | None = None
    max_keepalive_connections: int | None = 64
    keepalive_expiry: float | None = 5.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a stream needs from its client, fixed when the client is built.

    Attributes:
        url: The completions URL the stream posts to.
        model: The served model name written into each request body.
        timeouts: The client's timeouts. The stream loop enforces ``stall``
            and ``first_token``; ``connect`` and ``write`` are the transport's.
        max_event_size: The largest SSE event accepted.
    """

    url: str
    model: str
    timeouts: Timeouts
    max_event_size: int
