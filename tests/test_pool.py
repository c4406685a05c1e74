"""The trio transport's connection pool (``_trio/_pool.py``) over real loopback sockets.

O(1) is shown by counting the pool's bookkeeping steps (``statistics().work``),
never by timing; expiry runs on trio's ``autojump_clock``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import tokstream
from tokstream._trio._config import Limits
from tokstream._trio._connection import Connection, open_connection
from tokstream._trio._pool import ConnectionPool


class Listener:
    """A loopback TCP listener that accepts and holds connections (no HTTP)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.streams: list[trio.SocketStream] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._hold, listeners)

    async def _hold(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self.streams.append(stream)
        await trio.sleep_forever()

    def opener(self) -> object:
        async def connect() -> Connection:
            return await open_connection("127.0.0.1", self.port, None)

        return connect


@pytest.fixture
async def listener(nursery: trio.Nursery) -> Listener:
    server = Listener()
    await nursery.start(server.serve)
    return server


def make_pool(listener: Listener, **limits: object) -> ConnectionPool:
    return ConnectionPool(
        listener.opener(),  # type: ignore[arg-type]
        limits=Limits(**limits),  # type: ignore[arg-type]
        connect_timeout=5.0,
        pool_timeout=None,
        where="http://127.0.0.1",
    )


async def test_release_and_reuse_is_lifo_and_counted(listener: Listener) -> None:
    pool = make_pool(listener)
    a = await pool.acquire()
    b = await pool.acquire()
    pool.release(a, reusable=True)
    pool.release(b, reusable=True)
    assert pool.statistics().idle == 2
    again = await pool.acquire()
    assert again is b and again.requests == 2  # the newest idle one
    stats = pool.statistics()
    assert (stats.opened, stats.reused, stats.active, stats.idle) == (2, 1, 1, 1)
    pool.release(again, reusable=False)
    stats = pool.statistics()
    assert (stats.connections, stats.closed) == (1, 1)
    pool.close()
    assert pool.statistics().connections == 0


async def test_ten_thousand_cancelled_waiters_cost_linear_work(listener: Listener) -> None:
    pool = make_pool(listener, max_connections=1)
    held = await pool.acquire()
    n = 10_000
    before = pool.statistics().work
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(pool.acquire)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.statistics().waiting == n
        nursery.cancel_scope.cancel()
    stats = pool.statistics()
    assert stats.waiting == 0
    # One step to join the queue and one to leave it: linear, whatever the order.
    assert stats.work - before <= 2 * n
    # The slot is still the holder's, and the next waiter gets it when released.
    async with trio.open_nursery() as nursery:
        got: list[Connection] = []

        async def wait_for_it() -> None:
            got.append(await pool.acquire())

        nursery.start_soon(wait_for_it)
        await trio.testing.wait_all_tasks_blocked()
        pool.release(held, reusable=True)
    assert got == [held] and listener.accepted == 1


async def test_waiters_are_served_first_come_first_served(listener: Listener) -> None:
    pool = make_pool(listener, max_connections=1)
    a = await pool.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        conn = await pool.acquire()
        order.append(i)
        await trio.lowlevel.checkpoint()
        pool.release(conn, reusable=True)  # handed straight to the next in line

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
        pool.release(a, reusable=True)
    assert order == list(range(6))
    stats = pool.statistics()
    assert (stats.opened, stats.connections, stats.reused) == (1, 1, 6)
    # A closed connection's slot goes to the first waiter, who opens a new one.
    held = await pool.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, 6)
        await trio.testing.wait_all_tasks_blocked()
        pool.release(held, reusable=False)
    assert order[-1] == 6 and pool.statistics().opened == 2


async def test_idle_connections_expire_lazily(
    autojump_clock: MockClock, listener: Listener
) -> None:
    pool = make_pool(listener, keepalive_expiry=4.0)
    conn = await pool.acquire()
    pool.release(conn, reusable=True)
    await trio.sleep(3.0)
    assert await pool.acquire() is conn  # not yet expired
    pool.release(conn, reusable=True)
    await trio.sleep(4.5)
    assert pool.statistics().idle == 1  # no timer task: nothing happens until used
    fresh = await pool.acquire()
    assert fresh is not conn
    stats = pool.statistics()
    assert (stats.expired, stats.opened, stats.idle, stats.connections) == (1, 2, 0, 1)


async def test_the_idle_list_is_bounded(listener: Listener) -> None:
    pool = make_pool(listener, max_keepalive_connections=2)
    conns = [await pool.acquire() for _ in range(5)]
    for conn in conns:
        pool.release(conn, reusable=True)
    stats = pool.statistics()
    assert (stats.idle, stats.closed, stats.connections) == (2, 3, 2)
    assert await pool.acquire() is conns[-1]  # the newest ones were kept
    none_kept = make_pool(listener, max_keepalive_connections=0)
    conn = await none_kept.acquire()
    none_kept.release(conn, reusable=True)
    assert none_kept.statistics().idle == 0


async def test_an_idle_connection_the_server_closed_is_not_used(listener: Listener) -> None:
    pool = make_pool(listener)
    conn = await pool.acquire()
    pool.release(conn, reusable=True)
    await trio.testing.wait_all_tasks_blocked()  # the server accepted it
    await listener.streams[0].aclose()  # the server closes it while idle
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.01)
    fresh = await pool.acquire()
    assert fresh is not conn
    await trio.testing.wait_all_tasks_blocked()
    assert pool.statistics().stale == 1 and listener.accepted == 2


async def test_pool_timeout_names_its_limit(autojump_clock: MockClock, listener: Listener) -> None:
    pool = ConnectionPool(
        listener.opener(),  # type: ignore[arg-type]
        limits=Limits(max_connections=1),
        connect_timeout=5.0,
        pool_timeout=2.0,
        where="http://127.0.0.1",
    )
    await pool.acquire()
    t0 = trio.current_time()
    with pytest.raises(tokstream.PoolTimeout) as info:
        await pool.acquire(url="http://127.0.0.1/v1/completions", request_id="r-1")
    assert trio.current_time() - t0 == pytest.approx(2.0)
    err = info.value
    assert isinstance(err, tokstream.TransportError) and isinstance(err, TimeoutError)
    assert err.url == "http://127.0.0.1/v1/completions" and err.request_id == "r-1"
    assert "pool=2.0s" in str(err) and "max_connections" in str(err) and "r-1" in str(err)
    assert pool.statistics().pool_timeouts == 1 and pool.statistics().waiting == 0


async def test_connect_errors_free_their_slot() -> None:
    async def refuse() -> Connection:
        raise OSError(111, "Connection refused")

    pool = ConnectionPool(
        refuse,
        limits=Limits(max_connections=1),
        connect_timeout=5.0,
        pool_timeout=None,
        where="http://127.0.0.1:9",
    )
    for _ in range(3):  # the one slot is given back each time
        with pytest.raises(tokstream.ConnectError, match="Connection refused"):
            await pool.acquire()
    assert pool.statistics().connections == 0


async def test_connect_timeout(autojump_clock: MockClock) -> None:
    async def hang() -> Connection:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    pool = ConnectionPool(
        hang, limits=Limits(), connect_timeout=3.0, pool_timeout=None, where="http://10.255.255.1"
    )
    with pytest.raises(tokstream.ConnectTimeout, match=r"connect=3\.0s"):
        await pool.acquire()
    assert pool.statistics().connections == 0


async def test_a_closed_pool_refuses_and_wakes_its_waiters(listener: Listener) -> None:
    pool = make_pool(listener, max_connections=1)
    held = await pool.acquire()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await pool.acquire()
        except tokstream.ClientClosedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        pool.close()
    assert len(errors) == 1
    with pytest.raises(tokstream.ClientClosedError):
        await pool.acquire()
    pool.release(held, reusable=True)  # closed, not kept
    assert pool.statistics().connections == 0
