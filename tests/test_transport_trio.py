"""The trio-native stream transport (``_trio/_http.py``) against real loopback servers.

What it must get right on the wire: keep-alive reuse once a body is read to its
end (vLLM's chunked terminator after ``[DONE]``), error bodies framed by
``Content-Length``, close-delimited bodies, interim ``1xx`` responses, a stale
kept-alive connection retried once, the pool's own timeout (never reported as
a stall), compressed bodies reported, and cancellation that releases every
socket. The recorded-stream scenarios run over both transports in
``test_client.py``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Token
from tokstream.testing import ReplayServer

from .scripted_server import read_request

DATA = Path(__file__).parent / "data"

EVENTS = [
    part + b"\n\n"
    for part in (DATA / "basic_stream.sse").read_bytes().split(b"\n\n")
    if part.strip()
]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
CHUNKED = SSE_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS) + b"0\r\n\r\n"
N_TOKENS = sum(e.count(b'"token_ids":[') for e in EVENTS)  # one ID per event in this recording

# A scripted answer: bytes to send (then keep the connection), or CLOSE (close it
# without a word), or a (bytes, CLOSE) pair (send, then close).
CLOSE = object()


@dataclass
class ScriptedServer:
    """Answers each request with the next scripted action of its connection."""

    scripts: list[list[object]]
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _connection(self, stream: trio.SocketStream) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        buf = bytearray()
        try:
            for action in script:
                request = await read_request(stream, buf)
                if request is None:
                    return
                self.requests.append(request)
                if action is CLOSE:
                    return
                if isinstance(action, tuple):
                    await stream.send_all(action[0])
                    return
                assert isinstance(action, bytes)
                await stream.send_all(action)
            await trio.sleep_forever()
        except trio.BrokenResourceError:
            return
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def serve(nursery: trio.Nursery, *scripts: list[object]) -> ScriptedServer:
    server = ScriptedServer(list(scripts))
    await nursery.start(server.serve)
    return server


async def collect(client: tokstream.Client, **kw: object) -> list[tokstream.Event]:
    async with client.stream([1, 2, 3], **kw) as events:
        return [ev async for ev in events]


def pool_of(client: tokstream.Client) -> tokstream.PoolStatistics:
    pool = client.statistics().pool
    assert pool is not None
    return pool


# -- keep-alive -------------------------------------------------------------------


async def test_fifty_sequential_streams_use_one_connection(replay_server: ReplayServer) -> None:
    async with tokstream.Client(replay_server.url("replay=basic_stream"), model="m") as client:
        for _ in range(50):
            events = await collect(client)
            assert isinstance(events[-1], Done) and len(events) > 1
        pool = pool_of(client)
    assert (pool.opened, pool.reused, pool.closed, pool.stale) == (1, 49, 0, 0)
    assert replay_server.connections_opened == 1 and len(replay_server.requests) == 50


async def test_the_nursery_form_reuses_the_connection_too(replay_server: ReplayServer) -> None:
    async with tokstream.Client(replay_server.url("replay=basic_stream"), model="m") as client:
        for _ in range(5):
            async with trio.open_nursery() as nursery:
                channel = client.start_stream(nursery, [1])
                events = [ev async for ev in channel]
            assert isinstance(events[-1], Done)
        assert pool_of(client).opened == 1
    assert replay_server.connections_opened == 1


async def test_an_error_body_framed_by_length_keeps_the_connection(nursery: trio.Nursery) -> None:
    body = (DATA / "errors" / "prompt_too_long.body").read_bytes()
    error = b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    server = await serve(nursery, [error, CHUNKED, error])
    async with tokstream.Client(server.url(), model="m") as client:
        first = await collect(client)
        second = await collect(client)
        third = await collect(client)
        pool = pool_of(client)
    assert isinstance(first[0], Error) and isinstance(first[0].error, tokstream.BadRequestError)
    assert "maximum context length" in str(first[0].error)
    assert isinstance(second[-1], Done) and len(second) == N_TOKENS + 1
    assert isinstance(third[0], Error) and isinstance(third[0].error, tokstream.BadRequestError)
    assert server.connections == 1 and pool.opened == 1 and pool.reused == 2


async def test_a_close_delimited_body_is_read_to_the_close(nursery: trio.Nursery) -> None:
    body = b"".join(EVENTS)
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    server = await serve(nursery, [(answer + body, CLOSE)])
    async with tokstream.Client(server.url(), model="m") as client:
        for _ in range(2):
            events = await collect(client)
            assert isinstance(events[-1], Done) and len(events) == N_TOKENS + 1
        pool = pool_of(client)
    assert server.connections == 2 and (pool.opened, pool.reused) == (2, 0)


async def test_an_http10_answer_and_interim_responses(nursery: trio.Nursery) -> None:
    body = b"".join(EVENTS)
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    server = await serve(nursery, [answer, CHUNKED])
    async with tokstream.Client(server.url(), model="m") as client:
        for _ in range(2):
            assert isinstance((await collect(client))[-1], Done)
    assert server.connections == 2  # HTTP/1.0 does not keep the connection alive


async def test_a_body_split_anywhere_decodes_the_same(nursery: trio.Nursery) -> None:
    # The whole response dripped a few bytes per send (head included).
    @dataclass
    class Dripping(ScriptedServer):
        async def _connection(self, stream: trio.SocketStream) -> None:
            self.connections += 1
            await stream.receive_some(65536)
            for i in range(0, len(CHUNKED), 7):
                await stream.send_all(CHUNKED[i : i + 7])
                await trio.lowlevel.checkpoint()
            await trio.sleep_forever()

    server = Dripping([])
    await nursery.start(server.serve)
    async with tokstream.Client(server.url(), model="m") as client:
        events = await collect(client)
    tokens = [e for e in events if isinstance(e, Token)]
    assert isinstance(events[-1], Done) and len(tokens) == N_TOKENS


# -- what goes out -----------------------------------------------------------------


async def test_the_request_head_and_body(nursery: trio.Nursery) -> None:
    server = await serve(nursery, [CHUNKED])
    url = f"http://127.0.0.1:{server.port}/v1/"
    async with tokstream.Client(
        url, model="m", api_key="sk-1", headers={"X-Tenant": "t1", "Accept-Encoding": "gzip"}
    ) as client:
        await collect(client, request_id="req-9")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/completions HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["host"] == f"127.0.0.1:{server.port}"
    assert fields["accept"] == "text/event-stream"
    assert fields["accept-encoding"] == "identity"  # never what it cannot decode
    assert fields["authorization"] == "Bearer sk-1"
    assert fields["x-tenant"] == "t1" and fields["x-request-id"] == "req-9"
    assert fields["content-type"] == "application/json"
    assert int(fields["content-length"]) == len(body) and body.startswith(b"{")


def test_headers_that_would_break_framing_are_refused() -> None:
    for headers in ({"x": "a\r\nInjected: 1"}, {"content-length": "5"}, {"bad name": "x"}):
        with pytest.raises(tokstream.InvalidRequest):
            tokstream.Client("http://127.0.0.1:9/v1", model="m", headers=headers)


# -- failures ------------------------------------------------------------------------


async def test_a_stale_kept_alive_connection_is_retried_once(nursery: trio.Nursery) -> None:
    # The first connection answers once, then closes on the next request without
    # a byte: a keep-alive race. The request goes again on a new connection.
    server = await serve(nursery, [CHUNKED, CLOSE], [CHUNKED])
    async with tokstream.Client(server.url(), model="m") as client:
        assert isinstance((await collect(client))[-1], Done)
        events = await collect(client)
        pool = pool_of(client)
    assert isinstance(events[-1], Done) and len(events) == N_TOKENS + 1
    assert (pool.stale, pool.opened) == (1, 2)
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_stale_retry_happens_once_only(nursery: trio.Nursery) -> None:
    # The transport's own resend; the client's RetryPolicy is off here.
    server = await serve(nursery, [CHUNKED, CLOSE], [CLOSE])
    async with tokstream.Client(server.url(), model="m", retry=None) as client:
        assert isinstance((await collect(client))[-1], Done)
        events = await collect(client)
        pool = pool_of(client)
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert type(err) is tokstream.TransportError
    assert "without a response" in str(err) and "retrying is safe" in str(err)
    assert len(server.requests) == 3 and pool.stale == 1


async def test_a_fresh_connection_closed_without_a_response_is_not_retried(
    nursery: trio.Nursery,
) -> None:
    # Not by the transport: the client's RetryPolicy (off here) decides that.
    server = await serve(nursery, [CLOSE])
    async with tokstream.Client(server.url(), model="m", retry=None) as client:
        events = await collect(client)
    assert type(events[0].error) is tokstream.TransportError  # type: ignore[union-attr]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error", "needle"),
    [
        (
            SSE_HEAD.replace(b"chunked\r\n", b"chunked\r\ncontent-encoding: gzip\r\n"),
            "Protocol",
            "compressed",
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "Protocol", "transfer-encoding"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "Protocol", "status line"),
        (SSE_HEAD + b"zz\r\n", "Protocol", "chunk size"),
        (SSE_HEAD + b"%x\r\n%s" % (len(EVENTS[0]), EVENTS[0]), "Remote", "broke mid-stream"),
    ],
)
async def test_responses_it_cannot_read(
    nursery: trio.Nursery, answer: bytes, error: str, needle: str
) -> None:
    server = await serve(nursery, [(answer, CLOSE)])
    async with tokstream.Client(server.url(), model="m") as client:
        events = await collect(client)
        assert pool_of(client).connections == 0  # nothing broken is kept
    err = events[-1]
    assert isinstance(err, Error)
    cls = tokstream.ProtocolError if error == "Protocol" else tokstream.RemoteDisconnected
    assert type(err.error) is cls
    assert needle in str(err.error) and server.url() in str(err.error)


async def test_the_pool_timeout_is_its_own_error_and_no_request_is_sent(
    autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    timeouts = tokstream.Timeouts(pool=2.0, stall=60.0)
    limits = tokstream.Limits(max_connections=1)
    url = replay_server.url("stall=basic_stream,2")
    async with tokstream.Client(url, model="m", timeouts=timeouts, limits=limits) as client:
        async with client.stream([1]) as holding:
            assert isinstance(await holding.__anext__(), Token)
            events = await collect(client)
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert isinstance(err, tokstream.PoolTimeout)
    assert isinstance(err, tokstream.TransportError) and isinstance(err, TimeoutError)
    assert "pool=2.0s" in str(err) and "/completions" in str(err)
    assert len(replay_server.requests) == 1  # the second request never left


async def test_waiting_for_a_connection_is_not_a_stall(
    autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    # Five streams share one connection; each waits far longer than `stall` for
    # it, and none of that counts: the server had not received the request.
    timeouts = tokstream.Timeouts(stall=0.5, first_token=0.5)
    limits = tokstream.Limits(max_connections=1)
    url = replay_server.url("slow=basic_stream")  # 10 ms between events
    results: list[tokstream.Event] = []
    async with tokstream.Client(url, model="m", timeouts=timeouts, limits=limits) as client:

        async def one() -> None:
            results.append((await collect(client))[-1])

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        pool = pool_of(client)
    assert all(isinstance(r, Done) for r in results), results
    assert (pool.opened, pool.reused) == (1, 4)


# -- cancellation and closing ----------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_cancelling_many_streams_releases_every_socket(replay_server: ReplayServer) -> None:
    url = replay_server.url("stall=basic_stream,1")
    before = open_fds()
    async with tokstream.Client(url, model="m") as client:
        started = 0
        all_started = trio.Event()

        async def one() -> None:
            nonlocal started
            async with client.stream([1]) as events:
                await events.__anext__()
                started += 1
                if started == 200:
                    all_started.set()
                await events.__anext__()  # waits: the server sends nothing more
            raise AssertionError("not cancelled")

        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(one)
                await all_started.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        stats = client.statistics()
        assert stats.pool is not None
        assert (stats.streams_open, stats.streams_abandoned) == (0, 200)
        assert (stats.pool.connections, stats.pool.closed) == (0, 200)
    for _ in range(100):
        if replay_server.hangups == 200:
            break
        await trio.sleep(0.01)
    assert replay_server.hangups == 200
    assert open_fds() <= before


async def test_closing_the_channel_stops_the_stream_at_once(
    autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    timeouts = tokstream.Timeouts(stall=100.0)
    url = replay_server.url("stall=basic_stream,3")
    async with tokstream.Client(url, model="m", timeouts=timeouts) as client:
        async with trio.open_nursery() as nursery:
            channel = client.start_stream(nursery, [1])
            assert isinstance(await channel.receive(), Token)
            t0 = trio.current_time()
            await channel.aclose()
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        # Not at the next bytes, not at the stall timeout: right away.
        assert trio.current_time() - t0 < 1.0
        with pytest.raises(trio.ClosedResourceError):
            channel.receive_nowait()
        stats = client.statistics()
        assert (stats.streams_open, stats.streams_abandoned) == (0, 1)


async def test_closing_the_client_closes_streams_still_reading(replay_server: ReplayServer) -> None:
    client = tokstream.Client(replay_server.url("stall=basic_stream,1"), model="m")
    async with client.stream([1]) as events:
        assert isinstance(await events.__anext__(), Token)
        await client.aclose()
        rest = [ev async for ev in events]
    assert len(rest) == 1 and isinstance(rest[0], Error)
    assert isinstance(rest[0].error, tokstream.RemoteDisconnected)
    with trio.fail_after(5):
        await replay_server.hangup_event.wait()


# -- https ------------------------------------------------------------------------


async def test_https_streams_and_keeps_the_connection(nursery: trio.Nursery) -> None:
    import ssl

    import trustme

    from tokstream._trio._config import StreamConfig
    from tokstream._trio._http import TrioTransport
    from tokstream._trio._stream import EventStream, StreamCounters
    from tokstream.core import CompletionRequest

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    accepted = 0

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal accepted
        accepted += 1
        buf = bytearray()
        try:
            while await read_request(stream, buf) is not None:
                await stream.send_all(CHUNKED)
        except trio.BrokenResourceError:
            return

    [listener] = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, host="127.0.0.1"), handler, 0, server_context
    )
    port = listener.transport_listener.socket.getsockname()[1]
    url = f"https://localhost:{port}/v1/completions"

    async def stream_once() -> list[tokstream.Event]:
        config = StreamConfig(url, "m", tokstream.Timeouts(), 1 << 20)
        stream = EventStream._create(
            CompletionRequest.build([1, 2]),
            config=config,
            transport=transport,
            counters=StreamCounters(),
        )
        async with stream as events:
            return [ev async for ev in events]

    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    limits = tokstream.Limits()
    transport = TrioTransport(
        headers={}, timeouts=tokstream.Timeouts(), limits=limits, ssl_context=client_context
    )
    for _ in range(2):
        events = await stream_once()
        assert isinstance(events[-1], Done) and len(events) == N_TOKENS + 1
    assert transport.statistics().opened == 1 and accepted == 1
    await transport.aclose()

    # A certificate the client does not trust (the default context): named as such.
    transport = TrioTransport(headers={}, timeouts=tokstream.Timeouts(), limits=limits)
    events = await stream_once()
    assert len(events) == 1 and isinstance(events[0], Error)
    assert type(events[0].error) is tokstream.ConnectError
    assert "CERTIFICATE_VERIFY_FAILED" in str(events[0].error)
