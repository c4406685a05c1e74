"""A loopback server that answers each request with the next scripted reply, and vLLM-like bodies.

The retry, resume and fault tests count attempts and read what each attempt
sent (the continuation's prompt, its ``max_tokens``), so this server keeps
every request's head and JSON body. A :class:`Reply` is the raw bytes to send
(whole HTTP responses, or a response cut anywhere) and what to do afterwards:
keep the connection for the next request, close it (FIN), reset it (RST), or
hang. A GET (``health()``) is answered 200 and not counted.
:func:`sse_events` and :func:`sse_response` build streams in vLLM's
shape (prompt echo on the first chunk, one chunk per token, the finish, usage,
``[DONE]``), framed one event per chunk as uvicorn does.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

__all__ = [
    "Reply",
    "ScriptServer",
    "chunked",
    "serve_script",
    "simple_response",
    "sse_events",
    "sse_response",
]

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@dataclass
class Reply:
    """One scripted answer: bytes to send, after ``delay`` seconds, then ``then``.

    ``then``: ``"keep"`` (wait for the next request on this connection),
    ``"close"`` (FIN), ``"reset"`` (RST), ``"hang"`` (say nothing more) or
    ``"drip"`` (send ``drip`` every ``every`` seconds until the client leaves).
    """

    data: bytes = b""
    then: str = "keep"
    delay: float = 0.0
    drip: bytes = b""
    every: float = 0.5


@dataclass
class ScriptServer:
    """Answers request ``n`` with ``replies[n]`` (the last reply repeats)."""

    replies: list[Reply]
    port: int = 0
    connections: int = 0
    closed: int = 0
    gets: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        return len(self.bodies)

    async def settle(self) -> None:
        """Wait until every connection the server accepted is closed (its tasks noticed)."""
        for _ in range(100):
            await trio.testing.wait_all_tasks_blocked()
            if self.closed == self.connections:
                return
            await trio.sleep(0.01)

    def header(self, n: int, name: str) -> str | None:
        for line in self.heads[n].decode().split("\r\n")[1:]:
            key, _, value = line.partition(": ")
            if key.lower() == name:
                return value
        return None

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = bytearray()
        try:
            while True:
                request = await read_request(stream, buf)
                if request is None:
                    return
                head, _, body = request.partition(b"\r\n\r\n")
                if head.startswith(b"GET "):
                    self.gets += 1
                    await stream.send_all(simple_response(200, b"", ctype=None))
                    continue
                reply = self.replies[min(len(self.bodies), len(self.replies) - 1)]
                self.heads.append(head)
                self.bodies.append(json.loads(body))
                if reply.delay:
                    await trio.sleep(reply.delay)
                if reply.data:
                    await stream.send_all(reply.data)
                if reply.then == "keep":
                    continue
                if reply.then == "hang":
                    while await stream.receive_some(65536):  # until the client hangs up
                        pass
                    return
                while reply.then == "drip":
                    await trio.sleep(reply.every)
                    await stream.send_all(reply.drip)
                if reply.then == "reset":
                    stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self.closed += 1


async def read_request(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes | None:
    """The next request (head and Content-Length body, if any) from ``stream``; ``None`` at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    fields = bytes(buf[:end]).lower().split(b"content-length: ")
    length = int(fields[1].split(b"\r\n")[0]) if len(fields) > 1 else 0
    while len(buf) < end + length:
        buf += await stream.receive_some(65536)
    request = bytes(buf[: end + length])
    del buf[: end + length]
    return request


async def serve_script(nursery: trio.Nursery, *replies: Reply) -> ScriptServer:
    server = ScriptServer(list(replies))
    await nursery.start(server.serve)
    return server


def _event(payload: Any) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode())


def sse_events(
    prompt: Sequence[int] | None,
    ids: Sequence[int],
    *,
    finish: str | None = "length",
    usage: bool = True,
    texts: Sequence[str] | None = None,
    cid: str = "cmpl-1",
) -> list[bytes]:
    """The events of a vLLM stream: one chunk per ID (echo on the first), finish, usage, [DONE].

    With ``finish=None`` the stream is cut after the last ID: no finish, no
    usage, no ``[DONE]``.
    """
    events = []
    for i, tid in enumerate(ids):
        choice: dict[str, Any] = {
            "index": 0,
            "text": texts[i] if texts is not None else f"<{tid}>",
            "logprobs": None,
            "finish_reason": finish if i == len(ids) - 1 else None,
            "stop_reason": None,
            "token_ids": [tid],
        }
        if i == 0 and prompt is not None:
            choice["prompt_token_ids"] = list(prompt)
        events.append(
            _event({"id": cid, "object": "text_completion", "model": "m", "choices": [choice]})
        )
    if finish is None:
        return [e + b"\n\n" for e in events]
    if usage:
        n = len(prompt or ())
        counts = {"prompt_tokens": n, "completion_tokens": len(ids), "total_tokens": n + len(ids)}
        events.append(
            _event({"id": cid, "object": "text_completion", "choices": [], "usage": counts})
        )
    events.append(b"data: [DONE]")
    return [e + b"\n\n" for e in events]


def chunked(events: Sequence[bytes], *, end: bool = True) -> bytes:
    """The events as HTTP chunks (one each), with the terminator when ``end``."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    return body + (b"0\r\n\r\n" if end else b"")


def sse_response(events: Sequence[bytes], *, end: bool = True, extra: bytes = b"") -> bytes:
    """A whole 200 event-stream response; ``end=False`` leaves the body unterminated."""
    return SSE_HEAD + chunked(events, end=end) + extra


def simple_response(
    status: int,
    body: bytes = b"",
    *,
    ctype: str | None = "application/json",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A response framed by Content-Length (``ctype=None``: no content type)."""
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
    if ctype is not None:
        lines.append(f"content-type: {ctype}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
