"""Error translation at the boundary: no httpx exception and no API key escapes."""

from __future__ import annotations

import httpx
import pytest
from trio.testing import MockClock

import tokstream
from tokstream import Error, Token
from tokstream._trio._httpx import map_httpx_error
from tokstream.core._http_errors import http_status_error

URL = "http://127.0.0.1:9/v1"


def raising_transport(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("refused"), tokstream.ConnectError),
        (httpx.ConnectTimeout("slow"), tokstream.ConnectTimeout),
        (httpx.PoolTimeout("pool"), tokstream.PoolTimeout),
        (httpx.WriteError("broken pipe"), tokstream.TransportError),
        (httpx.WriteTimeout("write"), tokstream.TransportError),
        (httpx.ReadError("reset"), tokstream.TransportError),
        (httpx.RemoteProtocolError("no response"), tokstream.TransportError),
        (httpx.UnsupportedProtocol("ftp"), tokstream.TransportError),
        (httpx.ProxyError("proxy"), tokstream.TransportError),
        (httpx.LocalProtocolError("bad header"), tokstream.TransportError),
    ],
)
async def test_httpx_errors_before_the_response_become_tokstream_errors(
    exc: Exception, cls: type[tokstream.TokstreamError], autojump_clock: MockClock
) -> None:
    async with tokstream.Client(URL, model="m", transport=raising_transport(exc)) as client:
        async with client.stream([1, 2]) as events:
            got = [ev async for ev in events]
        stats = client.statistics()
        assert (stats.streams_failed, stats.retries) == (1, 3)
    assert len(got) == 1 and isinstance(got[0], Error)
    assert type(got[0].error) is cls
    assert "127.0.0.1:9/v1/completions" in str(got[0].error)
    # Nothing got going, so the default policy tried 4 times; each is on the Error.
    assert [a.error for a in got[0].attempts] == [cls.__name__] * 4


class _BrokenBody(httpx.AsyncByteStream):
    def __init__(self, first: bytes, exc: Exception) -> None:
        self.first = first
        self.exc = exc

    async def __aiter__(self):  # type: ignore[no-untyped-def,override]
        yield self.first
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ReadError("connection reset"), tokstream.RemoteDisconnected),
        (httpx.RemoteProtocolError("incomplete chunked read"), tokstream.RemoteDisconnected),
        # httpx raises one type for a body cut short and for broken chunk framing;
        # the mapping goes by type, never by message, so both are RemoteDisconnected.
        (httpx.RemoteProtocolError("illegal chunk header"), tokstream.RemoteDisconnected),
        (httpx.ReadTimeout("read"), tokstream.RemoteDisconnected),
        (httpx.DecodingError("bad gzip"), tokstream.ProtocolError),
    ],
)
async def test_httpx_errors_mid_stream_keep_the_tokens(
    exc: Exception, cls: type[tokstream.TokstreamError]
) -> None:
    first = (
        b'data: {"id":"c","choices":[{"index":0,"text":"Hi","token_ids":[13048],'
        b'"prompt_token_ids":[1],"finish_reason":null}]}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_BrokenBody(first, exc),
        )

    async with tokstream.Client(URL, model="m", transport=httpx.MockTransport(handler)) as client:
        async with client.stream([1]) as events:
            got = [ev async for ev in events]
    assert isinstance(got[0], Token) and got[0].id == 13048
    err = got[-1]
    assert isinstance(err, Error)
    assert type(err.error) is cls
    assert isinstance(err.error, tokstream.StreamError)
    assert err.token_ids.tolist() == [13048]
    assert f"({type(exc).__name__}: {exc})" in str(err.error)
    assert "127.0.0.1:9/v1/completions" in str(err.error)


def _httpx_error_types() -> list[type[Exception]]:
    """Every exception class httpx exports that its I/O can raise."""
    found = {
        obj
        for name in httpx.__all__
        if isinstance(obj := getattr(httpx, name), type)
        and issubclass(obj, (httpx.HTTPError, httpx.InvalidURL))
    }
    return sorted(found, key=lambda cls: cls.__name__)


def _instance(cls: type[Exception], message: str) -> Exception:
    if issubclass(cls, httpx.HTTPStatusError):
        request = httpx.Request("POST", URL)
        return cls(message, request=request, response=httpx.Response(500, request=request))
    return cls(message)


# The expected translation, written out independently of the implementation.
BEFORE_RESPONSE = {
    httpx.PoolTimeout: tokstream.PoolTimeout,
    httpx.ConnectTimeout: tokstream.ConnectTimeout,
    httpx.ConnectError: tokstream.ConnectError,
}
MID_BODY = {httpx.DecodingError: tokstream.ProtocolError}


@pytest.mark.parametrize("httpx_cls", _httpx_error_types(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("started", [False, True], ids=["before-response", "mid-body"])
def test_every_httpx_error_type_maps_by_type_not_by_message(
    httpx_cls: type[Exception], started: bool
) -> None:
    if started:
        want = MID_BODY.get(httpx_cls, tokstream.RemoteDisconnected)
    else:
        want = BEFORE_RESPONSE.get(httpx_cls, tokstream.TransportError)
    # The same type says different things; the class must not depend on it.
    messages = ["peer closed connection: incomplete chunked read", "illegal chunk header", ""]
    for message in messages:
        exc = _instance(httpx_cls, message)
        err = map_httpx_error(exc, url=URL, request_id="r-9", started=started)
        assert type(err) is want, (httpx_cls, message, type(err))
        assert (err.url, err.request_id) == (URL, "r-9")
        text = str(err)
        assert URL in text and "request_id=r-9" in text
        assert (f"{httpx_cls.__name__}: {message}" if message else httpx_cls.__name__) in text
        # Each message says what to do next.
        hints = ("retrying is safe", "replayed", "check base_url", "Timeouts.connect", "proxy")
        assert any(hint in text for hint in hints), text


def test_the_type_table_covers_the_httpx_classes_it_names() -> None:
    # A renamed or removed httpx class must fail here rather than silently fall through.
    types = set(_httpx_error_types())
    assert set(BEFORE_RESPONSE) | set(MID_BODY) <= types
    assert {httpx.RemoteProtocolError, httpx.ReadError, httpx.PoolTimeout} <= types


@pytest.mark.parametrize("key", ["sk-abc\n", "sk abc", "sk-é", "", "sk-\x00"])
def test_bad_api_key_is_rejected_without_echoing_it(key: str) -> None:
    with pytest.raises(tokstream.InvalidRequest) as info:
        tokstream.Client(URL, model="m", api_key=key)
    assert "api_key" in str(info.value)
    if key.strip():
        assert key.strip() not in str(info.value)


def test_an_api_key_in_an_httpx_message_is_redacted() -> None:
    exc = httpx.LocalProtocolError("Illegal header value b'Bearer sk-SECRET123\\n'")
    err = map_httpx_error(exc, url=URL, request_id=None, started=False)
    assert "sk-SECRET123" not in str(err)
    assert "Bearer <redacted>" in str(err)


@pytest.mark.parametrize("url", ["http://[::1/v1", "http://", "ftp://host/v1", "localhost:8000"])
def test_bad_base_url_is_rejected_up_front(url: str) -> None:
    with pytest.raises(tokstream.InvalidRequest, match="base_url"):
        tokstream.Client(url, model="m")


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (b'{"error": "plain string"}', "plain string", None),
        (b'{"object": "error", "message": "flat", "type": "T", "code": 400}', "flat", None),
        (b'{"detail": "fastapi says no"}', "fastapi says no", None),
        (b'{"error": {"message": "m", "param": ["body", "x"], "code": 400}}', "m", "['body', 'x']"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>", None),
        (b"", "(empty body)", None),
    ],
)
def test_error_body_shapes(body: bytes, message: str, param: str | None) -> None:
    err = http_status_error(502, body, url=URL, request_id="r1")
    assert isinstance(err, tokstream.InternalServerError)
    assert err.server_message == message
    assert err.param == param
    assert err.status_code == 502 and err.request_id == "r1"
    assert message in str(err) and "r1" in str(err)
