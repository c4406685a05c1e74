"""The benchmarks' loopback server: vLLM-shaped SSE streams over HTTP/1.1 on 127.0.0.1.

Run as its own process (pinned to one core) by ``bench_streams.py``::

    python loopback_server.py --core 0 --variant tput=fast:200000 \\
        --variant paced=paced:200:0:20 --variant hold=hold:1

Each ``--variant NAME=MODE:TOKENS[:PROMPT_LEN[:RATE]]`` is served at
``/NAME/v1/completions`` (so a client's base URL is ``http://HOST:PORT/NAME/v1``);
any request body is read and ignored. Responses are framed as uvicorn frames
vLLM's: ``transfer-encoding: chunked``, one HTTP chunk per SSE event, and the
connection is kept alive for the next request. Modes:

* ``fast``: the whole pre-framed response, written as fast as the socket takes it.
* ``paced``: event ``i`` is written with its own ``send()`` at ``t0 + i / RATE``
  (``RATE`` events/s per stream); each send's ``CLOCK_MONOTONIC`` time is logged
  under the request's ``x-request-id`` (or ``x-bench-stream``) header.
* ``hold``: the head and the first event, then nothing until the client hangs up.

``GET /stats`` answers counters as JSON (connections accepted and open,
requests and completed responses per variant, each variant's token count and
first event size). ``GET /sendlog`` answers the paced send log
``{key: [[send_ns, n_ids], ...]}`` and clears it.

The server binds 127.0.0.1 only and stops by itself after ``--deadline`` seconds;
the harness also stops it by PID. It prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import streamgen

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Fri, 21 Nov 2025 23:00:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
SLAB = 256 * 1024
MAX_HEAD = 64 * 1024


@dataclass
class Variant:
    name: str
    mode: str
    rate: float
    stream: streamgen.Stream
    frames: list[bytes] = field(default_factory=list)
    wire: bytes = b""

    @classmethod
    def parse(cls, spec: str, seed: int) -> Variant:
        name, _, rest = spec.partition("=")
        parts = rest.split(":")
        mode, tokens = parts[0], int(parts[1])
        prompt_len = int(parts[2]) if len(parts) > 2 else 0
        rate = float(parts[3]) if len(parts) > 3 else 0.0
        if mode not in ("fast", "paced", "hold") or (mode == "paced" and rate <= 0):
            raise SystemExit(f"bad --variant {spec!r}")
        stream = streamgen.generate(tokens, prompt_len, seed)
        frames = [streamgen.frame(e) for e in stream.events]
        wire = HEAD + b"".join(frames) + streamgen.LAST_CHUNK if mode == "fast" else b""
        return cls(name, mode, rate, stream, frames, wire)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "rate": self.rate,
            "tokens": self.stream.tokens,
            "events": len(self.stream.events),
            "body_bytes": self.stream.body_bytes,
            "text_bytes": self.stream.text_bytes,
            "first_event_bytes": len(self.stream.events[0]),
        }


class Server:
    def __init__(self, variants: dict[str, Variant]) -> None:
        self.variants = variants
        self.connections = 0
        self.open = 0
        self.requests: dict[str, int] = {}
        self.completed: dict[str, int] = {}
        self.send_log: dict[str, list[list[int]]] = {}

    def stats(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "open": self.open,
            "requests": self.requests,
            "completed": self.completed,
            "variants": {k: v.describe() for k, v in self.variants.items()},
        }

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open += 1
        buf = bytearray()
        try:
            while True:
                request = await read_request(stream, buf)
                if request is None:
                    return
                path, headers = request
                if not await self.respond(stream, path, headers):
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return
        finally:
            self.open -= 1
            with trio.move_on_after(1, shield=True):
                with contextlib.suppress(trio.BrokenResourceError, OSError):
                    await stream.aclose()

    async def respond(self, stream: trio.SocketStream, path: str, headers: dict[str, str]) -> bool:
        """Answer one request; return whether the connection can serve another."""
        if path in ("/stats", "/sendlog"):
            if path == "/stats":
                body = json.dumps(self.stats()).encode()
            else:
                body, self.send_log = json.dumps(self.send_log).encode(), {}
            await send_json(stream, 200, body)
            return True
        name = path.strip("/").split("/", 1)[0]
        variant = self.variants.get(name)
        if variant is None or not path.endswith("/completions"):
            await send_json(stream, 404, b'{"error":{"message":"no such variant","code":404}}')
            return True
        self.requests[name] = self.requests.get(name, 0) + 1
        if variant.mode == "fast":
            view = memoryview(variant.wire)
            for i in range(0, len(view), SLAB):
                await stream.send_all(view[i : i + SLAB])
        elif variant.mode == "paced":
            key = headers.get("x-request-id") or headers.get("x-bench-stream") or ""
            log = self.send_log.setdefault(key or f"req{sum(self.requests.values())}", [])
            await stream.send_all(HEAD)
            t0 = trio.current_time() + 0.02
            interval = 1.0 / variant.rate
            now_ns = time.monotonic_ns
            counts = variant.stream.ids_per_event
            for i, (frame, n) in enumerate(zip(variant.frames, counts, strict=True)):
                await trio.sleep_until(t0 + i * interval)
                log.append([now_ns(), n])
                await stream.send_all(frame)
            await stream.send_all(streamgen.LAST_CHUNK)
        else:  # hold: the first event, then wait for the client to hang up
            await stream.send_all(HEAD + variant.frames[0])
            while await stream.receive_some(65536):
                pass
            return False
        self.completed[name] = self.completed.get(name, 0) + 1
        return True


async def read_request(
    stream: trio.SocketStream, buf: bytearray
) -> tuple[str, dict[str, str]] | None:
    """Read one request (head and body) from ``stream``; ``None`` at EOF."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = await stream.receive_some(65536)
        if not data or len(buf) > MAX_HEAD:
            return None
        buf += data
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    del buf[:length]
    parts = lines[0].split()
    return (parts[1] if len(parts) > 1 else "/"), headers


async def send_json(stream: trio.SocketStream, status: int, body: bytes) -> None:
    reason = b"OK" if status == 200 else b"Not Found"
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    await stream.send_all(head % (status, reason, len(body)) + body)


async def serve(args: argparse.Namespace) -> None:
    variants = {}
    for spec in args.variant:
        v = Variant.parse(spec, args.seed)
        variants[v.name] = v
    server = Server(variants)
    listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1", backlog=4096)
    print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
    with trio.move_on_after(args.deadline):
        await trio.serve_listeners(server.handle, listeners)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variant", action="append", default=[], help="NAME=MODE:TOKENS[:PROMPT_LEN[:RATE]]"
    )
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--deadline", type=float, default=900.0)
    args = ap.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(serve, args)


if __name__ == "__main__":
    main()
