"""The stream consumers the benchmarks compare: tokstream, its peers, and a floor.

Every consumer reads the same ``/v1/completions`` SSE stream and counts the
token IDs it delivers to its caller, one event object at a time, the way an
application would see them:

* ``floor``: the practical floor. A trio socket, our own bulk HTTP/1.1 chunked
  decoder, a split on blank lines and ``msgspec`` into a typed struct; one batch
  of events per 64 KiB network read. It handles only what the benchmarks send.
* ``httpx_msgspec``: httpx's ``aiter_bytes()``, the same split and msgspec, an
  async generator yielding one event at a time.
* ``httpx_sse``: httpx-sse's ``aconnect_sse`` / ``aiter_sse`` and ``json.loads``.
* ``openai``: the official SDK, ``AsyncOpenAI.completions.create(stream=True,
  extra_body=...)``, IDs from ``choice.model_extra["token_ids"]``, no retries.
* ``tokstream``: ``Client.stream()``, iterated with ``async for`` and ``match``.
* ``tokstream_channel``: ``Client.start_stream()``'s channel, plain ``async for``.
* ``tokstream_parse``: end to end: a :class:`tokstream.Context` prompt,
  ``Client.stream()``, each token fed to the reply's
  :class:`tokstream.ResponseParser` (``builder.new_parser()``), each closed
  ``ReplySegment`` added to the context as a leaf, then ``builder.finish(done)``.

The tokstream consumers pass ``options`` to ``tokstream.Client`` as keyword
arguments, so ``{"transport": "httpx"}`` benchmarks another transport as its own
row (``timeouts`` and ``limits`` given as dicts become ``tokstream.Timeouts`` and
``tokstream.Limits``). Shared clients are built in :meth:`Consumer.open`, outside the timed span.
Every ``stream()`` returns the number of token IDs delivered and calls
``on_ids(n)`` as each event reaches the caller (the latency probe).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import trio

OnIds = Callable[[int], None] | None

# What each consumer needs beyond the project's own dependencies.
REQUIRES = {
    "floor": (),
    "httpx_msgspec": (),
    "httpx_sse": ("httpx_sse",),
    "openai": ("openai",),
    "tokstream": (),
    "tokstream_channel": (),
    "tokstream_parse": (),
}
PEERS = ("floor", "httpx_msgspec", "httpx_sse", "openai")
TOKSTREAM = ("tokstream", "tokstream_channel", "tokstream_parse")


class Config(msgspec.Struct, kw_only=True):
    """What every consumer needs to send its request."""

    base_url: str
    model: str = "qwen3-8b"
    prompt: list[int] = msgspec.field(default_factory=lambda: list(range(1000, 1012)))
    max_tokens: int = 16
    sampling: dict[str, Any] = msgspec.field(default_factory=dict)  # tokstream request fields
    extra_body: dict[str, Any] = msgspec.field(default_factory=dict)
    options: dict[str, Any] = msgspec.field(default_factory=dict)  # tokstream.Client kwargs
    tokenizer: str | None = None  # for tokstream_parse
    no_timeouts: bool = False  # no connect/read/stall timeouts (streams meant to hang)

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
            **self.sampling,
            **self.extra_body,
        }


class TokenEvent:
    """What a minimal client hands its caller per SSE event."""

    __slots__ = ("finish_reason", "text", "token_ids")

    def __init__(self, token_ids: list[int], text: str, finish_reason: str | None) -> None:
        self.token_ids = token_ids
        self.text = text
        self.finish_reason = finish_reason


class _Choice(msgspec.Struct, gc=False):
    text: str = ""
    token_ids: list[int] = []
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] = []


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def _events(payload: bytes) -> list[TokenEvent]:
    chunk = _decode_chunk(payload)
    return [TokenEvent(c.token_ids, c.text, c.finish_reason) for c in chunk.choices]


class ChunkedDecoder:
    """A bulk HTTP/1.1 chunked-body decoder: bytes in, body bytes out (happy path)."""

    __slots__ = ("buf", "done", "remaining", "skip")

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0
        self.skip = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.buf:
            data, self.buf = self.buf + data, b""
        out = []
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.skip = 2
            elif self.skip:
                step = min(self.skip, n - pos)
                pos += step
                self.skip -= step
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.buf = data[pos:]
                    break
                size = int(data[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.done = True
                    break
                self.remaining = size
        return b"".join(out)


class Splitter:
    """Split vLLM's SSE body into events: single ``data:`` lines ended by ``\\n\\n``."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self.tail:
            data = self.tail + data
        parts = data.split(b"\n\n")
        self.tail = parts.pop()
        return parts


class Consumer:
    """Base: ``open()`` (untimed), ``stream()`` per request, ``aclose()``."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/completions"
        self.body = json.dumps(cfg.body()).encode()

    async def open(self) -> None:
        pass

    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class Floor(Consumer):
    async def open(self) -> None:
        u = urlsplit(self.url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.head = (
            f"POST {u.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            "content-type: application/json\r\naccept: text/event-stream\r\n"
            f"content-length: {len(self.body)}\r\n"
        )

    async def _batches(self, key: str | None) -> AsyncIterator[list[TokenEvent]]:
        sock = await trio.open_tcp_stream(self.host, self.port)
        async with sock:
            extra = f"x-request-id: {key}\r\n" if key else ""
            await sock.send_all((self.head + extra + "\r\n").encode() + self.body)
            head = b""
            while b"\r\n\r\n" not in head:
                data = await sock.receive_some(65536)
                if not data:
                    raise RuntimeError("EOF in the response head")
                head += data
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:60])
            chunks, splitter = ChunkedDecoder(), Splitter()
            data = head[head.index(b"\r\n\r\n") + 4 :]
            while True:
                batch: list[TokenEvent] = []
                for part in splitter.feed(chunks.feed(data)):
                    if part.startswith(b"data: "):
                        if part == b"data: [DONE]":
                            if batch:
                                yield batch
                            return
                        batch += _events(part[6:])
                if batch:
                    yield batch
                if chunks.done:
                    return
                data = await sock.receive_some(65536)
                if not data:
                    raise RuntimeError("EOF in the body")

    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        n = 0
        batches = self._batches(key)
        try:
            async for batch in batches:
                for ev in batch:
                    n += len(ev.token_ids)
                    if on_ids is not None:
                        on_ids(len(ev.token_ids))
        finally:
            await batches.aclose()
        return n


class _Httpx(Consumer):
    async def open(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            timeout=None if self.cfg.no_timeouts else httpx.Timeout(120.0, pool=None),
        )
        self.headers = {"content-type": "application/json", "accept": "text/event-stream"}

    async def aclose(self) -> None:
        await self.client.aclose()

    def _headers(self, key: str | None) -> dict[str, str]:
        return {**self.headers, "x-request-id": key} if key else self.headers


class HttpxMsgspec(_Httpx):
    async def _batches(self, key: str | None) -> AsyncIterator[list[TokenEvent]]:
        async with self.client.stream(
            "POST", self.url, content=self.body, headers=self._headers(key)
        ) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}")
            splitter = Splitter()
            async for data in r.aiter_bytes():
                batch: list[TokenEvent] = []
                for part in splitter.feed(data):
                    if part.startswith(b"data: "):
                        if part == b"data: [DONE]":
                            if batch:
                                yield batch
                            return
                        batch += _events(part[6:])
                if batch:
                    yield batch

    async def _events(self, key: str | None) -> AsyncIterator[TokenEvent]:
        batches = self._batches(key)
        try:
            async for batch in batches:
                for ev in batch:
                    yield ev
        finally:
            await batches.aclose()

    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        n = 0
        events = self._events(key)
        try:
            async for ev in events:
                n += len(ev.token_ids)
                if on_ids is not None:
                    on_ids(len(ev.token_ids))
        finally:
            await events.aclose()
        return n


class HttpxSse(_Httpx):
    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        from httpx_sse import aconnect_sse

        n = 0
        loads = json.loads
        async with aconnect_sse(
            self.client, "POST", self.url, content=self.body, headers=self._headers(key)
        ) as source:
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    break
                for c in loads(sse.data)["choices"]:
                    ev = TokenEvent(c["token_ids"], c["text"], c["finish_reason"])
                    n += len(ev.token_ids)
                    if on_ids is not None:
                        on_ids(len(ev.token_ids))
        return n


class OpenAI(Consumer):
    async def open(self) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(
            base_url=self.cfg.base_url, api_key="unused", max_retries=0, timeout=120.0
        )

    async def aclose(self) -> None:
        await self.client.close()

    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        cfg = self.cfg
        n = 0
        response = await self.client.completions.create(
            model=cfg.model,
            prompt=cfg.prompt,
            max_tokens=cfg.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"return_token_ids": True, **cfg.sampling, **cfg.extra_body},
            extra_headers={"x-request-id": key} if key else None,
        )
        async for chunk in response:
            for choice in chunk.choices:
                ids = (choice.model_extra or {}).get("token_ids") or ()
                n += len(ids)
                if on_ids is not None:
                    on_ids(len(ids))
        return n


class Tokstream(Consumer):
    """tokstream, in one of three ways (``kind``): stream, channel, parse."""

    def __init__(self, cfg: Config, kind: str) -> None:
        super().__init__(cfg)
        self.kind = kind

    async def open(self) -> None:
        import tokstream

        self.ts = tokstream
        options = dict(self.cfg.options)
        if self.cfg.no_timeouts:
            options.setdefault("timeouts", {"connect": None, "stall": None, "write": None})
        for name, cls in (("timeouts", tokstream.Timeouts), ("limits", tokstream.Limits)):
            if isinstance(options.get(name), dict):  # JSON from --variant
                options[name] = cls(**options[name])
        self.client = tokstream.Client(self.cfg.base_url, model=self.cfg.model, **options)
        await self.client.__aenter__()
        # numpy loads on first use (tokstream._lazy), normally with the first request's
        # prompt: a once-per-process import, paid here, outside the timed span, as every
        # peer pays its imports before it.
        tokstream.CompletionRequest(self.cfg.prompt, max_tokens=1)
        self.fields: dict[str, Any] = {"max_tokens": self.cfg.max_tokens, **self.cfg.sampling}
        if self.cfg.extra_body:
            self.fields["extra_body"] = self.cfg.extra_body
        if self.kind == "parse":
            if not self.cfg.tokenizer:
                raise RuntimeError("tokstream_parse needs a tokenizer directory (--tokenizer)")
            self.tokenizer = tokstream.Tokenizer.load(self.cfg.tokenizer)
            # The first context and parser over a tokenizer build their tables (up to
            # 0.3 s): a once-per-process cost, paid here, outside the timed span.
            ctx = tokstream.Context(self.tokenizer)
            ctx.add_user("warm up")
            ctx.begin_assistant().new_parser().finish()

    async def aclose(self) -> None:
        await self.client.aclose()

    def _fields(self, key: str | None) -> dict[str, Any]:
        return {**self.fields, "request_id": key} if key else self.fields

    async def stream(self, key: str | None = None, on_ids: OnIds = None) -> int:
        if self.kind == "channel":
            return await self._channel(key, on_ids)
        if self.kind == "parse":
            return await self._parse(key, on_ids)
        Token, Done, Error = self.ts.Token, self.ts.Done, self.ts.Error
        n = 0
        async with self.client.stream(self.cfg.prompt, **self._fields(key)) as events:
            async for event in events:
                match event:
                    case Token():
                        n += 1
                        if on_ids is not None:
                            on_ids(1)
                    case Done():
                        _check_done(event, n)
                    case Error():
                        raise event.error
        return n

    async def _channel(self, key: str | None, on_ids: OnIds) -> int:
        Token, Done, Error = self.ts.Token, self.ts.Done, self.ts.Error
        n = 0
        async with trio.open_nursery() as nursery:
            channel = self.client.start_stream(nursery, self.cfg.prompt, **self._fields(key))
            async with channel:
                async for event in channel:
                    match event:
                        case Token():
                            n += 1
                            if on_ids is not None:
                                on_ids(1)
                        case Done():
                            _check_done(event, n)
                        case Error():
                            raise event.error
        return n

    async def _parse(self, key: str | None, on_ids: OnIds) -> int:
        ts = self.ts
        Token, Done, Error, Segment = ts.Token, ts.Done, ts.Error, ts.ReplySegment
        ctx = ts.Context(self.tokenizer)
        ctx.add_user("Tell me a long story about token streams.")
        builder = ctx.begin_assistant()
        parser = builder.new_parser()
        feed, add = parser.feed, builder.add_segment
        n = 0
        async with self.client.stream(ctx.prompt_ids(), **self._fields(key)) as events:
            async for event in events:
                match event:
                    case Token():
                        for parsed in feed((event,)):
                            if type(parsed) is Segment:
                                add(parsed)
                        n += 1
                        if on_ids is not None:
                            on_ids(1)
                    case Done():
                        _check_done(event, n)
                        for parsed in parser.finish():
                            if type(parsed) is Segment:
                                add(parsed)
                        builder.finish(event)  # checks the leaves' IDs against the stream
                    case Error():
                        raise event.error
        return n


def _check_done(done: Any, n: int) -> None:
    if len(done.token_ids) != n:
        raise RuntimeError(f"Done has {len(done.token_ids)} token IDs, {n} Token events came")


def make(name: str, cfg: Config) -> Consumer:
    """Build the consumer called ``name`` (see the module docstring)."""
    if name == "floor":
        return Floor(cfg)
    if name == "httpx_msgspec":
        return HttpxMsgspec(cfg)
    if name == "httpx_sse":
        return HttpxSse(cfg)
    if name == "openai":
        return OpenAI(cfg)
    if name in TOKSTREAM:
        return Tokstream(cfg, name.partition("_")[2] or "stream")
    raise ValueError(f"unknown consumer {name!r}; expected one of {sorted(REQUIRES)}")
