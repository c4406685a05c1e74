"""The trio transport's connections and their pool: per origin, O(1), no background task.

Theory of operation:

* A :class:`ConnectionPool` holds the connections to one origin (scheme, host,
  port). Each is *active* (carrying a request), *idle* (kept alive for reuse)
  or being opened; together they never exceed ``Limits.max_connections``.
* :meth:`~ConnectionPool.acquire` first drops expired idle connections from
  the old end of the idle deque, then takes the newest idle one, unless its
  socket became readable while idle (the server closed it, or sent bytes
  nobody asked for): that one is closed and counted ``stale``, and the next is
  tried. Every connection enters and leaves the deque once, so these scans
  cost O(1) per request, amortized. With no idle connection it opens one if
  there is room, else it waits.
* Waiters queue in FIFO order in an ``OrderedDict`` keyed by task: adding one,
  removing one (its abort function, when it is cancelled or its
  ``Timeouts.pool`` passes) and waking the first are all O(1), so cancelling
  any number of waiting requests is linear.
* :meth:`~ConnectionPool.release` hands a reusable connection straight to the
  first waiter (no race with newcomers), or puts it on the idle deque, closing
  the oldest idle one if the deque is full. A connection that cannot be
  reused is closed, and its slot goes to the first waiter, who opens a new one.
* Expiry is lazy (on acquire and release); nothing runs in the background.
  Closing is synchronous and forceful: the socket is closed at once, which is
  how the server learns that a request was abandoned.

The pool knows nothing of HTTP; the transport (``_http.py``) decides whether a
connection can be reused, and retries a request once if a kept-alive
connection turns out to be stale. A connection's socket I/O is
``_connection.py``.
"""

from __future__ import annotations

import math
import ssl
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio

from .._exceptions import ClientClosedError, ConnectError, ConnectTimeout, PoolTimeout
from .._statistics import PoolStatistics
from ._config import Limits
from ._connection import Connection

__all__ = ["Connection", "ConnectionPool", "Opener"]

Opener = Callable[[], Awaitable[Connection]]
"""Opens one connection (TCP, and TLS for https); raises ``OSError`` /
``trio.BrokenResourceError`` (TLS) on failure."""


class ConnectionPool:
    """The connections to one origin (see the module docs).

    Args:
        opener: Opens one connection.
        limits: The pool's limits.
        connect_timeout: Seconds to open a connection (``None``: no limit).
        pool_timeout: Seconds to wait for a free connection (``None``: no limit).
        where: The origin, named in error messages.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        limits: Limits,
        connect_timeout: float | None,
        pool_timeout: float | None,
        where: str,
    ) -> None:
        self._opener = opener
        self._max = limits.max_connections if limits.max_connections is not None else math.inf
        keep = limits.max_keepalive_connections
        self._max_idle = keep if keep is not None else math.inf
        expiry = limits.keepalive_expiry
        self._expiry = expiry if expiry is not None else math.inf
        self._connect_timeout = connect_timeout if connect_timeout is not None else math.inf
        self._pool_timeout = pool_timeout if pool_timeout is not None else math.inf
        self._where = where
        self._idle: deque[Connection] = deque()
        self._active: set[Connection] = set()
        self._waiters: OrderedDict[trio.lowlevel.Task, None] = OrderedDict()
        self._count = 0  # connections active, idle or being opened
        self._closed = False
        self._opened = 0
        self._reused = 0
        self._closed_count = 0
        self._expired = 0
        self._stale = 0
        self._pool_timeouts = 0
        self._work = 0

    # -- acquire / release ------------------------------------------------------

    async def acquire(
        self, *, fresh: bool = False, url: str | None = None, request_id: str | None = None
    ) -> Connection:
        """Return a connection for one request: a kept-alive one, else a new one.

        Args:
            fresh: Open a new connection even if idle ones exist (the retry
                after a stale one).
            url: The request's URL, named in errors.
            request_id: The request's ID, named in errors.

        Raises:
            PoolTimeout: No free connection within the pool timeout.
            ConnectError: The connection could not be opened.
            ConnectTimeout: Not within the connect timeout.
            ClientClosedError: The pool was closed.
        """
        self._check_open()
        if not fresh:
            conn = self._take_idle()
            if conn is not None:
                return conn
        where = f"{url} (request_id={request_id})" if request_id else url or self._where
        try:
            if self._count >= self._max:
                conn = await self._wait(where)
                if conn is not None:
                    return conn
            else:
                self._count += 1
            # A slot is reserved for us: open a connection in it, or give it back.
            try:
                return await self._open(where)
            except BaseException:
                self._free_slot()
                raise
        except (PoolTimeout, ConnectError, ConnectTimeout) as exc:
            exc.url = url
            exc.request_id = request_id
            raise

    def release(self, conn: Connection, *, reusable: bool) -> None:
        """Give a connection back after its request: keep it if ``reusable``, else close it.

        Synchronous and O(1); never raises.
        """
        self._work += 1
        if not reusable or self._closed:
            self._active.discard(conn)
            self._discard(conn)
            return
        if self._waiters:  # handed over: it stays active
            task, _ = self._waiters.popitem(last=False)
            self._reused += 1
            conn.requests += 1
            trio.lowlevel.reschedule(task, outcome.Value(conn))
            return
        self._active.discard(conn)
        now = trio.current_time()
        self._expire(now)
        while len(self._idle) >= self._max_idle and self._idle:
            self._discard(self._idle.popleft())
            self._work += 1
        if self._max_idle == 0:
            self._discard(conn)
            return
        conn.idle_since = now
        self._idle.append(conn)

    def close(self) -> None:
        """Close every connection and refuse new requests; idempotent.

        A request still reading from a connection finds it closed (its stream
        ends with ``RemoteDisconnected``); waiting requests get
        ``ClientClosedError``.
        """
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())
        for conn in self._active:
            conn.close()
        while self._waiters:
            task, _ = self._waiters.popitem(last=False)
            trio.lowlevel.reschedule(task, outcome.Error(self._closed_error()))

    @property
    def active(self) -> int:
        """Connections carrying a request now."""
        return len(self._active)

    def statistics(self) -> PoolStatistics:
        """Return a frozen snapshot of the pool's counters."""
        idle = len(self._idle)
        return PoolStatistics(
            connections=self._count,
            active=self._count - idle,
            idle=idle,
            waiting=len(self._waiters),
            opened=self._opened,
            reused=self._reused,
            closed=self._closed_count,
            expired=self._expired,
            stale=self._stale,
            pool_timeouts=self._pool_timeouts,
            work=self._work,
        )

    def count_stale(self) -> None:
        """Count a kept-alive connection that failed its request before any response byte."""
        self._stale += 1

    # -- internals --------------------------------------------------------------

    def _take_idle(self) -> Connection | None:
        idle = self._idle
        if not idle:
            return None
        self._expire(trio.current_time())
        while idle:
            self._work += 1
            conn = idle.pop()
            if conn.is_readable():
                self._stale += 1
                self._discard(conn)
                continue
            self._reused += 1
            conn.requests += 1
            self._active.add(conn)
            return conn
        return None

    def _expire(self, now: float) -> None:
        idle = self._idle
        limit = now - self._expiry
        while idle and idle[0].idle_since <= limit:
            self._work += 1
            self._expired += 1
            self._discard(idle.popleft())

    async def _wait(self, where: str) -> Connection | None:
        """Wait in line; return a connection handed over, or ``None`` for a free slot."""
        task = trio.lowlevel.current_task()
        self._waiters[task] = None
        self._work += 1

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiters.pop(task, None)
            self._work += 1
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.move_on_after(self._pool_timeout) as scope:
            result: Connection | None = await trio.lowlevel.wait_task_rescheduled(abort)
            return result
        assert scope.cancelled_caught
        self._pool_timeouts += 1
        raise PoolTimeout(
            f"no free connection for {where} within pool={self._pool_timeout}s: all "
            f"{self._max} connections (Limits.max_connections) were busy; nothing was sent, "
            "so retrying is safe; raise Limits.max_connections or Timeouts.pool"
        )

    async def _open(self, where: str) -> Connection:
        try:
            with trio.move_on_after(self._connect_timeout) as scope:
                conn = await self._opener()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise ConnectError(
                f"cannot connect to {where} ({_describe(exc)}); is the vLLM server "
                "running there? check base_url"
            ) from None
        if scope.cancelled_caught:
            raise ConnectTimeout(
                f"timed out connecting to {where} (connect={self._connect_timeout}s); "
                "is the server up and reachable? raise Timeouts.connect if it is slow to accept"
            )
        if self._closed:
            conn.close()
            raise self._closed_error()
        self._opened += 1
        conn.requests = 1
        self._active.add(conn)
        return conn

    def _free_slot(self) -> None:
        """A reserved or open slot is gone: give it to the first waiter, or drop it."""
        self._work += 1
        if self._waiters and not self._closed:
            task, _ = self._waiters.popitem(last=False)
            trio.lowlevel.reschedule(task, outcome.Value(None))
        else:
            self._count -= 1

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._closed_count += 1
        self._free_slot()

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ClientClosedError:
        return ClientClosedError(
            f"cannot send a request to {self._where}: its tokstream.Client is closed; "
            "use the client inside its `async with` block, or open a new Client"
        )


def _describe(exc: BaseException) -> str:
    """Name what failed; trio's "all attempts failed" and TLS errors keep the cause underneath."""
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        text = f"{text}: {cause.exceptions[0]}"
    elif isinstance(exc, trio.BrokenResourceError) and cause is not None:
        exc, text = cause, str(cause)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
