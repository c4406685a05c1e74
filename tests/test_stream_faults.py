"""The stream-side bugs of issue 10, section 1, each against a real loopback server.

Each test failed before the fix: a payload that could have carried IDs was
skipped and the stream still ended in ``Done``; a negative ID was accepted; a
``Retry-After`` was dropped; a dripping server held a stream forever; a
redirect or a JSON body said only "ended before it finished"; a URL password
reached messages and httpx's log line; an aborted request looked like success.
Every test runs over both stream transports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Token
from tokstream._tokenizer import Tokenizer
from tokstream.testing import ReplayServer

from ._transports import transport
from .scripted_server import (
    Reply,
    chunked,
    serve_script,
    simple_response,
    sse_events,
    sse_response,
)

__all__ = ["transport"]

PROMPT = [1, 2, 3]
IDS = [11, 12, 13, 14]
OK = Reply(sse_response(sse_events(PROMPT, IDS)))


async def collect(client: tokstream.Client, **kw: object) -> list[tokstream.Event]:
    async with client.stream(PROMPT, max_tokens=16, **kw) as events:
        return [ev async for ev in events]


def error_of(events: list[tokstream.Event]) -> Error:
    assert isinstance(events[-1], Error), events[-1]
    return events[-1]


def chunk(ids: list[Any], text: str = "x", **choice: Any) -> bytes:
    body = {"id": "cmpl-1", "choices": [{"index": 0, "text": text, "token_ids": ids, **choice}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


# -- 1. silent token loss --------------------------------------------------------------

BAD_PAYLOADS = {
    "cut short": b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"y","token_ids":[9\n\n',
    "invalid UTF-8": (
        b'data: {"id":"c","choices":[{"index":0,"text":"\xff\xfe","token_ids":[9]}]}\n\n'
    ),
    "lone surrogate": (
        b'data: {"id":"c","choices":[{"index":0,"text":"\\ud800","token_ids":[9]}]}\n\n'
    ),
    "-Infinity": (
        b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"y","token_ids":[9],'
        b'"logprobs":{"token_logprobs":[-Infinity]}}]}\n\n'
    ),
    "wrong shape": b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"y","token_ids":"9"}]}\n\n',
}


@pytest.mark.parametrize("bad", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
async def test_a_bad_payload_mid_stream_never_ends_in_done(
    transport: str, nursery: trio.Nursery, bad: bytes
) -> None:
    events = sse_events(PROMPT, IDS)
    server = await serve_script(nursery, Reply(sse_response([*events[:2], bad, *events[2:]])))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        got = await collect(client, request_id="req-b")
    err = error_of(got)
    assert type(err.error) is tokstream.ProtocolError
    assert err.token_ids.tolist() == IDS[:2] == [e.id for e in got if isinstance(e, Token)]
    message = str(err.error)
    assert "IDs may be missing" in message
    assert bad[6:40].decode("utf-8", "replace") in message  # the payload is shown
    assert f"127.0.0.1:{server.port}/v1/completions (request_id=req-b)" in message
    assert server.requests == 1  # a malformed stream is not retried


async def test_usage_that_disagrees_with_the_ids_is_a_protocol_error(
    transport: str, nursery: trio.Nursery
) -> None:
    events = sse_events(PROMPT, IDS)
    usage = events[-2].replace(b'"completion_tokens": 4', b'"completion_tokens": 5')
    assert usage != events[-2]
    server = await serve_script(nursery, Reply(sse_response([*events[:-2], usage, events[-1]])))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        err = error_of(await collect(client))
    assert type(err.error) is tokstream.ProtocolError
    assert "completion_tokens=5, but 4 token IDs arrived" in str(err.error)
    assert err.token_ids.tolist() == IDS


# -- 2. IDs out of range ------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [-1, -(2**31), 2**31, 2**40])
@pytest.mark.parametrize("where", ["first chunk", "later chunk", "merged chunk"])
async def test_token_ids_out_of_range_are_a_protocol_error_event(
    transport: str, nursery: trio.Nursery, bad_id: int, where: str
) -> None:
    good = chunk([7], prompt_token_ids=PROMPT)
    bad = {
        "first chunk": [chunk([bad_id], prompt_token_ids=PROMPT)],
        "later chunk": [good, chunk([bad_id])],
        "merged chunk": [good, chunk([8, bad_id, 9])],
    }[where]
    server = await serve_script(nursery, Reply(sse_response(bad)))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        # The nursery form: a bad ID once crashed the caller's whole nursery.
        async with trio.open_nursery() as inner:
            channel = client.start_stream(inner, PROMPT)
            got = [ev async for ev in channel]
    err = error_of(got)
    assert type(err.error) is tokstream.ProtocolError
    assert "outside int32" in str(err.error) and str(bad_id) in str(err.error)
    assert err.token_ids.tolist() == ([] if where == "first chunk" else [7])


@pytest.mark.parametrize("bad_id", [-1, 2**31, 2**40])
@pytest.mark.parametrize("via", ["feed_ids", "feed"])
def test_the_parser_refuses_ids_out_of_range_naming_them(
    tiny_model_dir: Path, bad_id: int, via: str
) -> None:
    # It raised a raw OverflowError (and took -1 silently); now the caller's
    # bad input is an InvalidRequest naming the ID, raised by the time the
    # reply is done (a stream's IDs never get here: the decoder checks them).
    parser = tokstream.ResponseParser(Tokenizer.load(tiny_model_dir))
    ids = [9707, bad_id, 11]
    with pytest.raises(tokstream.InvalidRequest, match=rf"ids\[1\]={bad_id}: token IDs must"):
        if via == "feed_ids":
            parser.feed_ids(ids)
        else:
            parser.feed([Token(i, "") for i in ids])
        parser.finish()


# -- 3. time before the request leaves is not a stall ------------------------------------


async def test_500_streams_over_50_connections_wait_without_stalling(
    transport: str, replay_server: ReplayServer, autojump_clock: MockClock
) -> None:
    # Each stream holds its connection ~0.2 s (10 ms between events); the last
    # ones wait about 2 s for a connection, ten times `stall` and `first_token`.
    timeouts = tokstream.Timeouts(stall=0.2, first_token=0.2)
    limits = tokstream.Limits(max_connections=50)
    results: list[tokstream.Event] = []
    async with tokstream.Client(
        replay_server.url("slow=basic_stream"),
        model="m",
        timeouts=timeouts,
        limits=limits,
        transport=transport,
        retry=None,  # a stall would not be retried away
    ) as client:

        async def one() -> None:
            async with client.stream(PROMPT) as events:
                results.append([ev async for ev in events][-1])

        t0 = trio.current_time()
        async with trio.open_nursery() as inner:
            for _ in range(500):
                inner.start_soon(one)
        elapsed = trio.current_time() - t0
    assert elapsed > 10 * timeouts.stall  # streams really did wait for connections
    failed = [r for r in results if not isinstance(r, Done)]
    assert not failed, failed[:3]
    assert len(results) == 500 and replay_server.peak_in_flight <= 50


async def test_a_dns_hang_is_a_connect_timeout_not_a_stall(
    transport: str, autojump_clock: MockClock
) -> None:
    class Hang(trio.abc.HostnameResolver):
        async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
            await trio.sleep_forever()

        async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(Hang())
    timeouts = tokstream.Timeouts(connect=5.0, stall=1.0, first_token=1.0)
    async with tokstream.Client(
        "http://vllm.hang.invalid:8000/v1", model="m", timeouts=timeouts, transport=transport
    ) as client:
        t0 = trio.current_time()
        err = error_of(await collect(client))
        elapsed = trio.current_time() - t0
    assert type(err.error) is tokstream.ConnectTimeout
    assert [a.error for a in err.attempts] == ["ConnectTimeout"] * 4  # retried, never a stall
    assert elapsed == pytest.approx(4 * 5.0 + sum(a.waited for a in err.attempts))
    assert "vllm.hang.invalid:8000" in str(err.error)


# -- 5. total ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "drip", [chunked([b": keep-alive\n\n"], end=False), chunked([b": "], end=False)]
)
async def test_total_ends_a_stream_that_is_never_silent_but_never_finishes(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock, drip: bytes
) -> None:
    start = sse_response(sse_events(PROMPT, IDS[:2], finish=None), end=False)
    server = await serve_script(nursery, Reply(start, then="drip", drip=drip, every=0.5))
    timeouts = tokstream.Timeouts(stall=2.0, total=30.0)
    async with tokstream.Client(
        server.url(), model="m", timeouts=timeouts, transport=transport
    ) as client:
        t0 = trio.current_time()
        err = error_of(await collect(client))
        assert trio.current_time() - t0 == pytest.approx(30.0)
    assert type(err.error) is tokstream.TotalTimeout and isinstance(err.error, TimeoutError)
    assert "total=30.0s" in str(err.error)
    assert err.token_ids.tolist() == IDS[:2] and server.requests == 1


async def test_total_is_off_by_default_and_bounds_the_wait_for_a_connection(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    assert tokstream.Timeouts().total is None
    server = await serve_script(nursery, Reply(sse_response([], end=False), then="hang"))
    timeouts = tokstream.Timeouts(stall=None, total=7.0)
    limits = tokstream.Limits(max_connections=1)
    async with tokstream.Client(
        server.url(), model="m", timeouts=timeouts, limits=limits, transport=transport
    ) as client:
        async with client.stream(PROMPT) as holding:
            t0 = trio.current_time()
            err = error_of(await collect(client))  # waits for the held connection
            assert trio.current_time() - t0 == pytest.approx(7.0)
            await holding.aclose()
    assert type(err.error) is tokstream.TotalTimeout and len(err.attempts) == 1


# -- 6. answers that are not a stream ------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "needles"),
    [
        (
            simple_response(307, b"", ctype=None, headers=[("location", "https://h/v1/c")]),
            ["a redirect (HTTP 307) to 'https://h/v1/c'", "does not follow redirects"],
        ),
        (
            simple_response(200, b'{"id":"cmpl-1","choices":[{"text":"hi"}]}'),
            ["HTTP 200 with content-type application/json", '{"id":"cmpl-1"', "stream=true"],
        ),
        (
            simple_response(200, b"<html><body>Welcome to nginx!</body></html>", ctype="text/html"),
            ["content-type text/html", "Welcome to nginx!"],
        ),
        (
            simple_response(200, b"<html>a proxy page</html>", ctype=None),
            ["not an event stream", "content-type (none)", "<html>a proxy page"],
        ),
    ],
    ids=["redirect", "json", "html", "html-no-content-type"],
)
async def test_answers_that_are_not_a_stream_say_what_arrived(
    transport: str, nursery: trio.Nursery, answer: bytes, needles: list[str]
) -> None:
    server = await serve_script(nursery, Reply(answer), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        err = error_of(await collect(client))
    assert type(err.error) is tokstream.ProtocolError
    for needle in needles:
        assert needle in str(err.error)
    assert f"127.0.0.1:{server.port}/v1/completions" in str(err.error)
    assert server.requests == 1  # not transient: never retried


# -- 7. decoder messages name the URL and request ID ----------------------------------------


async def test_in_band_and_protocol_errors_name_the_url_and_request_id(
    transport: str, nursery: trio.Nursery
) -> None:
    in_band = b'data: {"error": {"message": "bad grammar", "code": 400}}\n\n'
    server = await serve_script(
        nursery, Reply(sse_response([in_band])), Reply(sse_response([chunk([1, 2], "")[:-2]]))
    )
    where = f"127.0.0.1:{server.port}/v1/completions (request_id=req-7)"
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        first = error_of(await collect(client, request_id="req-7")).error
        second = error_of(await collect(client, request_id="req-7")).error
    assert isinstance(first, tokstream.InBandError) and where in str(first)
    assert isinstance(second, tokstream.ProtocolError) and where in str(second)


# -- 8. credentials in the URL ----------------------------------------------------------------


async def test_a_url_password_never_reaches_a_message_a_repr_or_a_log(
    transport: str,
    nursery: trio.Nursery,
    autojump_clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    busy = Reply(simple_response(503, b'{"error": {"message": "busy"}}'))
    server = await serve_script(nursery, OK, busy)
    url = server.url(userinfo="alice:SECRET-PW%21@")
    shown: list[str] = []
    async with tokstream.Client(url, model="m", transport=transport) as client:
        shown += [repr(client), client.base_url, client.completions_url, client.root_url]
        done = await collect(client)
        assert isinstance(done[-1], Done)
        err = error_of(await collect(client))
        shown += [repr(err), str(err.error), repr(err.error), str(err.error.url)]
        shown += [a.message for a in err.attempts]
        assert await client.health() is True  # a GET through httpx, logged by httpx
    # The server got the credentials, as a Basic authorization header.
    assert server.header(0, "authorization") == "Basic YWxpY2U6U0VDUkVULVBXIQ=="  # alice:SECRET-PW!
    assert all(server.header(n, "authorization") for n in range(server.requests))
    assert f"http://127.0.0.1:{server.port}/v1" == shown[1]
    logged = caplog.text
    assert "HTTP Request: GET http://127.0.0.1" in logged  # httpx logged its request
    for text in [*shown, logged]:
        for secret in ("SECRET", "YWxpY2U6U0VDUkVULVBX", "alice"):
            assert secret not in text, text


def test_a_bad_url_with_a_password_is_refused_without_showing_it() -> None:
    for url in ("http://u:SECRET@host:notaport/v1", "ftp://u:SECRET@host/v1"):
        with pytest.raises(tokstream.InvalidRequest) as info:
            tokstream.Client(url, model="m")
        assert "SECRET" not in str(info.value) and "***@host" in str(info.value)


async def test_an_api_key_wins_over_url_credentials(nursery: trio.Nursery) -> None:
    server = await serve_script(nursery, OK)
    async with tokstream.Client(server.url("u:p@"), model="m", api_key="sk-1") as client:
        await collect(client)
    assert server.header(0, "authorization") == "Bearer sk-1"


# -- 9. an aborted request ---------------------------------------------------------------------


async def test_an_aborted_request_is_an_error_keeping_the_ids(
    transport: str, nursery: trio.Nursery
) -> None:
    aborted = sse_events(PROMPT, IDS, finish="abort")
    server = await serve_script(nursery, Reply(sse_response(aborted)), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        got = await collect(client)
        stats = client.statistics()
    err = error_of(got)
    assert type(err.error) is tokstream.RequestAborted
    assert isinstance(err.error, tokstream.StreamError)
    assert err.token_ids.tolist() == IDS and err.text == "".join(f"<{i}>" for i in IDS)
    assert '"abort"' in str(err.error) and "resume=True" in str(err.error)
    assert server.requests == 1 and stats.streams_failed == 1


async def test_an_abort_before_any_token_is_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    abort = chunk([], "", finish_reason="abort")
    server = await serve_script(nursery, Reply(sse_response([abort, b"data: [DONE]\n\n"])), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        got = await collect(client)
    assert isinstance(got[-1], Done) and got[-1].attempts[0].error == "RequestAborted"


# -- a break after the finish ------------------------------------------------------------------


async def test_a_reset_after_the_finish_chunk_still_ends_in_done(
    transport: str, nursery: trio.Nursery
) -> None:
    events = sse_events(PROMPT, IDS, usage=False)  # the finish chunk, then [DONE]
    server = await serve_script(nursery, Reply(sse_response(events[:-1], end=False), then="reset"))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        got = await collect(client)
    assert isinstance(got[-1], Done) and got[-1].token_ids.tolist() == IDS
    assert got[-1].finish_reason == "length"
