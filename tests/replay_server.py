"""A real loopback HTTP/1.1 server that replays recorded vLLM streams.

It binds 127.0.0.1 on a free port and frames each SSE event as one HTTP chunk,
as uvicorn does in front of vLLM. The first path segment picks a scenario, so
one server serves every test: ``http://127.0.0.1:PORT/<scenario>/v1``.

Scenarios (``NAME`` is a recording in tests/data without ``.sse``):

* ``replay=NAME``           the recording, event by event
* ``stall=NAME,N``          N events, then silence until the client hangs up
* ``close=NAME,N``          N events, then the socket closes without the final chunk
* ``garbage=NAME``          the recording with non-JSON ``data:`` events interleaved
* ``junk``                  bytes that are not SSE, then a clean end of body
* ``oversized``             a ``data:`` line that never ends (10 MiB without a newline)
* ``status=CODE,ERRFILE``   HTTP CODE with ``errors/ERRFILE.body`` (``text`` for plain text)
* ``sse=ERRFILE``           HTTP 200 with ``errors/ERRFILE.body`` as the SSE body
* ``slow=NAME``             the recording with a 10 ms pause between events
* ``barrier=NAME,N``        hold every response until N requests are open at once
* ``noheaders``             read the request, then send nothing until the client hangs up
* ``hang``                  like ``noheaders``, for the server-fact GETs too

It records every request and notices when a client hangs up mid-response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import trio

DATA = Path(__file__).parent / "data"


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class ReplayServer:
    """State shared between the server task and the tests."""

    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    connections_opened: int = 0
    connections_closed: int = 0
    hangups: int = 0  # responses the client abandoned mid-way
    hangup_event: trio.Event = field(default_factory=trio.Event)
    in_flight: int = 0  # requests being answered right now
    peak_in_flight: int = 0
    barrier_event: trio.Event = field(default_factory=trio.Event)

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections_opened += 1
        buf = bytearray()
        try:
            while True:
                head = await _read_until(stream, buf, b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                body = bytes(buf[:length])
                del buf[:length]
                self.requests.append(Seen(method, target, headers, body))
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    keep = await self._respond(stream, target)
                finally:
                    self.in_flight -= 1
                if not keep:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.hangups += 1
            self.hangup_event.set()
        finally:
            self.connections_closed += 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _respond(self, stream: trio.SocketStream, target: str) -> bool:
        parts = target.strip("/").split("/")
        scenario, rest = parts[0], "/".join(parts[1:])
        kind, _, arg = scenario.partition("=")
        if kind in ("hang", "noheaders"):
            await _wait_for_hangup(stream)
            return False
        if rest == "health":
            await _send_simple(stream, 200, b"", "text/plain")
            return True
        if rest == "v1/models":
            body = json.dumps(
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "tiny-qwen",
                            "object": "model",
                            "owned_by": "vllm",
                            "root": "/models/tiny",
                            "max_model_len": 4096,
                        }
                    ],
                }
            ).encode()
            await _send_simple(stream, 200, body, "application/json")
            return True
        if kind == "status":
            code, _, name = arg.partition(",")
            if name == "text":
                await _send_simple(stream, int(code), b"Internal Server Error", "text/plain")
            else:
                body = (DATA / "errors" / f"{name}.body").read_bytes()
                await _send_simple(stream, int(code), body, "application/json")
            return True
        if kind == "barrier":
            name, _, n = arg.partition(",")
            if self.in_flight >= int(n):
                self.barrier_event.set()
            with trio.move_on_after(30):
                await self.barrier_event.wait()
            await _send_head(stream)
            await _send_events(stream, _events(name))
            return True
        await _send_head(stream)
        if kind == "replay":
            await _send_events(stream, _events(arg))
        elif kind == "slow":
            await _send_events(stream, _events(arg), delay=0.01)
        elif kind == "garbage":
            mixed: list[bytes] = []
            for i, ev in enumerate(_events(arg)):
                mixed.append(ev)
                if i % 5 == 1:
                    mixed.append(b"data: {this is not json\n\n")
            await _send_events(stream, mixed)
        elif kind == "sse":
            body = (DATA / "errors" / f"{arg}.body").read_bytes()
            await _send_events(stream, _split_events(body))
        elif kind == "junk":
            await _send_events(stream, [b"\x00\x01\x02 HTTP/1.1 nonsense\n", b"{]{]}\n\n"])
        elif kind == "oversized":
            await _send_chunk(stream, b"data: ")
            piece = b"x" * 65536
            for _ in range(160):
                await _send_chunk(stream, piece)
            # Wait for the client to give up; it must not buffer without bound.
            await _wait_for_hangup(stream)
            return False
        elif kind in ("stall", "close"):
            name, _, n = arg.partition(",")
            await _send_events(stream, _events(name)[: int(n)], end=False)
            if kind == "close":
                return False  # drop the connection without the final chunk
            await _wait_for_hangup(stream)
            return False
        else:
            raise AssertionError(f"unknown scenario {scenario!r}")
        return True


def _events(name: str) -> list[bytes]:
    return _split_events((DATA / f"{name}.sse").read_bytes())


def _split_events(body: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in body.split(b"\n\n") if part.strip()]


async def _read_until(stream: trio.SocketStream, buf: bytearray, sep: bytes) -> bytes | None:
    while True:
        i = buf.find(sep)
        if i >= 0:
            head = bytes(buf[:i])
            del buf[: i + len(sep)]
            return head
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data


async def _send_simple(stream: trio.SocketStream, status: int, body: bytes, ctype: str) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
        "x-request-id: srv-123\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)


async def _send_head(stream: trio.SocketStream) -> None:
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )


async def _send_chunk(stream: trio.SocketStream, data: bytes) -> None:
    await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))


async def _send_events(
    stream: trio.SocketStream, events: list[bytes], *, delay: float = 0.0, end: bool = True
) -> None:
    for ev in events:
        await _send_chunk(stream, ev)
        if delay:
            await trio.sleep(delay)
    if end:
        await stream.send_all(b"0\r\n\r\n")


async def _wait_for_hangup(stream: trio.SocketStream) -> None:
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("client hung up")
