"""The fault matrix of issue 10, section 6: each misbehaving server is one row, one test.

Every row runs over both stream transports against a real loopback server
(``scripted_server.py``) on trio's ``autojump_clock``, with the default
:class:`~tokstream.RetryPolicy`, and asserts four things:

1. the exact error class, and a message that says what happened and where;
2. whether the stream was retried, and how often (the server counts requests;
   the ``Error`` carries one ``Attempt`` each);
3. that the final failure was saved (once, whatever the retries), and that
   replaying the saved record against a healthy server succeeds with the same
   body;
4. that nothing leaked: file descriptors, trio tasks, server connections, the
   client's open streams and pool connections are back where they were.

Rows that end in ``Done`` (a break just after the finish reason) assert the
same, with nothing saved. The transports differ in two rows, by design: the
trio transport reads HTTP/1.1 itself and calls garbage instead of a status
line, or a chunk-size line that is no number, a ``ProtocolError`` (never
retried); httpx maps by exception type only, and its ``RemoteProtocolError``
is a ``TransportError`` before the response (retried) and
``RemoteDisconnected`` mid-body (see ``_trio/_httpx.py``).
"""

from __future__ import annotations

import json
import os
import socket
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, FailedRequest, Token

from ._transports import transport
from .scripted_server import (
    SSE_HEAD,
    Reply,
    ScriptServer,
    chunked,
    serve_script,
    simple_response,
    sse_events,
    sse_response,
)

__all__ = ["transport"]

PROMPT = [1, 2, 3]
IDS = [11, 12, 13, 14]
EVENTS = sse_events(PROMPT, IDS)
OK = Reply(sse_response(EVENTS))
JSON_ERROR = b'{"error": {"message": "%s", "type": "X", "code": %d}}'


def first(k: int) -> bytes:
    """A 200 event stream with the first ``k`` token events, left open."""
    return sse_response(EVENTS[:k], end=False)


def spliced(bad: bytes, k: int = 2) -> bytes:
    """The first ``k`` token events, ``bad``, then the rest of the stream."""
    return sse_response([*EVENTS[:k], bad, *EVENTS[k:]])


def status(code: int, *headers: tuple[str, str]) -> Reply:
    return Reply(simple_response(code, JSON_ERROR % (b"no: %d" % code, code), headers=headers))


def chunk(ids: object, text: str = "y") -> bytes:
    body = {"id": "cmpl-1", "choices": [{"index": 0, "text": text, "token_ids": ids}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


BAD_UTF8 = b'data: {"id":"c","choices":[{"index":0,"text":"\xff","token_ids":[9]}]}\n\n'
FINISHED = sse_events(PROMPT, IDS, usage=False)[:-1]  # every token and the finish; no [DONE]
DRIP = chunked([b": keep-alive\n\n"], end=False)
OVERSIZED = SSE_HEAD + chunked([b"data: " + b"x" * (4 * 1024 * 1024)], end=False)


@dataclass(frozen=True)
class Row:
    """One fault: what the server does, and what the stream must end with.

    ``error`` is the class (``None``: the stream ends in ``Done``), or one per
    transport; ``tries`` is the attempts (one per transport, likewise);
    ``needles`` must all be in the message; ``tokens`` is how many IDs the
    ``Error`` keeps.
    """

    replies: Sequence[Reply]
    error: type[tokstream.TokstreamError] | dict[str, type[tokstream.TokstreamError]] | None
    tries: int | dict[str, int]
    needles: Sequence[str] = ()
    tokens: int = 0
    timeouts: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # no server: "refused" or "dns"


ROWS: dict[str, Row] = {
    # -- the request never got going
    "connection refused": Row(
        (), tokstream.ConnectError, 4, ["127.0.0.1", "/v1/completions", "4 attempts"], url="refused"
    ),
    "DNS failure": Row(
        (), tokstream.ConnectError, 4, ["vllm.example.invalid:8000", "4 attempts"], url="dns"
    ),
    "stall before headers": Row(
        [Reply(b"", then="hang")],
        tokstream.StallTimeout,
        4,
        ["no bytes", "stall=2.0s", "waiting for response headers"],
        timeouts={"stall": 2.0},
    ),
    "garbage instead of HTTP": Row(
        [Reply(b"SSH-2.0-OpenSSH_8.9\r\n\r\n", then="close")],
        {"trio": tokstream.ProtocolError, "httpx": tokstream.TransportError},
        {"trio": 1, "httpx": 4},
        ["SSH-2.0-OpenSSH_8.9"],
    ),
    # -- the stream broke
    "stall mid-stream": Row(
        [Reply(first(2), then="hang")],
        tokstream.StallTimeout,
        1,
        ["no bytes", "stall=2.0s", "waiting for the next bytes", "resume=True"],
        tokens=2,
        timeouts={"stall": 2.0},
    ),
    "RST mid-stream": Row(
        [Reply(first(2), then="reset")], tokstream.RemoteDisconnected, 1, ["broke"], tokens=2
    ),
    "FIN mid-stream": Row(
        [Reply(first(2), then="close")], tokstream.RemoteDisconnected, 1, ["broke"], tokens=2
    ),
    "RST just after the finish reason": Row(
        [Reply(sse_response(FINISHED, end=False), then="reset")], None, 1, tokens=4
    ),
    "FIN just after the finish reason": Row(
        [Reply(sse_response(FINISHED, end=False), then="close")], None, 1, tokens=4
    ),
    "illegal chunked body": Row(
        [Reply(first(2) + b"zz\r\nxx\r\n", then="hang")],
        {"trio": tokstream.ProtocolError, "httpx": tokstream.RemoteDisconnected},
        1,
        ["chunk"],
        tokens=2,
    ),
    "truncated chunked body": Row(
        [Reply(first(2) + b'80\r\ndata: {"id"', then="close")],
        tokstream.RemoteDisconnected,
        1,
        ["broke"],
        tokens=2,
    ),
    "slow drip past total": Row(
        [Reply(first(2), then="drip", drip=DRIP, every=0.5)],
        tokstream.TotalTimeout,
        1,
        ["outlived total=10.0s"],
        tokens=2,
        timeouts={"stall": 2.0, "total": 10.0},
    ),
    # -- the body is not a valid stream
    "garbage body": Row(
        [Reply(SSE_HEAD + chunked([b"\x00\x01 not server-sent events \xff\n\n"]))],
        tokstream.ProtocolError,
        1,
        ["is not an event stream", "HTTP 200"],
    ),
    "cut-short JSON chunk": Row(
        [Reply(spliced(b'data: {"id":"cmpl-1","choices":[{"index":0,"token_ids":[9\n\n'))],
        tokstream.ProtocolError,
        1,
        ["not valid JSON", "IDs may be missing"],
        tokens=2,
    ),
    "invalid UTF-8 in text": Row(
        [Reply(spliced(BAD_UTF8))],
        tokstream.ProtocolError,
        1,
        ["not valid JSON", "IDs may be missing"],
        tokens=2,
    ),
    "oversized event": Row(
        [Reply(OVERSIZED, then="hang")],
        tokstream.ProtocolError,
        1,
        ["max_event_size=65536"],
        options={"max_event_size": 64 * 1024},
    ),
    "wrong types in a chunk": Row(
        [Reply(spliced(chunk("9")))],
        tokstream.ProtocolError,
        1,
        ["unexpected shape", "token_ids"],
        tokens=2,
    ),
    "IDs out of range": Row(
        [Reply(spliced(chunk([2**31])))],
        tokstream.ProtocolError,
        1,
        ["outside int32", "2147483648"],
        tokens=2,
    ),
    "redirect": Row(
        [Reply(simple_response(301, b"", ctype=None, headers=[("location", "https://h/v1")]))],
        tokstream.ProtocolError,
        1,
        ["a redirect (HTTP 301) to 'https://h/v1'"],
    ),
    "a JSON body on a 200": Row(
        [Reply(simple_response(200, b'{"id":"cmpl-1","object":"text_completion"}'))],
        tokstream.ProtocolError,
        1,
        ["content-type application/json", "text_completion", "stream=true"],
    ),
    # -- the server answered with an error
    "400": Row([status(400)], tokstream.BadRequestError, 1, ["HTTP 400", "no: 400"]),
    "401": Row([status(401)], tokstream.AuthenticationError, 1, ["HTTP 401", "no: 401"]),
    "404": Row([status(404)], tokstream.NotFoundError, 1, ["HTTP 404", "no: 404"]),
    "422": Row([status(422)], tokstream.UnprocessableEntityError, 1, ["HTTP 422"]),
    "500": Row([status(500)], tokstream.InternalServerError, 4, ["HTTP 500", "4 attempts"]),
    "503": Row([status(503)], tokstream.InternalServerError, 4, ["HTTP 503", "4 attempts"]),
    "429 with Retry-After": Row(
        [status(429, ("retry-after", "2"))],
        tokstream.RateLimitError,
        8,
        ["HTTP 429", "asked to wait 2s", "8 attempts", "rate_limit_attempts=8"],
    ),
    "in-band error before the first token": Row(
        [Reply(sse_response([b'data: {"error": {"message": "engine died", "code": 500}}\n\n']))],
        tokstream.InBandError,
        4,
        ["engine died", "before any token", "4 attempts"],
    ),
    "in-band error after some tokens": Row(
        [Reply(spliced(b'data: {"error": {"message": "engine died", "code": 500}}\n\n'))],
        tokstream.InBandError,
        1,
        ["engine died", "2 tokens in"],
        tokens=2,
    ),
    "abort finish reason": Row(
        [Reply(sse_response(sse_events(PROMPT, IDS, finish="abort")))],
        tokstream.RequestAborted,
        1,
        ['finish_reason "abort"', "resume=True"],
        tokens=4,
    ),
}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


class _NoSuchHost(trio.abc.HostnameResolver):
    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _per(value: Any, transport: str) -> Any:
    return value[transport] if isinstance(value, dict) else value


@pytest.mark.parametrize("name", ROWS)
async def test_fault(
    name: str, transport: str, nursery: trio.Nursery, autojump_clock: MockClock, tmp_path: Path
) -> None:
    row = ROWS[name]
    cls, tries = _per(row.error, transport), _per(row.tries, transport)
    healthy = await serve_script(nursery, OK)
    server: ScriptServer | None = None
    if row.url == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/v1"
    elif row.url == "dns":
        trio.socket.set_custom_hostname_resolver(_NoSuchHost())
        url = "http://vllm.example.invalid:8000/v1"
    else:
        server = await serve_script(nursery, *row.replies)
        url = server.url()
    saved = tmp_path / "failed"
    before = (_fds(), _tasks())

    async with tokstream.Client(
        url,
        model="m",
        transport=transport,
        timeouts=tokstream.Timeouts(**row.timeouts),
        failed_requests=saved,
        **row.options,
    ) as client:
        async with client.stream(PROMPT, max_tokens=16, request_id="req-f") as stream:
            events = [ev async for ev in stream]
        stats = client.statistics()
    if server is not None:
        await server.settle()

    # 4. Nothing leaked.
    assert (stats.streams_open, stats.streams_finished + stats.streams_failed) == (0, 1)
    if stats.pool is not None:  # the trio transport's pool
        assert (stats.pool.active, stats.pool.waiting) == (0, 0)
    if server is not None:
        assert server.closed == server.connections
    assert (_fds(), _tasks()) == before

    # 1. The exact class and a useful message; the IDs that arrived.
    end = events[-1]
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    delivered = [e.id for e in events if isinstance(e, Token)]
    assert delivered == IDS[: row.tokens] == end.token_ids.tolist()
    if cls is None:
        assert isinstance(end, Done) and end.finish_reason == "length"
        assert not saved.exists() or not os.listdir(saved)
        assert server is not None and server.requests == tries
        return
    assert isinstance(end, Error), end
    assert type(end.error) is cls, end.error
    message = str(end.error)
    for needle in row.needles:
        assert needle in message, (needle, message)
    if server is not None:
        assert f"127.0.0.1:{server.port}/v1/completions" in message
        assert "req-f" in message

    # 2. Retried as the policy says.
    assert [a.number for a in end.attempts] == list(range(1, tries + 1))
    assert all(a.error == cls.__name__ for a in end.attempts)
    assert stats.retries == tries - 1
    if server is not None:
        assert server.requests == tries
        assert all(body == server.bodies[0] for body in server.bodies)

    # 3. Saved once, with every attempt; the record replays against a healthy server.
    assert end.saved_to is not None and os.listdir(saved) == [end.saved_to.name]
    record = FailedRequest.load(end.saved_to)
    assert record.error.class_name == cls.__name__ and len(record.attempts) == tries
    assert record.token_ids.tolist() == IDS[: row.tokens] and record.request_id == "req-f"
    async with tokstream.Client(
        healthy.url(), model="m", transport=transport, failed_requests=False
    ) as again:
        async with again.replay(record) as stream:
            replayed = [ev async for ev in stream]
    assert isinstance(replayed[-1], Done) and replayed[-1].token_ids.tolist() == IDS
    assert healthy.bodies == [json.loads(record.body)]
    assert healthy.bodies[0]["prompt"] == PROMPT


async def test_an_oversized_event_keeps_memory_bounded(
    transport: str, nursery: trio.Nursery
) -> None:
    # 4 MiB without a newline against max_event_size=64 KiB: the client stops
    # at the limit; what it holds stays a few times the limit, not the event.
    server = await serve_script(nursery, Reply(OVERSIZED, then="hang"))
    tracemalloc.start()
    try:
        async with tokstream.Client(
            server.url(), model="m", transport=transport, max_event_size=64 * 1024, retry=None
        ) as client:
            async with client.stream(PROMPT) as stream:
                events = [ev async for ev in stream]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(events[-1], Error) and type(events[-1].error) is tokstream.ProtocolError
    assert peak < 1024 * 1024, peak
    assert events[-1].diagnostics.bytes_received < 1024 * 1024


async def test_a_truncated_tool_call_at_the_end_of_the_stream(
    transport: str, nursery: trio.Nursery, tiny_model_dir: Path
) -> None:
    # The stream itself is fine (it ends at max_tokens); the reply's structure
    # is not, and the parser says so: the call is UNTERMINATED, and
    # raise_for_status() is an OutputError. Nothing is retried or saved.
    from tokstream._tokenizer import Tokenizer
    from tokstream._trio._reply import open_reply

    tok = Tokenizer.load(tiny_model_dir)
    ids = tok.encode('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par').tolist()
    texts = [tok.decode([i]) for i in ids]
    body = sse_events(PROMPT, ids, finish="length", texts=texts)
    server = await serve_script(nursery, Reply(sse_response(body)))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        async with (
            client.stream(PROMPT, max_tokens=len(ids)) as stream,
            open_reply(stream, tokstream.ResponseParser(tok)) as handle,
        ):
            result = await handle.result()
    assert result.done.finish_reason == "length" and server.requests == 1
    (call,) = result.reply.tool_calls
    assert call.status is tokstream.ToolCallStatus.UNTERMINATED
    with pytest.raises(tokstream.OutputError, match="unterminated"):
        call.raise_for_status()


@pytest.mark.parametrize(("stream_transport", "how"), [("trio", "cancel"), ("httpx", "close")])
async def test_cancelling_10000_streams_mid_flight_leaks_no_fd(
    stream_transport: str, nursery: trio.Nursery, how: str
) -> None:
    # Each stream gets its first token and is then cancelled (a cancel scope
    # around it) or abandoned (its channel closed); the server notices each
    # hang-up. The fd count after the first batches is the count at the end.
    # (One way per transport, to keep the run short: both end in the same
    # cancel scope around the response.)
    transport = stream_transport
    server = await serve_script(nursery, Reply(first(2), then="hang"))
    total, batch = 10_000, 200
    counts = []
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:

        async def one(ready: trio.Event) -> None:
            if how == "cancel":
                with trio.CancelScope() as scope:
                    async with client.stream(PROMPT) as stream:
                        async for event in stream:
                            assert isinstance(event, Token)
                            scope.cancel()
                            ready.set()
                            await trio.sleep_forever()
            else:
                async with trio.open_nursery() as inner:
                    channel = client.start_stream(inner, PROMPT)
                    assert isinstance(await channel.receive(), Token)
                    await channel.aclose()
                    ready.set()

        for start in range(0, total, batch):
            async with trio.open_nursery() as streams:
                for _ in range(batch):
                    streams.start_soon(one, trio.Event())
            await server.settle()
            if start // batch in (4, total // batch - 1):
                counts.append((_fds(), server.connections - server.closed))
        stats = client.statistics()
    assert (stats.streams_abandoned, stats.streams_open, stats.streams_failed) == (total, 0, 0)
    assert server.requests == total and server.closed == server.connections
    assert counts[0] == counts[-1], counts  # stable: nothing accumulates
    assert counts[-1][1] == 0
