"""A real loopback HTTP/1.1 server that replays recorded vLLM streams, on trio.

It binds 127.0.0.1 on a free port and sends each SSE event as one HTTP chunk,
as uvicorn does in front of vLLM. The first path segment of the URL picks a
scenario, so one server serves every test: point a client at
``server.url("replay=NAME")``, i.e. ``http://127.0.0.1:PORT/replay=NAME/v1``.

A recordings directory holds ``NAME.sse`` (a stream's body, as
``curl -sN URL/v1/completions -d @request.json > NAME.sse`` saves it) and
``errors/NAME.body`` (an error response's body). Scenarios:

* ``replay=NAME``           the recording, event by event
* ``slow=NAME``             the same, with a 10 ms pause between events
* ``stall=NAME,N``          N events, then silence until the client hangs up
* ``close=NAME,N``          N events, then the socket closes without the last chunk
* ``garbage=NAME``          the recording with non-JSON ``data:`` events interleaved
* ``barrier=NAME,N``        hold every response until N requests are open at once
* ``status=CODE,NAME``      HTTP CODE with ``errors/NAME.body`` (``text``: plain text)
* ``sse=NAME``              HTTP 200 with ``errors/NAME.body`` as the SSE body
* ``junk``                  bytes that are not SSE, then a clean end of body
* ``oversized``             a ``data:`` line that never ends (10 MiB, no newline)
* ``noheaders``, ``hang``   read the request, then send nothing until the client hangs up

``GET .../health`` answers 200 and ``GET .../v1/models`` lists ``tiny-qwen``,
in every scenario but ``hang`` and ``noheaders``. The server records every request, counts
connections, and notices when a client hangs up mid-response. A scenario
that names a missing recording, or an unknown scenario, fails loudly: the
error propagates out of :meth:`ReplayServer.serve` into its nursery.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

__all__ = ["ReceivedRequest", "ReplayServer", "open_replay_server"]


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the replay server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


class ReplayServer:
    """A loopback server replaying recorded SSE streams; see the module docstring.

    Start it with ``await nursery.start(server.serve)``, or use
    :func:`open_replay_server`. The attributes are live counters for assertions.

    Args:
        recordings: The directory of ``NAME.sse`` and ``errors/NAME.body`` files.

    Attributes:
        port: The port, once :meth:`serve` has started.
        requests: Every request received, in order.
        connections_opened: Connections accepted so far.
        connections_closed: Connections closed so far (equal when nothing leaked).
        hangups: Responses that the client abandoned mid-way.
        hangup_event: Set at the first hang-up.
        in_flight: Requests being answered right now.
        peak_in_flight: The most requests ever answered at once.
    """

    def __init__(self, recordings: Path | str | None = None) -> None:
        self.recordings = Path(recordings) if recordings is not None else None
        self.port = 0
        self.requests: list[ReceivedRequest] = []
        self.connections_opened = self.connections_closed = self.hangups = 0
        self.hangup_event = trio.Event()
        self.in_flight = self.peak_in_flight = 0
        self._barrier = trio.Event()

    def url(self, scenario: str) -> str:
        """The base URL (ending in ``/v1``) to give a client for ``scenario``."""
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 and serve until cancelled (``task_status`` gets the port)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    def _read(self, name: str, suffix: str) -> bytes:
        if self.recordings is None:
            raise LookupError(f"replay server: no recordings directory to find {name}{suffix} in")
        path = self.recordings / f"{name}{suffix}"
        if not path.is_file():
            raise LookupError(f"replay server: no recording {path}")
        return path.read_bytes()

    def _events(self, name: str, suffix: str = ".sse") -> list[bytes]:
        body = self._read(name, suffix)
        return [part + b"\n\n" for part in body.split(b"\n\n") if part.strip()]

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections_opened += 1
        buf = bytearray()
        try:
            while True:
                while (end := buf.find(b"\r\n\r\n")) < 0:
                    if not (data := await stream.receive_some(65536)):
                        return
                    buf += data
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    if not (data := await stream.receive_some(65536)):
                        return
                    buf += data
                self.requests.append(ReceivedRequest(method, target, headers, bytes(buf[:length])))
                del buf[:length]
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    if not await self._respond(stream, target):
                        return
                finally:
                    self.in_flight -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.hangups += 1
            self.hangup_event.set()
        finally:
            self.connections_closed += 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _respond(self, stream: trio.SocketStream, target: str) -> bool:
        """Answer one request; return whether the connection stays open."""
        scenario, _, rest = target.strip("/").partition("/")
        kind, _, arg = scenario.partition("=")
        name, _, n = arg.partition(",")
        if kind in ("hang", "noheaders"):
            await _wait_for_hangup(stream)
        if rest == "health":
            await _send_simple(stream, 200, b"", "text/plain")
            return True
        if rest == "v1/models":
            model: dict[str, Any] = {"id": "tiny-qwen", "object": "model", "owned_by": "vllm"}
            model |= {"root": "/models/tiny", "max_model_len": 4096}
            body = json.dumps({"object": "list", "data": [model]}).encode()
            await _send_simple(stream, 200, body, "application/json")
            return True
        if kind == "status":
            code, errfile = int(name), n
            if errfile == "text":
                await _send_simple(stream, code, b"Internal Server Error", "text/plain")
            else:
                body = self._read(f"errors/{errfile}", ".body")
                await _send_simple(stream, code, body, "application/json")
            return True
        if kind == "barrier":
            if self.in_flight >= int(n):
                self._barrier.set()
            with trio.move_on_after(30):
                await self._barrier.wait()
        events = {
            "replay": lambda: self._events(arg),
            "slow": lambda: self._events(arg),
            "barrier": lambda: self._events(name),
            "stall": lambda: self._events(name)[: int(n)],
            "close": lambda: self._events(name)[: int(n)],
            "garbage": lambda: _with_garbage(self._events(arg)),
            "sse": lambda: self._events(f"errors/{arg}", ".body"),
            "junk": lambda: [b"\x00\x01\x02 HTTP/1.1 nonsense\n", b"{]{]}\n\n"],
            "oversized": lambda: [b"data: ", *[b"x" * 65536] * 160],
        }
        if kind not in events:
            raise LookupError(f"replay server: unknown scenario {scenario!r} in {target!r}")
        chunks = events[kind]()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for chunk in chunks:
            await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if kind == "slow":
                await trio.sleep(0.01)
        if kind == "close":
            return False  # drop the connection without the final chunk
        if kind in ("stall", "oversized"):
            await _wait_for_hangup(stream)  # the client must give up, not buffer forever
        await stream.send_all(b"0\r\n\r\n")
        return True


@asynccontextmanager
async def open_replay_server(recordings: Path | str | None = None) -> AsyncIterator[ReplayServer]:
    """Run a :class:`ReplayServer` for the duration of an ``async with`` block.

    Args:
        recordings: The directory of ``NAME.sse`` and ``errors/NAME.body`` files.

    Yields:
        The running server; it stops (its connections closed) when the block exits.
    """
    async with trio.open_nursery() as nursery:
        server = ReplayServer(recordings)
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def _with_garbage(events: list[bytes]) -> list[bytes]:
    mixed: list[bytes] = []
    for i, event in enumerate(events):
        mixed.append(event)
        if i % 5 == 1:
            mixed.append(b"data: {this is not json\n\n")
    return mixed


async def _send_simple(stream: trio.SocketStream, status: int, body: bytes, ctype: str) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
        "x-request-id: srv-123\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)


async def _wait_for_hangup(stream: trio.SocketStream) -> None:
    """Read and drop bytes until the client closes, then raise as a broken write would."""
    while await stream.receive_some(65536):
        pass
    raise trio.BrokenResourceError("client hung up")
