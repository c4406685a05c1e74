"""The transport seam: the stream loop needs nothing but the StreamTransport contract.

These drive :class:`EventStream` over a small in-memory transport that imports
no HTTP library and plays a recorded vLLM body back read by read, so that a
second transport (the trio-native one to come) can slot in beside httpx. The
same scenarios over a real loopback socket and httpx are in ``test_client.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import grimp
import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, Token
from tokstream._trio._config import StreamConfig, Timeouts
from tokstream._trio._stream import EventStream, StreamCounters
from tokstream._trio._transport import StreamRequest, StreamTransport
from tokstream.core import CompletionRequest, StreamDecoder

DATA = Path(__file__).parent / "data"
URL = "http://memory.invalid/v1/completions"

# A piece is body bytes; an exception is raised by that read; WAIT waits for the deadline.
WAIT = object()


class MemoryResponse:
    """A StreamResponse over scripted reads."""

    def __init__(self, pieces: list[object], status: int = 200, request_id: str = "") -> None:
        self.status = status
        self.headers: Mapping[str, str] = {"x-request-id": request_id} if request_id else {}
        self.pieces = list(pieces)
        self.deadlines: list[float] = []
        self.closes = 0

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


class MemoryTransport:
    """A StreamTransport whose one response (or failure) is scripted."""

    def __init__(self, response: MemoryResponse | Exception | None) -> None:
        self.response = response
        self.requests: list[tuple[StreamRequest, float]] = []

    async def open(self, request: StreamRequest, deadline: float) -> MemoryResponse | None:
        self.requests.append((request, deadline))
        await trio.lowlevel.checkpoint()
        if isinstance(self.response, Exception):
            raise self.response
        if self.response is None:
            await trio.sleep_until(deadline)
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
    # Every read got the stall deadline from the time it started.
    assert transport.requests[0][1] == pytest.approx(t0 + 5.0)
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
