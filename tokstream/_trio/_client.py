"""The trio client: one ``httpx.AsyncClient``, token streams as events.

``Client.stream()`` is the ``async with`` form; ``Client.start_stream()`` is the
nursery-explicit form returning a ``trio.MemoryReceiveChannel``. Both yield
``Token`` events then exactly one ``Done`` or ``Error``; runtime failures are
events, not exceptions, so nothing that arrived is lost. Only local validation
raises (``InvalidRequest``), before any I/O.

The stream loop itself lives in ``_stream.py`` (:class:`EventStream`); error
bodies are parsed in ``_http_errors.py``. This module holds the client, its
configuration (:class:`Timeouts`, :class:`Limits`) and the server-fact calls.

Cancellation is trio's: cancelling the enclosing scope, or leaving the
``async with`` early, closes the HTTP response at once (shielded), which makes
vLLM abort the request. No task or connection outlives the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import msgspec
import trio

from .._events import Done, Error, Event
from .._exceptions import InvalidRequest, ProtocolError
from ..core._http_errors import http_status_error
from ..core._request import CompletionRequest
from ..core._sse import DEFAULT_MAX_EVENT_SIZE
from ._stream import EventStream, pump
from ._transport import map_httpx_error

__all__ = ["Client", "ClientStatistics", "Limits", "ModelInfo", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts, in seconds; ``None`` disables one.

    Attributes:
        connect: To open the TCP connection.
        stall: The longest silence (no body bytes, or no response headers)
            tolerated once the request is sent. vLLM sends nothing while a
            request waits in its queue, so keep this above the longest
            expected queue wait.
        first_token: From sending the request to the first token ID.
        write: To send the request body.
    """

    connect: float | None = 10.0
    stall: float | None = 120.0
    first_token: float | None = None
    write: float | None = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "stall", "first_token", "write"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
                or math.isnan(value)
            ):
                raise InvalidRequest(f"timeouts.{name}", value, "must be a positive number or None")


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool limits.

    The default pool is unbounded: one connection per concurrent stream (the
    stock httpx limit of 100 gave PoolTimeout on 312 of 512 streams).

    Attributes:
        max_connections: Cap on open connections; extra streams wait for one.
        max_keepalive_connections: Idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
    """

    max_connections: int | None = None
    max_keepalive_connections: int | None = 64
    keepalive_expiry: float | None = 5.0


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A frozen snapshot of a client's stream counters.

    Attributes:
        streams_open: Streams started and not yet ended.
        streams_finished: Streams that ended with ``Done``.
        streams_failed: Streams that ended with ``Error``.
        streams_abandoned: Streams closed or cancelled before their last event.
        tokens: Token IDs received over all streams.
    """

    streams_open: int = 0
    streams_finished: int = 0
    streams_failed: int = 0
    streams_abandoned: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of ``GET /v1/models``."""

    id: str
    owned_by: str | None = None
    root: str | None = None
    max_model_len: int | None = None


class _ModelCard(msgspec.Struct):
    id: str
    owned_by: str | None = None
    root: str | None = None
    max_model_len: int | None = None


class _ModelList(msgspec.Struct):
    data: list[_ModelCard]


def _check_base_url(base_url: object) -> None:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise InvalidRequest("base_url", base_url, "must be an http:// or https:// URL")
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidRequest("base_url", base_url, f"is not a valid URL ({exc})") from None
    if not url.host:
        raise InvalidRequest("base_url", base_url, "has no host")


def _check_api_key(api_key: object) -> None:
    # Never echo the key: a bad one would otherwise end up in messages and logs.
    if (
        not isinstance(api_key, str)
        or not api_key
        or not api_key.isascii()
        or not api_key.isprintable()
        or any(c.isspace() for c in api_key)
    ):
        raise InvalidRequest(
            "api_key",
            "<redacted>",
            "must be a non-empty printable ASCII string without whitespace "
            "(a key read from a file often ends with a newline)",
        )


class Client:
    """A client for one vLLM server's OpenAI-style API, on trio.

    Use as ``async with tokstream.Client(base_url, model=...) as client:``;
    it owns one ``httpx.AsyncClient`` (and its connection pool) for its
    lifetime.

    Args:
        base_url: The OpenAI-style base including ``/v1``, e.g.
            ``http://127.0.0.1:8000/v1``. A trailing slash is tolerated.
            Streams go to ``{base_url}/completions``; ``health()`` uses the
            server root (``base_url`` without ``/v1``).
        model: The default served model name for requests.
        api_key: Sent as ``Authorization: Bearer ...``. Never logged or saved.
        timeouts: See :class:`Timeouts`.
        limits: See :class:`Limits`.
        vocab_size: If given, prompt IDs ``>= vocab_size`` are rejected
            locally.
        max_event_size: The largest SSE event accepted (default 4 MiB).
        stream_buffer: Buffer size of the channels ``start_stream`` returns.
        headers: Extra HTTP headers for every request.
        transport: An httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        vocab_size: int | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        stream_buffer: int = 4096,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _check_base_url(base_url)
        if api_key is not None:
            _check_api_key(api_key)
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model", model, "must be a non-empty string")
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.completions_url = self.base_url + "/completions"
        self.model = model
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self.vocab_size = vocab_size
        self.max_event_size = max_event_size
        self.stream_buffer = stream_buffer
        all_headers = {"accept": "text/event-stream"}
        all_headers.update(headers or {})
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        t = self.timeouts
        # Server-fact GETs are short: they get a read timeout (streams do their own).
        self._get_timeout = httpx.Timeout(
            connect=t.connect, read=t.stall or 60.0, write=t.write, pool=None
        )
        self._http = httpx.AsyncClient(
            headers=all_headers,
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.write, pool=None),
            limits=httpx.Limits(
                max_connections=self.limits.max_connections,
                max_keepalive_connections=self.limits.max_keepalive_connections,
                keepalive_expiry=self.limits.keepalive_expiry,
            ),
            transport=transport,
            trust_env=False,
        )
        self._open = 0
        self._finished = 0
        self._failed = 0
        self._abandoned = 0
        self._tokens = 0

    def __repr__(self) -> str:
        return f"<tokstream.Client {self.base_url} model={self.model!r}>"

    async def __aenter__(self) -> Client:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (shielded from cancellation)."""
        with trio.CancelScope(shield=True):
            await self._http.aclose()

    # -- streams ------------------------------------------------------------

    def stream(self, request: object, /, **fields: Any) -> EventStream:
        """Prepare a token stream; ``async with`` it to send and iterate events.

        Args:
            request: A :class:`CompletionRequest`, or the prompt token IDs (a
                numpy integer array or a sequence of ints).
            **fields: :class:`CompletionRequest` fields (``max_tokens``,
                ``temperature``, ``priority``, ``extra_body``, ...), overriding
                those of ``request``.

        Returns:
            An :class:`EventStream`. Iterating it yields ``Token`` events and
            then exactly one ``Done`` or ``Error``. Leaving the ``async with``
            early, or cancellation, closes the response and vLLM aborts the
            request.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
        """
        req = CompletionRequest.build(request, **fields)
        if self.vocab_size is not None:
            req.check_vocab(self.vocab_size)
        return EventStream(self, req)

    def start_stream(
        self, nursery: trio.Nursery, request: object, /, **fields: Any
    ) -> trio.MemoryReceiveChannel[Event]:
        """Start a token stream in ``nursery``; return a channel of its events.

        The channel yields the same events as :meth:`stream`: ``Token`` events,
        then exactly one ``Done`` or ``Error``, then it closes.

        To stop a stream at once, cancel ``nursery`` (or a cancel scope around
        the code that owns it): the response closes immediately and vLLM aborts
        the request. Closing the receive channel also stops it, but only when
        the next bytes arrive (a trio memory channel cannot wake a task that is
        waiting on the network), or at the stall timeout if none do.

        Events are sent with ``send_nowait`` while the buffer (``stream_buffer``)
        has room, so a network read costs no await per token; consumers that
        want speed should drain with ``receive_nowait()`` before awaiting
        ``receive()``.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
        """
        stream = self.stream(request, **fields)
        send, receive = trio.open_memory_channel[Event](self.stream_buffer)
        nursery.start_soon(pump, stream, send)
        return receive

    async def complete(self, request: object, /, **fields: Any) -> Done:
        """Stream a request to the end and return its ``Done``.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
            TokstreamError: The stream's error (the ``Error`` event's ``error``).
        """
        async with self.stream(request, **fields) as events:
            async for event in events:
                if isinstance(event, Done):
                    return event
                if isinstance(event, Error):
                    raise event.error
        raise AssertionError("unreachable: a stream always ends with Done or Error")

    # -- server facts -------------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        """Return the served models (``GET {base_url}/models``).

        Raises:
            TransportError: The server could not be reached.
            HTTPStatusError: The server answered with an error status.
            ProtocolError: The body was not a model list.
        """
        url = self.base_url + "/models"
        body = await self._get(url)
        try:
            listing = msgspec.json.decode(body, type=_ModelList)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"GET {url} did not return a model list: {exc}", url=url) from None
        return [ModelInfo(m.id, m.owned_by, m.root, m.max_model_len) for m in listing.data]

    async def health(self) -> bool:
        """Return whether ``GET {root}/health`` answers 200 (False if unreachable)."""
        try:
            response = await self._http.get(self.root_url + "/health", timeout=self._get_timeout)
        except (httpx.HTTPError, httpx.InvalidURL):
            return False
        return response.status_code == 200

    def statistics(self) -> ClientStatistics:
        """Return a frozen snapshot of this client's stream counters."""
        return ClientStatistics(
            self._open, self._finished, self._failed, self._abandoned, self._tokens
        )

    # -- internals ----------------------------------------------------------

    async def _get(self, url: str) -> bytes:
        try:
            response = await self._http.get(url, timeout=self._get_timeout)
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, url=url, request_id=None, started=False) from None
        if response.status_code >= 400:
            raise http_status_error(
                response.status_code,
                response.content,
                url=url,
                request_id=response.headers.get("x-request-id"),
            )
        return response.content

    def _build_http_request(self, request: CompletionRequest) -> httpx.Request:
        headers = {"content-type": "application/json"}
        if request.request_id:
            headers["x-request-id"] = request.request_id
        return self._http.build_request(
            "POST", self.completions_url, content=request.encode(self.model), headers=headers
        )

    def _stream_started(self) -> None:
        self._open += 1

    def _stream_ended(self, ok: bool | None, tokens: int) -> None:
        self._open -= 1
        self._tokens += tokens
        if ok is None:
            self._abandoned += 1
        elif ok:
            self._finished += 1
        else:
            self._failed += 1
