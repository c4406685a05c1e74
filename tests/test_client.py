"""The trio client against a real loopback HTTP server replaying vLLM recordings."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio.testing
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Token
from tokstream._trio._config import CLOSE_TIMEOUT
from tokstream.testing import ReplayServer

from ._transports import transport

__all__ = ["transport"]  # the fixture every client test runs over

DATA = Path(__file__).parent / "data"


def expected_ids(name: str) -> list[int]:
    ids: list[int] = []
    for line in (DATA / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                ids += choice["token_ids"] or []
    return ids


def expected_text(name: str) -> str:
    out = []
    for line in (DATA / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                out.append(choice["text"])
    return "".join(out)


def prompt_of(name: str) -> list[int]:
    return json.loads((DATA / f"{name}.req.json").read_text())["prompt"]  # type: ignore[no-any-return]


async def settle(server: ReplayServer) -> None:
    """Let the server's tasks notice closed connections."""
    for _ in range(50):
        await trio.testing.wait_all_tasks_blocked()
        if server.connections_closed == server.connections_opened:
            return
        await trio.sleep(0.01)


async def assert_clean(server: ReplayServer, client: tokstream.Client) -> None:
    """Nothing leaked: no stream counted open, every server connection closed."""
    assert client.statistics().streams_open == 0
    await client.aclose()
    await settle(server)
    assert server.connections_opened == server.connections_closed


async def collect(client: tokstream.Client, prompt: object, **kw: object) -> list[tokstream.Event]:
    async with client.stream(prompt, **kw) as events:
        return [ev async for ev in events]


async def test_replay_forced_hermes_round_trip(transport: str, replay_server: ReplayServer) -> None:
    name = "forced_hermes"
    prompt = np.array(prompt_of(name), dtype=np.int32)
    async with tokstream.Client(
        replay_server.url(f"replay={name}"), model="tiny-qwen", transport=transport
    ) as client:
        events = await collect(client, prompt, max_tokens=64, temperature=0.0)
        stats = client.statistics()
    await settle(replay_server)
    tokens = [e for e in events if isinstance(e, Token)]
    done = events[-1]
    assert isinstance(done, Done)
    assert [t.id for t in tokens] == expected_ids(name)
    assert "".join(t.text for t in tokens) == expected_text(name) == done.text
    assert done.token_ids.tolist() == expected_ids(name)
    assert done.prompt_token_ids is not None
    assert done.prompt_token_ids.dtype == np.int32
    assert np.array_equal(done.prompt_token_ids, prompt)
    assert done.finish_reason == "stop" and done.stop_reason is None
    assert done.usage is not None and done.usage.completion_tokens == len(tokens)
    assert done.diagnostics.tokens == len(tokens)
    if transport == "httpx":  # httpx hands over one HTTP chunk (one event) per read
        assert done.diagnostics.sse_events == done.diagnostics.chunks
    else:  # the trio transport reads whatever arrived: one or many chunks per read
        assert 1 <= done.diagnostics.chunks <= done.diagnostics.sse_events
    assert done.diagnostics.time_to_first_token is not None
    assert done.diagnostics.elapsed >= done.diagnostics.time_to_first_token
    sent = replay_server.requests[0].json()
    assert sent["prompt"] == prompt.tolist()
    assert sent["stream"] is True and sent["return_token_ids"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["skip_special_tokens"] is False
    assert sent["max_tokens"] == 64 and sent["model"] == "tiny-qwen"
    assert "top_p" not in sent  # only what is set is sent
    assert replay_server.requests[0].path == f"/replay={name}/v1/completions"
    assert stats == tokstream.ClientStatistics(0, 1, 0, 0, len(tokens))
    assert replay_server.connections_opened == replay_server.connections_closed  # nothing leaked


async def test_stop_string_text_lags_ids_but_concatenation_is_exact(
    transport: str,
    replay_server: ReplayServer,
) -> None:
    name = "stop_string_tool_call_end"
    async with tokstream.Client(
        replay_server.url(f"replay={name}"), model="m", transport=transport
    ) as c:
        events = await collect(c, prompt_of(name))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "</tool_call>"
    assert [e.id for e in events if isinstance(e, Token)] == expected_ids(name)
    assert "".join(e.text for e in events if isinstance(e, Token)) == expected_text(name)


async def test_api_key_request_id_and_health_and_models(
    transport: str, replay_server: ReplayServer
) -> None:
    client = tokstream.Client(
        replay_server.url("replay=basic_stream") + "/", model="m", api_key="k1", transport=transport
    )
    async with client:
        assert "k1" not in repr(client)
        events = await collect(client, [1, 2, 3], request_id="req-42")
        assert isinstance(events[-1], Done)
        assert await client.health() is True
        models = await client.models()
    seen = replay_server.requests[0]
    assert seen.headers["authorization"] == "Bearer k1"
    assert seen.headers["x-request-id"] == "req-42"
    assert seen.path == "/replay=basic_stream/v1/completions"  # trailing slash tolerated
    assert replay_server.requests[1].path == "/replay=basic_stream/health"
    assert models == [tokstream.ModelInfo("tiny-qwen", "vllm", "/models/tiny", 4096)]


async def test_health_is_false_when_unreachable(transport: str) -> None:
    port = _closed_port()
    async with tokstream.Client(
        f"http://127.0.0.1:{port}/v1", model="m", transport=transport
    ) as client:
        assert await client.health() is False
        with pytest.raises(tokstream.ConnectError):
            await client.models()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_names_the_url(transport: str, autojump_clock: MockClock) -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    async with tokstream.Client(url, model="m", transport=transport) as client:
        events = await collect(client, [1, 2])
        assert client.statistics().streams_failed == 1
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert isinstance(err, tokstream.ConnectError)
    assert isinstance(err, tokstream.TransportError)
    assert f"127.0.0.1:{port}/v1/completions" in str(err)
    assert len(err.attempts) == 4 and "4 attempts" in str(err)  # retried by default


@pytest.mark.parametrize(
    ("code", "errfile", "cls", "needle"),
    [
        (400, "prompt_too_long", tokstream.BadRequestError, "maximum context length is 4096"),
        (404, "unknown_model", tokstream.NotFoundError, "does not exist"),
        (400, "temperature_string", tokstream.BadRequestError, "valid number"),
        (500, "text", tokstream.InternalServerError, "Internal Server Error"),
    ],
)
async def test_http_errors(
    transport: str,
    replay_server: ReplayServer,
    code: int,
    errfile: str,
    cls: type,
    needle: str,
    autojump_clock: MockClock,
) -> None:
    async with tokstream.Client(
        replay_server.url(f"status={code},{errfile}"), model="m", transport=transport
    ) as client:
        events = await collect(client, [1, 2])
    # 500 is transient (4 attempts by default); 400 and 404 are never retried.
    assert len(replay_server.requests) == (4 if code == 500 else 1)
    await settle(replay_server)
    assert replay_server.connections_opened == replay_server.connections_closed
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert type(err) is cls
    assert isinstance(err, tokstream.HTTPStatusError)
    assert err.status_code == code
    assert needle in err.server_message
    assert needle in str(err)
    assert err.request_id == "srv-123"
    assert needle in err.body_preview
    if errfile == "unknown_model":
        assert err.param == "model" and err.type == "NotFoundError" and err.code == 404


@pytest.mark.parametrize(
    ("errfile", "needle"),
    [
        ("structured_outputs_bad_regex", "Grammar error"),
        ("oov_token_id_beyond_embedding", "out of vocabulary"),
    ],
)
async def test_in_band_errors(
    transport: str, replay_server: ReplayServer, errfile: str, needle: str
) -> None:
    async with tokstream.Client(
        replay_server.url(f"sse={errfile}"), model="m", transport=transport
    ) as c:
        events = await collect(c, [1])
        await assert_clean(replay_server, c)
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert isinstance(err, tokstream.InBandError)
    assert needle in err.server_message
    assert err.type == "BadRequestError" and err.code == 400


async def test_midstream_in_band_error_keeps_the_tokens(
    transport: str, replay_server: ReplayServer
) -> None:
    name = "midstream_error_internal"
    async with tokstream.Client(
        replay_server.url(f"replay={name}"), model="m", transport=transport
    ) as c:
        events = await collect(c, [1])
        await assert_clean(replay_server, c)
    err = events[-1]
    assert isinstance(err, Error) and isinstance(err.error, tokstream.InBandError)
    assert err.token_ids.tolist() == expected_ids(name)
    assert [e.id for e in events[:-1] if isinstance(e, Token)] == expected_ids(name)


async def test_a_garbage_payload_ends_the_stream_keeping_the_ids_so_far(
    transport: str, replay_server: ReplayServer
) -> None:
    # Issue 10: a payload that is not JSON may have carried IDs, so the stream
    # can never end in Done; it ends at the first one, with what arrived.
    name = "forced_hermes"
    url = replay_server.url(f"garbage={name}")
    async with tokstream.Client(url, model="m", transport=transport) as c:
        events = await collect(c, [1], request_id="req-g")
        await assert_clean(replay_server, c)
    err = events[-1]
    assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
    raw = (DATA / f"{name}.sse").read_text().strip().split("\n\n")
    before = [  # the garbage comes after the second event
        i for part in raw[:2] for ch in json.loads(part[6:])["choices"] for i in ch["token_ids"]
    ]
    assert before and err.token_ids.tolist() == before
    assert [e.id for e in events if isinstance(e, Token)] == before
    message = str(err.error)
    assert "{this is not json" in message and "not valid JSON" in message
    assert "/completions" in message and "request_id=req-g" in message
    assert err.diagnostics.parse_errors == 1
    assert err.diagnostics.parse_error_previews == ("{this is not json",)
    assert len(replay_server.requests) == 1  # a malformed stream is never retried


async def test_junk_that_is_not_sse_is_a_protocol_error(
    transport: str, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(replay_server.url("junk"), model="m", transport=transport) as c:
        events = await collect(c, [1])
        await assert_clean(replay_server, c)
    assert len(events) == 1 and isinstance(events[0], Error)
    assert isinstance(events[0].error, tokstream.ProtocolError)
    # What arrived is said: the status, the content type and the body's start.
    message = str(events[0].error)
    assert "is not an event stream" in message and "HTTP 200" in message
    assert "content-type text/event-stream" in message and "HTTP/1.1 nonsense" in message
    assert len(replay_server.requests) == 1


async def test_oversized_event_is_a_protocol_error_not_unbounded_memory(
    transport: str,
    replay_server: ReplayServer,
) -> None:
    async with tokstream.Client(
        replay_server.url("oversized"), model="m", max_event_size=1024 * 1024, transport=transport
    ) as client:
        events = await collect(client, [1])
        await assert_clean(replay_server, client)
    with trio.fail_after(10):
        await replay_server.hangup_event.wait()
    assert len(events) == 1 and isinstance(events[0], Error)
    err = events[0].error
    assert isinstance(err, tokstream.ProtocolError)
    assert "max_event_size=1048576" in str(err)
    # The client stopped reading soon after the limit, not at the end of 10 MiB.
    assert err.diagnostics is not None
    assert err.diagnostics.bytes_received < 3 * 1024 * 1024


async def test_close_mid_stream_is_remote_disconnected_with_partial_tokens(
    transport: str,
    replay_server: ReplayServer,
) -> None:
    name = "forced_hermes"
    async with tokstream.Client(
        replay_server.url(f"close={name},7"), model="m", transport=transport
    ) as c:
        events = await collect(c, [1])
        await assert_clean(replay_server, c)
    err = events[-1]
    assert isinstance(err, Error)
    assert isinstance(err.error, tokstream.RemoteDisconnected)
    assert isinstance(err.error, tokstream.StreamError)
    assert err.token_ids.tolist() == expected_ids(name)[:7]
    assert [e.id for e in events if isinstance(e, Token)] == expected_ids(name)[:7]


async def test_stall_timeout_carries_diagnostics(
    transport: str, autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    name = "forced_hermes"
    timeouts = tokstream.Timeouts(stall=5.0)
    async with tokstream.Client(
        replay_server.url(f"stall={name},3"), model="m", timeouts=timeouts, transport=transport
    ) as client:
        events = await collect(client, [1])
        await assert_clean(replay_server, client)
    with trio.fail_after(60):
        await replay_server.hangup_event.wait()
    err = events[-1]
    assert isinstance(err, Error)
    assert isinstance(err.error, tokstream.StallTimeout)
    assert isinstance(err.error, TimeoutError)
    msg = str(err.error)
    # httpx reads one HTTP chunk at a time; the trio transport reads what arrived.
    reads = "chunks=3" if transport == "httpx" else "chunks="
    for needle in (
        "stall=5.0s",
        reads,
        "sse_lines=6",
        "events=3",
        "tokens=3",
        "parse_errors=0",
        "buffer=",
        "elapsed=",
    ):
        assert needle in msg
    assert err.token_ids.tolist() == expected_ids(name)[:3]
    assert err.diagnostics.elapsed >= 5.0


async def test_first_token_timeout(
    transport: str, autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    timeouts = tokstream.Timeouts(stall=100.0, first_token=2.0)
    async with tokstream.Client(
        replay_server.url("stall=forced_hermes,0"),
        model="m",
        timeouts=timeouts,
        transport=transport,
    ) as client:
        events = await collect(client, [1])
        await assert_clean(replay_server, client)
    assert len(events) == 1 and isinstance(events[0], Error)
    assert isinstance(events[0].error, tokstream.FirstTokenTimeout)
    assert "first_token=2.0s" in str(events[0].error)


async def test_cancelling_the_scope_closes_the_response(
    transport: str, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(
        replay_server.url("stall=forced_hermes,10"), model="m", transport=transport
    ) as client:
        got: list[int] = []
        with trio.CancelScope() as scope:
            async with client.stream([1]) as events:
                async for ev in events:
                    assert isinstance(ev, Token)
                    got.append(ev.id)
                    if len(got) == 5:
                        scope.cancel()
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        stats = client.statistics()
        assert (stats.streams_open, stats.streams_abandoned, stats.streams_failed) == (0, 1, 0)
        assert 5 <= stats.tokens <= 10  # what had been read when the scope was cancelled
    await settle(replay_server)
    assert got == expected_ids("forced_hermes")[:5], (got, expected_ids("forced_hermes")[:8])
    assert replay_server.hangups == 1
    assert replay_server.connections_opened == replay_server.connections_closed


async def test_leaving_the_block_early_closes_the_response(
    transport: str, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(
        replay_server.url("stall=forced_hermes,10"), model="m", transport=transport
    ) as client:
        async with client.stream([1]) as events:
            async for _ in events:
                break
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        assert client.statistics().streams_open == 0


async def test_nursery_form_gives_the_same_events(
    transport: str, replay_server: ReplayServer
) -> None:
    name = "forced_utf8"
    async with tokstream.Client(
        replay_server.url(f"replay={name}"), model="m", transport=transport
    ) as c:
        direct = await collect(c, [1])
        async with trio.open_nursery() as nursery:
            channel = c.start_stream(nursery, [1])
            async with channel:
                via_channel = [ev async for ev in channel]
    assert [type(e) for e in via_channel] == [type(e) for e in direct]
    assert [e.id for e in via_channel if isinstance(e, Token)] == expected_ids(name)
    assert [e.text for e in via_channel if isinstance(e, Token)] == [
        e.text for e in direct if isinstance(e, Token)
    ]
    assert isinstance(via_channel[-1], Done)


async def test_nursery_form_cancelling_the_nursery_closes_at_once(
    transport: str,
    replay_server: ReplayServer,
) -> None:
    async with tokstream.Client(
        replay_server.url("stall=basic_stream,8"), model="m", transport=transport
    ) as c:
        async with trio.open_nursery() as nursery:
            channel = c.start_stream(nursery, [1])
            first = await channel.receive()
            nursery.cancel_scope.cancel()
        assert isinstance(first, Token)
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        await assert_clean(replay_server, c)
        assert c.statistics().streams_abandoned == 1


async def test_nursery_form_closing_the_channel_stops_at_the_next_bytes(
    transport: str,
    replay_server: ReplayServer,
) -> None:
    name = "basic_stream"
    async with tokstream.Client(
        replay_server.url(f"slow={name}"), model="m", transport=transport
    ) as c:
        async with trio.open_nursery() as nursery:
            channel = c.start_stream(nursery, [1])
            first = await channel.receive()
            await channel.aclose()
        # The pump ended (the nursery exited) without waiting for the stream to
        # finish: the replay_server saw the client hang up mid-response.
        assert isinstance(first, Token)
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        stats = c.statistics()
        assert stats.streams_abandoned == 1 and stats.tokens < len(expected_ids(name))
        await assert_clean(replay_server, c)


async def test_cancelled_before_response_headers_releases_everything(
    transport: str, autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(
        replay_server.url("noheaders"), model="m", transport=transport
    ) as c:
        with trio.move_on_after(3) as scope:
            async with c.stream([1]) as events:
                raise AssertionError(f"entered without headers: {events}")
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await replay_server.hangup_event.wait()
        stats = c.statistics()
        assert (stats.streams_open, stats.streams_abandoned) == (0, 1)
        await assert_clean(replay_server, c)


async def test_health_and_models_do_not_hang_on_a_silent_server(
    transport: str, autojump_clock: MockClock, replay_server: ReplayServer
) -> None:
    timeouts = tokstream.Timeouts(stall=5.0)
    async with tokstream.Client(
        replay_server.url("hang"), model="m", timeouts=timeouts, transport=transport
    ) as c:
        assert await c.health() is False
        with pytest.raises(tokstream.TransportError, match="/hang/v1/models"):
            await c.models()


async def test_invalid_request_raises_before_any_io(
    transport: str, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(
        replay_server.url("replay=basic_stream"), model="m", vocab_size=100, transport=transport
    ) as c:
        with pytest.raises(tokstream.InvalidRequest, match=r"prompt\[1\]=150"):
            c.stream([1, 150])
        with pytest.raises(tokstream.InvalidRequest, match="top_p"):
            c.stream([1], top_p=0)
        with pytest.raises(tokstream.InvalidRequest, match="not a request field"):
            c.stream([1], bogus=1)
        async with trio.open_nursery() as nursery:
            with pytest.raises(tokstream.InvalidRequest, match="n=2"):
                c.start_stream(nursery, [1], n=2)
    assert replay_server.requests == []


async def test_512_concurrent_streams_complete(transport: str, replay_server: ReplayServer) -> None:
    name = "basic_stream"
    want = expected_ids(name)
    results: list[list[int]] = []
    async with tokstream.Client(
        replay_server.url(f"barrier={name},512"), model="m", transport=transport
    ) as c:

        async def one(i: int) -> None:
            async with c.stream([i + 1]) as events:
                ids = [ev.id async for ev in events if isinstance(ev, Token)]
                last = events.statistics()
            assert last.tokens == len(want)
            results.append(ids)

        async with trio.open_nursery() as nursery:
            for i in range(512):
                nursery.start_soon(one, i)
        stats = c.statistics()
    assert len(results) == 512
    # All 512 were open at once: the pool neither capped nor starved them.
    assert replay_server.peak_in_flight == 512
    assert all(ids == want for ids in results)
    assert stats.streams_finished == 512 and stats.streams_failed == 0 and stats.streams_open == 0


# -- lifetime, misuse and bounded closes ----------------------------------------


def test_client_and_stream_are_trio_resources_and_streams_come_from_the_client() -> None:
    assert issubclass(tokstream.Client, trio.abc.AsyncResource)
    assert issubclass(tokstream.EventStream, trio.abc.AsyncResource)
    with pytest.raises(TypeError, match="no public constructor"):
        tokstream.EventStream(tokstream.CompletionRequest.build([1]))


async def test_a_closed_client_says_it_is_closed(
    transport: str, replay_server: ReplayServer
) -> None:
    url = replay_server.url("replay=basic_stream")
    client = tokstream.Client(url, model="m", transport=transport)
    async with client:
        prepared = client.stream([1])  # prepared while open, entered after the close
        assert not client.is_closed
    assert client.is_closed and "closed" in repr(client)

    def check(info: pytest.ExceptionInfo[tokstream.ClientClosedError]) -> None:
        assert isinstance(info.value, RuntimeError)  # also a RuntimeError, as httpx's was
        assert isinstance(info.value, tokstream.UsageError)
        assert "is closed" in str(info.value)

    with pytest.raises(tokstream.ClientClosedError) as info:
        client.stream([1])
    check(info)
    async with trio.open_nursery() as nursery:
        with pytest.raises(tokstream.ClientClosedError) as info:
            client.start_stream(nursery, [1])
        check(info)
    with pytest.raises(tokstream.ClientClosedError) as info:
        await client.complete([1])
    check(info)
    with pytest.raises(tokstream.ClientClosedError) as info:
        await client.models()
    check(info)
    with pytest.raises(tokstream.ClientClosedError) as info:
        await client.health()
    check(info)
    with pytest.raises(tokstream.ClientClosedError) as info:
        async with client:
            raise AssertionError("a closed client was re-entered")
    check(info)
    with pytest.raises(tokstream.ClientClosedError) as info:
        async with prepared:
            raise AssertionError("a stream of a closed client was entered")
    check(info)
    assert url in str(info.value) or "/completions" in str(info.value)
    await client.aclose()  # idempotent
    # The prepared stream was counted and let go; nothing reached the server.
    assert client.statistics() == tokstream.ClientStatistics(0, 0, 0, 1, 0)
    assert replay_server.requests == []


async def test_iterating_a_stream_without_async_with_says_how(
    transport: str, replay_server: ReplayServer
) -> None:
    async with tokstream.Client(
        replay_server.url("replay=basic_stream"), model="m", transport=transport
    ) as client:
        with pytest.raises(tokstream.UsageError) as info:
            async for _ in client.stream([1]):
                raise AssertionError("iterated a stream that was never opened")
        assert isinstance(info.value, RuntimeError)
        assert "async with client.stream(...) as events:" in str(info.value)
        with pytest.raises(tokstream.UsageError, match="never opened"):
            await client.stream([1]).__anext__()
        assert client.statistics() == tokstream.ClientStatistics()
        # Entering once works; entering the same stream again is misuse too.
        stream = client.stream([1])
        async with stream as events:
            assert isinstance([ev async for ev in events][-1], Done)
        with pytest.raises(tokstream.UsageError, match="entered before"):
            async with stream:
                raise AssertionError("entered twice")
    assert len(replay_server.requests) == 1


class _HangingCloseBody(httpx.AsyncByteStream):
    """One SSE event, then silence; closing it never returns (a hung peer)."""

    def __init__(self) -> None:
        self.close_started = False
        self.close_finished = False

    async def __aiter__(self):  # type: ignore[no-untyped-def,override]
        yield (DATA / "basic_stream.sse").read_bytes().split(b"\n\n")[0] + b"\n\n"
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.close_started = True
        await trio.sleep_forever()
        self.close_finished = True


class _HangingCloseTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.body = _HangingCloseBody()
        self.close_started = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=self.body)

    async def aclose(self) -> None:
        self.close_started = True
        await trio.sleep_forever()


async def test_a_hung_peer_cannot_hang_a_cancelled_stream(autojump_clock: MockClock) -> None:
    transport = _HangingCloseTransport()
    with trio.fail_after(60):  # a hang guard: the bound is 5 s of (mock) time
        async with tokstream.Client("http://h.invalid/v1", model="m", transport=transport) as c:
            with trio.CancelScope() as scope:
                async with c.stream([1]) as events:
                    assert isinstance(await events.__anext__(), Token)
                    scope.cancel()
                    t0 = trio.current_time()
                    await events.__anext__()  # raises Cancelled, then the close runs
                    raise AssertionError("not cancelled")
            # The close was shielded (it waited despite the cancellation) and
            # bounded (it gave up on the hung peer).
            assert trio.current_time() - t0 == pytest.approx(CLOSE_TIMEOUT)
            assert transport.body.close_started and not transport.body.close_finished
            assert scope.cancelled_caught
            assert c.statistics().streams_abandoned == 1
            t0 = trio.current_time()
    # Closing the client's pool is bounded the same way.
    assert transport.close_started
    assert trio.current_time() - t0 == pytest.approx(CLOSE_TIMEOUT)
    assert c.is_closed


async def test_transport_names_the_stream_transport(replay_server: ReplayServer) -> None:
    assert tokstream._trio._client.TRANSPORTS == ("trio", "httpx")
    url = replay_server.url("replay=basic_stream")
    for name in (None, "trio", "httpx"):
        async with tokstream.Client(url, model="m", transport=name) as client:
            assert isinstance((await collect(client, [1]))[-1], Done)
            pool = client.statistics().pool
        # Only the trio transport has a pool of its own to count; it is the default.
        if name == "httpx":
            assert pool is None
        else:
            assert pool is not None and pool.opened == 1
    assert len(replay_server.requests) == 3
    for bad in ("h2", 3, object()):
        with pytest.raises(tokstream.InvalidRequest, match="transport"):
            tokstream.Client(replay_server.url("x"), model="m", transport=bad)  # type: ignore[arg-type]
