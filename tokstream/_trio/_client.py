"""The trio client: a stream transport and its pool, token streams as events.

``Client.stream()`` is the ``async with`` form; ``Client.start_stream()`` is the
nursery-explicit form returning an :class:`~._channel.EventChannel`. Both yield
``Token`` events then exactly one ``Done`` or ``Error``; runtime failures are
events, not exceptions, so nothing that arrived is lost. Only local validation
(``InvalidRequest``) and misuse (``UsageError``, ``ClientClosedError``) raise,
before any I/O.

The client wires the parts together and owns them: its configuration
(``_config.py``), the stream transport (``_transport.py`` is the seam;
``_http.py``, trio-native with its own pool, is the default and ``_httpx.py``
the alternative) and the counters its streams update. The stream loop is
``_stream.py`` (:class:`EventStream`); it never reaches back into the client.
The client is open from construction until ``aclose()``.

Building a client does no I/O and loads nothing heavy: httpx is imported and
its client built only for ``models()`` / ``health()`` or ``transport="httpx"``,
and the SSL context is built (once per process) on the first https connection.

Cancellation is trio's: cancelling the enclosing scope, or leaving the
``async with`` early, closes the HTTP response at once (shielded, bounded in
time), which makes vLLM abort the request. No task or connection outlives the
stream.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec
import trio

from .._events import Done, Error
from .._exceptions import ClientClosedError, InvalidRequest, ProtocolError, TransportError
from .._failed import FailedRequest, FailedRequestStore, recorder_for
from .._failed._secrets import client_secrets, redact_url
from .._statistics import ClientStatistics
from ..core._http11 import check_header
from ..core._http_errors import http_status_error
from ..core._request import CompletionRequest, check_session_id
from ..core._retry import NO_RETRY, RetryPolicy
from ..core._sse import DEFAULT_MAX_EVENT_SIZE
from ..core._wire import ModelList
from ._channel import EventChannel
from ._config import DEFAULT_REPLICA_HEADER, Limits, StreamConfig, Timeouts
from ._http import TrioTransport
from ._stream import EventStream, StreamCounters, pump
from ._transport import StreamTransport, close_scope

if TYPE_CHECKING:
    import httpx

    from ._httpx import HttpxTransport

__all__ = [
    "TRANSPORTS",
    "Client",
    "ClientStatistics",
    "Limits",
    "ModelInfo",
    "Timeouts",
]

TRANSPORTS: Final = ("trio", "httpx")
"""The stream transports a :class:`Client` can select by name (``transport=``)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of ``GET /v1/models``."""

    id: str
    owned_by: str | None = None
    root: str | None = None
    max_model_len: int | None = None


class _ClientDefault:
    """The ``retry=`` default of a stream: its client's policy."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the client's RetryPolicy>"


CLIENT_DEFAULT: Final = _ClientDefault()


def _check_base_url(base_url: object) -> tuple[str, str | None]:
    """Return the base URL without userinfo, and the ``Basic`` credentials it carried."""
    shown = redact_url(base_url) if isinstance(base_url, str) else base_url
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise InvalidRequest("base_url", shown, "must be an http:// or https:// URL")
    if not base_url.isascii() or not base_url.isprintable() or " " in base_url:
        raise InvalidRequest("base_url", shown, "must be printable ASCII without spaces")
    try:
        url = urlsplit(base_url)
        url.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidRequest(
            "base_url", shown, f"is not a valid URL ({redact_url(str(exc))})"
        ) from None
    if not url.hostname:
        raise InvalidRequest("base_url", shown, "has no host")
    if url.username is None and url.password is None:
        return base_url, None
    # Credentials travel in a header, never in the URL that messages, reprs and
    # httpx's log line show.
    userinfo = f"{unquote(url.username or '')}:{unquote(url.password or '')}"
    basic = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
    return urlunsplit(url._replace(netloc=url.netloc.rpartition("@")[2])), basic


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


class Client(trio.abc.AsyncResource):
    """A client for one vLLM server's OpenAI-style API, on trio.

    Use as ``async with tokstream.Client(base_url, model=...) as client:``. It
    owns its stream transport and connection pool from construction until
    :meth:`aclose` (which the ``async with`` calls); afterwards every method
    that would send raises :class:`~tokstream.ClientClosedError`.

    Args:
        base_url: The OpenAI-style base including ``/v1``, e.g.
            ``http://127.0.0.1:8000/v1``. A trailing slash is tolerated.
            Streams go to ``{base_url}/completions``; ``health()`` uses the
            server root (``base_url`` without ``/v1``). Credentials in it
            (``http://user:password@host/v1``) are sent as ``Authorization:
            Basic`` (unless ``api_key`` or an ``authorization`` header is
            given) and removed from the URL, so that no message, repr or log
            line shows them.
        model: The default served model name for requests.
        api_key: Sent as ``Authorization: Bearer ...``. Never logged or saved.
        timeouts: See :class:`Timeouts`.
        limits: See :class:`Limits`.
        retry: The :class:`RetryPolicy` of every stream (each stream can
            override it): transient failures before the first token are
            retried with jittered backoff by default; ``None`` never retries.
        vocab_size: If given, prompt IDs ``>= vocab_size`` are rejected
            locally.
        max_event_size: The largest SSE event accepted (default 4 MiB).
        stream_buffer: About how many events the channels ``start_stream``
            returns hold before the stream waits for its reader.
        headers: Extra HTTP headers for every request. An ``X-Session-ID``
            here is taken as ``session_id``.
        session_id: The default :attr:`CompletionRequest.session_id` of every
            request (a stream's own ``session_id=`` wins): the router key that
            keeps a conversation on one replica. ``Context`` turns send their
            context's own.
        replica_header: The response header whose value becomes
            ``Done.replica`` / ``Error.replica`` and the failed-request
            record's ``replica``: which replica behind a router served the
            stream. ``None`` reads none. The default, ``x-tokstream-replica``,
            is what the testing kit's replicas send.
        failed_requests: Where failed requests are saved for replay
            (``tokstream replay FILE``; ``Error.saved_to`` names the file):
            ``None`` (the default) for ``$TOKSTREAM_FAILED_DIR`` (``off``:
            nowhere), else ``$XDG_STATE_HOME/tokstream/failed/``, else
            ``~/.local/state/tokstream/failed/``; a directory; a
            :class:`FailedRequestStore` (to set its bounds); or ``False`` to
            save nothing. The API key, the URL's password and sensitive
            header values are never saved.
        transport: The stream transport, one of :data:`TRANSPORTS`:

            * ``"trio"`` (the default): HTTP/1.1 straight over a trio socket
              (TLS for https), with its own connection pool; the fastest.
            * ``"httpx"``: through httpx, the choice behind an HTTP proxy or
              for HTTP/2.
            * an ``httpx.AsyncBaseTransport`` instance, to run httpx over it
              instead of the network: ``httpx.MockTransport`` in tests, or
              ``httpx.AsyncHTTPTransport(...)`` with custom socket options.
              An instance serves ``models()`` and ``health()`` too.

            ``models()`` and ``health()`` always go through httpx (imported
            on first use).

    Raises:
        InvalidRequest: A bad argument (the API key is never echoed).
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
        session_id: str | None = None,
        replica_header: str | None = DEFAULT_REPLICA_HEADER,
        transport: str | httpx.AsyncBaseTransport | None = None,
        failed_requests: FailedRequestStore | str | os.PathLike[str] | Literal[False] | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, immutable
    ) -> None:
        given_url = base_url
        base_url, basic = _check_base_url(base_url)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidRequest("retry", retry, "must be a tokstream.RetryPolicy or None")
        self._retry = retry if retry is not None else NO_RETRY
        if api_key is not None:
            _check_api_key(api_key)
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model", model, "must be a non-empty string")
        name, http_transport = _check_transport(transport)
        secrets = client_secrets(given_url, api_key, headers)
        if basic is not None:
            secrets = (*secrets, basic.partition(" ")[2])
        recorder = recorder_for(failed_requests, secrets)
        self._base_url = base_url.rstrip("/")
        self._root_url = self._base_url[:-3] if self._base_url.endswith("/v1") else self._base_url
        self._limits = limits or Limits()
        self._config = StreamConfig(
            url=self._base_url + "/completions",
            model=model,
            timeouts=timeouts or Timeouts(),
            max_event_size=max_event_size,
            failed_requests=recorder,
            replica_header=None if replica_header is None else check_header(replica_header, "x")[0],
        )
        self.vocab_size = vocab_size
        self.stream_buffer = stream_buffer
        all_headers = {"accept": "text/event-stream"}
        for key, value in (headers or {}).items():
            key, value = check_header(key, value)
            if key in ("content-length", "transfer-encoding"):
                raise InvalidRequest("headers", key, "is set by tokstream (it frames the body)")
            if key == "x-session-id":
                session_id = value if session_id is None else session_id
                continue  # sent per request, so that a stream's own session wins
            all_headers[key] = value
        if session_id is not None:
            session_id = check_session_id(session_id)
        self._session_id = session_id
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        if basic is not None and "authorization" not in all_headers:
            all_headers["authorization"] = basic
        self._headers = all_headers
        self._http_transport = http_transport
        self._http: HttpxTransport | None = None  # built on first use (GETs, or streams)
        self._trio: TrioTransport | None = None
        self._transport: StreamTransport
        if name == "trio":
            self._trio = TrioTransport(
                headers=all_headers, timeouts=self._config.timeouts, limits=self._limits
            )
            self._transport = self._trio
        else:
            self._transport = self._httpx()
        self._counters = StreamCounters()
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<tokstream.Client {self._base_url} model={self.model!r}{state}>"

    # -- configuration, fixed at construction ------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, without a trailing slash."""
        return self._base_url

    @property
    def session_id(self) -> str | None:
        """The default session key of this client's requests, if any."""
        return self._session_id

    @property
    def root_url(self) -> str:
        """The server root (``base_url`` without ``/v1``), where ``/health`` is."""
        return self._root_url

    @property
    def completions_url(self) -> str:
        """Where streams go: ``{base_url}/completions``."""
        return self._config.url

    @property
    def model(self) -> str:
        """The default served model name for requests."""
        return self._config.model

    @property
    def timeouts(self) -> Timeouts:
        """The client's :class:`Timeouts`."""
        return self._config.timeouts

    @property
    def retry(self) -> RetryPolicy:
        """The streams' default :class:`RetryPolicy` (one attempt if built with ``retry=None``)."""
        return self._retry

    @property
    def limits(self) -> Limits:
        """The connection pool's :class:`Limits`."""
        return self._limits

    @property
    def max_event_size(self) -> int:
        """The largest SSE event accepted, in bytes."""
        return self._config.max_event_size

    @property
    def failed_requests(self) -> FailedRequestStore | None:
        """Where this client saves failed requests, or ``None`` when it does not.

        With the default option the environment is read on first use (this
        property, or the first failure), not when the client is built.
        """
        recorder = self._config.failed_requests
        return None if recorder is None else recorder.store

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` was called (the client can no longer send)."""
        return self._closed

    # -- lifetime -----------------------------------------------------------

    async def __aenter__(self) -> Client:
        """Return the client, open.

        Raises:
            ClientClosedError: It was closed before; a client is not reopened.
        """
        self._check_open()
        return self

    async def aclose(self) -> None:
        """Close the transport and its connection pool; idempotent.

        Streams still open lose their connection. Shielded from cancellation
        and bounded in time, so that a hung peer cannot hold it forever.
        Afterwards, every method that would send raises ``ClientClosedError``.
        """
        if self._closed:
            return
        self._closed = True
        with close_scope():
            if self._trio is not None:
                await self._trio.aclose()
            if self._http is not None:
                await self._http.aclose()

    # -- streams ------------------------------------------------------------

    def stream(
        self,
        request: object,
        /,
        *,
        # Typed ``object`` so that ``**fields: object`` call sites type-check;
        # checked at run time (InvalidRequest).
        retry: object = CLIENT_DEFAULT,
        resume: object = None,
        **fields: Any,
    ) -> EventStream:
        """Prepare a token stream; ``async with`` it to send and iterate events.

        Args:
            request: A :class:`CompletionRequest`, or the prompt token IDs (a
                numpy integer array or a sequence of ints).
            retry: This stream's :class:`RetryPolicy` or ``None`` (default:
                the client's policy; ``None``: one attempt).
            resume: A bool or ``None``: continue the stream from the tokens
                received if it drops (``True``; greedy or seeded sampling
                only, see :class:`RetryPolicy`), or never (``False``); default
                (``None``): the policy's ``resume``. ``True`` with
                ``retry=None`` uses the default policy's attempts.
            **fields: :class:`CompletionRequest` fields (``max_tokens``,
                ``temperature``, ``priority``, ``extra_body``, ...), overriding
                those of ``request``.

        Returns:
            An :class:`EventStream`. ``async with`` it, then iterate it: it
            yields ``Token`` events and then exactly one ``Done`` or ``Error``,
            after every retry or resume the policy allows (``Done.attempts``,
            ``Error.attempts`` say what happened). Leaving the ``async with``
            early, or cancellation, closes the response and vLLM aborts the
            request. Iterating it without ``async with`` raises ``UsageError``.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
            ClientClosedError: The client was closed.
        """
        self._check_open()
        policy = self._policy(retry, resume)
        req = CompletionRequest.build(request, **fields)
        if req.session_id is None and self._session_id is not None:
            req = dataclasses.replace(req, session_id=self._session_id)
        if self.vocab_size is not None:
            req.check_vocab(self.vocab_size)
        return EventStream._create(
            req,
            config=self._config,
            transport=self._transport,
            counters=self._counters,
            retry=policy,
        )

    def start_stream(
        self, nursery: trio.Nursery, request: object, /, **fields: Any
    ) -> EventChannel:
        """Start a token stream in ``nursery``; return a channel of its events.

        The channel (a ``trio.abc.ReceiveChannel[Event]``) yields the same
        events as :meth:`stream`: ``Token`` events, then exactly one ``Done``
        or ``Error``, then it ends (``trio.EndOfChannel``; ``async for`` stops).

        Each network read's events are handed over at once, and ``receive()``
        returns without yielding while events are waiting, so ``async for``
        over the channel costs about what iterating :meth:`stream` does
        (``receive_nowait()`` works too). The stream waits for its reader
        when about ``stream_buffer`` events are unread.

        To stop a stream at once, cancel ``nursery`` (or a cancel scope around
        the code that owns it), or close the channel (``aclose()``): the
        response closes immediately and vLLM aborts the request (during a
        retry's backoff too).

        ``**fields`` are :meth:`stream`'s: request fields, ``retry`` and
        ``resume``.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
            ClientClosedError: The client was closed.
        """
        stream = self.stream(request, **fields)
        channel = EventChannel._create(self.stream_buffer)
        nursery.start_soon(pump, stream, channel)
        return channel

    def replay(
        self, record: FailedRequest, /, *, prompt: object = None, **fields: Any
    ) -> EventStream:
        """Resend a saved failed request as a new stream (``FailedRequest.load``).

        The body is the saved one (its model included) sent to *this* client's
        URL: make the client with ``record.base_url`` to send it where it went
        before, or with another base URL. A failure is saved again, as a new
        record.

        Args:
            record: The saved request.
            prompt: Other prompt token IDs to send (e.g. a corrected prompt).
            **fields: :class:`CompletionRequest` fields to override
                (``model``, ``max_tokens``, ``request_id``, ...).

        Returns:
            An :class:`EventStream`, as :meth:`stream` returns; compare its
            IDs with the saved ones with ``record.compare(ids)``.

        Raises:
            InvalidRequest: The saved body or an override fails validation.
            ClientClosedError: The client was closed.
        """
        request = record.request()
        if prompt is not None:
            request = dataclasses.replace(request, prompt=prompt)  # type: ignore[arg-type]
        return self.stream(request, **fields)

    async def complete(self, request: object, /, **fields: Any) -> Done:
        """Stream a request to the end and return its ``Done``.

        ``**fields`` are :meth:`stream`'s: request fields, ``retry`` and
        ``resume``.

        Raises:
            InvalidRequest: Bad input, found before any I/O.
            ClientClosedError: The client was closed.
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
            ClientClosedError: The client was closed.
        """
        self._check_open()
        url = self._base_url + "/models"
        status, request_id, body = await self._httpx().get(url)
        if status >= 400:
            raise http_status_error(status, body, url=url, request_id=request_id)
        try:
            listing = msgspec.json.decode(body, type=ModelList)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"GET {url} did not return a model list: {exc}", url=url) from None
        return [ModelInfo(m.id, m.owned_by, m.root, m.max_model_len) for m in listing.data]

    async def health(self) -> bool:
        """Return whether ``GET {root}/health`` answers 200 (False if unreachable).

        Raises:
            ClientClosedError: The client was closed.
        """
        self._check_open()
        try:
            status, _, _ = await self._httpx().get(self._root_url + "/health")
        except TransportError:
            return False
        return status == 200

    def statistics(self) -> ClientStatistics:
        """Return a frozen snapshot of this client's counters (also once closed).

        ``pool`` holds the connection pool's counters with the ``"trio"``
        transport (connections opened, reused, idle, ...), else ``None``.
        """
        stats = self._counters.snapshot()
        if self._trio is not None:
            stats = dataclasses.replace(stats, pool=self._trio.statistics())
        return stats

    # -- internals ----------------------------------------------------------

    def _httpx(self) -> HttpxTransport:
        """The httpx transport, built (and httpx imported) on first use."""
        if self._http is None:
            from ._httpx import HttpxTransport

            self._http = HttpxTransport(
                headers=self._headers,
                timeouts=self._config.timeouts,
                limits=self._limits,
                transport=self._http_transport,
            )
        return self._http

    def _policy(self, retry: object, resume: object) -> RetryPolicy:
        if isinstance(retry, _ClientDefault):
            policy = self._retry
        elif retry is None:
            policy = NO_RETRY
        elif isinstance(retry, RetryPolicy):
            policy = retry
        else:
            raise InvalidRequest("retry", retry, "must be a tokstream.RetryPolicy or None")
        if resume is not None and not isinstance(resume, bool):
            raise InvalidRequest("resume", resume, "must be bool or None")
        if resume is None or resume == policy.resume:
            return policy
        if not resume:
            return dataclasses.replace(policy, resume=False, resume_unseeded=False)
        if policy.attempts == 1:
            policy = RetryPolicy()
        return dataclasses.replace(policy, resume=True)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(
                f"this tokstream.Client for {self._base_url} is closed; use it inside its "
                "`async with` block, or open a new Client",
                url=self._base_url,
            )


def _check_transport(transport: object) -> tuple[str, httpx.AsyncBaseTransport | None]:
    """Return the stream transport's name, and the httpx transport to run over (or ``None``)."""
    if transport is None:
        return "trio", None
    if isinstance(transport, str) and transport in TRANSPORTS:
        return transport, None
    # An httpx transport instance means httpx is imported already; never import it here.
    httpx_module = sys.modules.get("httpx")
    if httpx_module is not None and isinstance(transport, httpx_module.AsyncBaseTransport):
        return "httpx", transport
    raise InvalidRequest(
        "transport",
        transport,
        f"must be one of {', '.join(map(repr, TRANSPORTS))} or an httpx.AsyncBaseTransport",
    )
