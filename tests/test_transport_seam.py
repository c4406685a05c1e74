"""The transport seam: the stream loop needs nothing but the StreamTransport contract.

These drive :class:`EventStream` over a small in-memory transport that imports
no HTTP library and plays a recorded vLLM body back read by read, so that a
second transport (the trio-native one to come) can slot in beside httpx. The
same scenarios over a real loopback socket and httpx are in ``test_client.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import grimp
import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Token
from tokstream._trio._channel import EventChannel
from tokstream._trio._config import StreamConfig, Timeouts
from tokstream._trio._stream import EventStream, StreamCounters, pump
from tokstream._trio._transport import StreamRequest, StreamTransport
from tokstream.core import CompletionRequest, StreamDecoder

DATA = Path(__file__).parent / "data"
URL = "http://memory.invalid/v1/completions"

# A piece is body bytes; an exception is raised by that read; WAIT waits for the deadline.
WAIT = object()


class MemoryResponse:
    """A StreamResponse over scripted reads (not cancel-safe: each read's deadline is its own)."""

    cancel_safe = False

    def __init__(self, pieces: list[object], status: int = 200, request_id: str = "") -> None:
        self.status = status
        self.headers: Mapping[str, str] = {"x-request-id": request_id} if request_id else {}
        self.pieces = list(pieces)
        self.deadlines: list[float] = []
        self.closes = 0
        self.sent_at = 0.0

    async def receive_some(self, deadline: float) -> bytes | None:
        self.deadlines.append(deadline)
        await trio.lowlevel.checkpoint()
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if piece is WAIT:
            await trio.sleep_until(deadline)
            return None
        if isinstance(piece, Exception):
            raise piece
        assert isinstance(piece, bytes) and piece
        return piece

    async def aclose(self) -> None:
        self.closes += 1

    def release_nowait(self) -> bool:
        return False


class TimedResponse:
    """A cancel-safe StreamResponse: each piece arrives at its own (trio) time."""

    cancel_safe = True
    status = 200
    headers: Mapping[str, str] = {}

    def __init__(self, pieces: list[tuple[float, bytes]]) -> None:
        self.pieces = list(pieces)
        self.deadlines: list[float] = []
        self.closes = 0
        self.sent_at = 0.0

    async def receive_some(self, deadline: float) -> bytes | None:
        self.deadlines.append(deadline)
        if not self.pieces:
            await trio.lowlevel.checkpoint()
            return b""
        arrival, piece = self.pieces[0]
        await trio.sleep_until(min(arrival, deadline))
        if trio.current_time() < arrival:
            return None
        self.pieces.pop(0)  # only once it arrived: a cancelled read loses nothing
        return piece

    async def aclose(self) -> None:
        self.closes += 1

    def release_nowait(self) -> bool:
        self.closes += 1
        return True


class MemoryTransport:
    """A StreamTransport whose one response (or failure) is scripted."""

    def __init__(self, response: MemoryResponse | TimedResponse | Exception | None) -> None:
        self.response = response
        self.requests: list[tuple[StreamRequest, float]] = []

    async def open(
        self, request: StreamRequest, head_timeout: float
    ) -> MemoryResponse | TimedResponse | None:
        self.requests.append((request, head_timeout))
        await trio.lowlevel.checkpoint()
        if isinstance(self.response, Exception):
            raise self.response
        if self.response is None:
            await trio.sleep(head_timeout)
            return None
        self.response.sent_at = trio.current_time()
        return self.response

    async def aclose(self) -> None:
        pass


def events_of(name: str) -> list[bytes]:
    """A recording cut into one piece per SSE event, as vLLM sends it."""
    raw = (DATA / f"{name}.sse").read_bytes()
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def open_stream(
    transport: StreamTransport, counters: StreamCounters, **timeouts: float
) -> EventStream:
    config = StreamConfig(URL, "tiny", Timeouts(**timeouts), 1 << 20)
    request = CompletionRequest.build([1, 2, 3], max_tokens=8, request_id="req-7")
    return EventStream._create(request, config=config, transport=transport, counters=counters)


async def collect(stream: EventStream) -> list[tokstream.Event]:
    async with stream as events:
        return [ev async for ev in events]


async def test_a_recording_streams_through_any_transport() -> None:
    pieces = events_of("forced_hermes")
    response = MemoryResponse(list(pieces), request_id="srv-1")
    transport = MemoryTransport(response)
    counters = StreamCounters()
    got = await collect(open_stream(transport, counters))
    decoder = StreamDecoder()
    want = [ev for piece in pieces for ev in decoder.feed(piece)]
    assert [(e.id, e.text) for e in got if isinstance(e, Token)] == [
        (e.id, e.text) for e in want if isinstance(e, Token)
    ]
    done = got[-1]
    assert isinstance(done, Done) and isinstance(want[-1], Done)
    assert done.token_ids.tolist() == want[-1].token_ids.tolist()
    assert done.diagnostics.chunks == len(pieces)  # one decoder feed per read
    # What the loop asked of the transport: one POST with the JSON body and its headers.
    [(request, _)] = transport.requests
    assert request.url == URL and request.request_id == "req-7"
    assert dict(request.headers) == {"content-type": "application/json", "x-request-id": "req-7"}
    body = json.loads(request.body)
    assert body["prompt"] == [1, 2, 3] and body["model"] == "tiny" and body["max_tokens"] == 8
    # The response is released once the terminal event is produced, exactly once.
    assert response.closes == 1
    assert counters.snapshot() == tokstream.ClientStatistics(0, 1, 0, 0, len(got) - 1)


async def test_a_transport_failure_to_open_is_the_error_event() -> None:
    refused = tokstream.ConnectError("refused (test)", url=URL)
    counters = StreamCounters()
    got = await collect(open_stream(MemoryTransport(refused), counters))
    assert len(got) == 1 and isinstance(got[0], Error)
    assert got[0].error is refused
    assert refused.request_id == "req-7" and refused.diagnostics is not None
    assert counters.snapshot().streams_failed == 1


async def test_a_broken_read_keeps_the_tokens_that_arrived() -> None:
    pieces = events_of("forced_hermes")
    dropped = tokstream.RemoteDisconnected("reset (test)")
    response = MemoryResponse([*pieces[:4], dropped, *pieces[4:]])
    got = await collect(open_stream(MemoryTransport(response), StreamCounters()))
    err = got[-1]
    assert isinstance(err, Error) and err.error is dropped
    assert err.token_ids.tolist() == [e.id for e in got if isinstance(e, Token)]
    first = [e.id for e in StreamDecoder().feed(b"".join(pieces[:4])) if isinstance(e, Token)]
    assert first and err.token_ids.tolist() == first
    assert response.closes == 1


async def test_an_error_status_reads_the_body_through_the_transport() -> None:
    body = (DATA / "errors" / "prompt_too_long.body").read_bytes()
    response = MemoryResponse([body[:10], body[10:]], status=400, request_id="srv-9")
    got = await collect(open_stream(MemoryTransport(response), StreamCounters()))
    assert len(got) == 1 and isinstance(got[0], Error)
    err = got[0].error
    assert type(err) is tokstream.BadRequestError
    assert err.request_id == "srv-9" and "maximum context length" in err.server_message
    assert response.closes == 1


async def test_deadlines_are_the_loops_and_none_means_it_passed(autojump_clock: MockClock) -> None:
    response = MemoryResponse([*events_of("forced_hermes")[:2], WAIT])
    transport = MemoryTransport(response)
    t0 = trio.current_time()
    got = await collect(open_stream(transport, StreamCounters(), stall=5.0))
    err = got[-1]
    assert isinstance(err, Error) and isinstance(err.error, tokstream.StallTimeout)
    assert "stall=5.0s" in str(err.error)
    assert trio.current_time() - t0 == pytest.approx(5.0)
    # The head got the stall timeout from when it was sent; every read got the
    # stall deadline from the time it started.
    assert transport.requests[0][1] == 5.0
    assert response.deadlines == [pytest.approx(t0 + 5.0)] * 3


async def test_no_response_head_by_the_deadline(autojump_clock: MockClock) -> None:
    got = await collect(open_stream(MemoryTransport(None), StreamCounters(), first_token=2.0))
    assert len(got) == 1 and isinstance(got[0], Error)
    assert isinstance(got[0].error, tokstream.FirstTokenTimeout)
    assert "waiting for response headers" in str(got[0].error)


def test_the_stream_loop_imports_neither_httpx_nor_its_client() -> None:
    # The seam is real only if the loop works without the first transport's library.
    graph = grimp.build_graph("tokstream", include_external_packages=True)
    targets = ("httpx", "tokstream._trio._httpx", "tokstream._trio._client")
    assert set(targets) <= graph.modules  # httpx is imported, just not from here
    for module in ("tokstream._trio._stream", "tokstream._trio._transport"):
        for target in targets:
            chain = graph.find_shortest_chain(importer=module, imported=target)
            assert chain is None, f"{module} imports {target}: {' -> '.join(chain or ())}"


async def run_nursery_form(stream: EventStream) -> tuple[list[tokstream.Event], float]:
    """Run ``stream`` as ``Client.start_stream`` does; return its events and when it ended."""
    channel = EventChannel._create(16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, stream, channel)
        events = [ev async for ev in channel]
    return events, trio.current_time()


async def test_the_nursery_form_keeps_one_lazy_scope_and_times_out_exactly(
    autojump_clock: MockClock,
) -> None:
    # One event every 3 s for 18 s, then silence: the stream outlives the
    # deadline its scope opened with (stall=5) several times without timing
    # out, and times out exactly 5 s after its last read began.
    t0 = trio.current_time()
    pieces = events_of("forced_hermes")[:6]
    response = TimedResponse([(t0 + 3.0 * (i + 1), p) for i, p in enumerate(pieces)])
    response.pieces.append((t0 + 1000.0, pieces[0]))
    events, ended = await run_nursery_form(
        open_stream(MemoryTransport(response), StreamCounters(), stall=5.0)
    )
    want = [e for e in StreamDecoder().feed(b"".join(pieces)) if isinstance(e, Token)]
    assert [(e.id, e.text) for e in events if isinstance(e, Token)] == [
        (e.id, e.text) for e in want
    ]
    err = events[-1]
    assert isinstance(err, Error) and isinstance(err.error, tokstream.StallTimeout)
    assert ended - t0 == pytest.approx(18.0 + 5.0)
    # No read was given a deadline of its own: the one scope enforced them all.
    assert response.deadlines and all(d == math.inf for d in response.deadlines)
    assert response.closes == 1


async def test_the_nursery_form_gives_each_read_its_deadline_if_reads_are_not_cancel_safe(
    autojump_clock: MockClock,
) -> None:
    response = MemoryResponse([*events_of("forced_hermes")[:2], WAIT])
    t0 = trio.current_time()
    events, ended = await run_nursery_form(
        open_stream(MemoryTransport(response), StreamCounters(), stall=5.0)
    )
    assert isinstance(events[-1], Error) and isinstance(events[-1].error, tokstream.StallTimeout)
    assert ended - t0 == pytest.approx(5.0)
    assert response.deadlines == [pytest.approx(t0 + 5.0)] * 3


async def test_first_token_counts_from_sending_not_from_entering(
    autojump_clock: MockClock,
) -> None:
    # The transport took 10 s to get the request out (a pool wait, a slow
    # connect); first_token=3 still allows 3 s from then.
    class SlowToSend(MemoryTransport):
        async def open(
            self, request: StreamRequest, head_timeout: float
        ) -> MemoryResponse | TimedResponse | None:
            await trio.sleep(10.0)
            return await super().open(request, head_timeout)

    t0 = trio.current_time()
    piece = events_of("forced_hermes")[0]
    response = TimedResponse([(t0 + 12.0, piece)])
    got = await collect(open_stream(SlowToSend(response), StreamCounters(), first_token=3.0))
    assert isinstance(got[0], Token)
    end = got[-1]  # the body ends after that one event: a truncated stream, not a timeout
    assert isinstance(end, Error) and type(end.error) is tokstream.ProtocolError
    assert response.sent_at == pytest.approx(t0 + 10.0)
    assert end.diagnostics.time_to_first_token == pytest.approx(2.0)
    assert end.diagnostics.elapsed == pytest.approx(12.0)  # from entering the stream
