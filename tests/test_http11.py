"""Sans-IO HTTP/1.1 for the trio transport (``core/_http11.py``), tested synchronously.

The response heads are the ones uvicorn sends in front of vLLM (recorded in
``tests/data/*.headers``), plus what other servers and proxies send: interim
``1xx`` responses, bare-LF line ends, ``Content-Length`` error bodies,
close-delimited bodies, compressed bodies (reported, never decoded as garbage).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokstream
from tokstream.core._chunked import ChunkedDecoder
from tokstream.core._http11 import (
    CloseReader,
    LengthReader,
    ResponseHeadParser,
    body_reader,
    check_header,
    encode_head,
)

DATA = Path(__file__).parent / "data"

UVICORN = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Sun, 30 Nov 2025 12:00:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"x-request-id: cmpl-1\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)


def parse(raw: bytes, step: int | None = None) -> tuple[object, bytes]:
    parser = ResponseHeadParser()
    step = step or len(raw) or 1
    for i in range(0, len(raw), step):
        got = parser.feed(raw[i : i + step])
        if got is not None:
            head, rest = got
            return head, rest + raw[i + step :]
    raise AssertionError("incomplete head")


@pytest.mark.parametrize("step", [None, 1, 7])
def test_uvicorns_head_whole_and_split(step: int | None) -> None:
    head, rest = parse(UVICORN + b"5\r\nhello\r\n", step)
    assert rest == b"5\r\nhello\r\n"
    assert head.status == 200 and head.reason == "OK" and head.http_version == "1.1"  # type: ignore[attr-defined]
    headers = head.headers()  # type: ignore[attr-defined]
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["x-request-id"] == "cmpl-1"
    assert head.keep_alive  # type: ignore[attr-defined]
    assert isinstance(body_reader(head), ChunkedDecoder)  # type: ignore[arg-type]


def test_recorded_vllm_heads_parse() -> None:
    # The recordings keep the header lines vLLM's server sent (one per line).
    for path in sorted(DATA.glob("*.headers")):
        lines = [line for line in path.read_text().splitlines() if ":" in line]
        raw = b"HTTP/1.1 200 OK\r\n" + "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"
        head, rest = parse(raw, 3)
        assert rest == b"" and head.status == 200, path  # type: ignore[attr-defined]


def test_interim_responses_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + UVICORN
    for step in (None, 1):
        parser = ResponseHeadParser()
        got = None
        for i in range(0, len(raw), step or len(raw)):
            got = parser.feed(raw[i : i + (step or len(raw))]) or got
        assert got is not None and got[0].status == 200 and parser.interim == 2


def test_lf_only_line_ends_and_header_whitespace() -> None:
    head, rest = parse(b"HTTP/1.0 404 Not Found\nContent-Length:  3 \nX-A:b\n\nabc")
    assert head.status == 404 and head.http_version == "1.0"  # type: ignore[attr-defined]
    assert head.headers() == {"content-length": "3", "x-a": "b"}  # type: ignore[attr-defined]
    assert rest == b"abc"
    assert not head.keep_alive  # type: ignore[attr-defined]  # HTTP/1.0


def test_repeated_headers_are_joined_and_connection_close_is_seen() -> None:
    head, _ = parse(
        b"HTTP/1.1 200 OK\r\nVary: a\r\nvary: b\r\nConnection: keep-alive, Close\r\n\r\n"
    )
    assert head.headers()["vary"] == "a, b"  # type: ignore[attr-defined]
    assert not head.keep_alive  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n", "invalid header line"),
        (b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n", "invalid value"),
        (b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n", "folded"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"<html>not http</html>\r\n\r\n", "status line"),
    ],
)
def test_malformed_heads_are_protocol_errors(raw: bytes, needle: str) -> None:
    with pytest.raises(tokstream.ProtocolError, match=needle):
        ResponseHeadParser().feed(raw)


def test_the_head_is_bounded() -> None:
    parser = ResponseHeadParser(max_size=1000)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(tokstream.ProtocolError, match="larger than 1000"):
        for _ in range(100):
            parser.feed(b"x-filler: " + b"y" * 20 + b"\r\n")


@pytest.mark.parametrize(
    ("head", "reader", "length"),
    [
        (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n", LengthReader, 12),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", LengthReader, 5),
        (b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n", LengthReader, 0),
        (b"HTTP/1.0 200 OK\r\n\r\n", CloseReader, None),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", CloseReader, None),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\ncontent-length: 9\r\n\r\n",
            ChunkedDecoder,
            None,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-encoding: identity\r\ncontent-length: 1\r\n\r\n",
            LengthReader,
            1,
        ),
    ],
)
def test_body_framing_follows_the_head(head: bytes, reader: type, length: int | None) -> None:
    parsed, _ = parse(head)
    got = body_reader(parsed)  # type: ignore[arg-type]
    assert type(got) is reader
    if length is not None:
        assert isinstance(got, LengthReader) and got.remaining == length


@pytest.mark.parametrize(
    ("head", "needle"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n", "compressed"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "transfer-encoding"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n", "content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n", "content-length"),
    ],
)
def test_bodies_tokstream_cannot_read_are_reported(head: bytes, needle: str) -> None:
    parsed, _ = parse(head)
    with pytest.raises(tokstream.ProtocolError, match=needle):
        body_reader(parsed)  # type: ignore[arg-type]


def test_a_compressed_body_says_what_to_do() -> None:
    parsed, _ = parse(b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\n\r\n")
    with pytest.raises(tokstream.ProtocolError, match='transport="httpx"'):
        body_reader(parsed)  # type: ignore[arg-type]


@settings(max_examples=60)
@given(st.lists(st.integers(0, 40), max_size=8), st.binary(max_size=60))
def test_length_reader_splits_anywhere(cuts: list[int], body: bytes) -> None:
    wire = body + b"EXTRA"
    reader = LengthReader(len(body))
    out = []
    pos = 0
    for cut in [*sorted(cuts), len(wire)]:
        out.append(reader.feed(wire[pos:cut]))
        pos = max(pos, cut)
    assert b"".join(out) == body and reader.done and reader.unused == b"EXTRA"


def test_close_delimited_body_ends_at_the_close() -> None:
    reader = CloseReader()
    assert reader.feed(b"abc") == b"abc" and not reader.done
    assert reader.end_of_input() and reader.done
    truncated = LengthReader(5)
    truncated.feed(b"abc")
    assert not truncated.end_of_input()


def test_request_head_and_header_checks() -> None:
    head = encode_head(
        "POST", "/v1/completions", [("host", "h:1"), check_header("X-Request-Id", "r-1")]
    )
    assert head == b"POST /v1/completions HTTP/1.1\r\nhost: h:1\r\nx-request-id: r-1\r\n\r\n"
    for name, value in [
        ("x", "a\r\nInjected: yes"),
        ("x", "a\nb"),
        ("x", ""),
        ("x", " padded"),
        ("x", "café"),
        ("bad name", "sk-SECRET"),
        ("", "sk-SECRET"),
        ("x:y", "sk-SECRET"),
    ]:
        with pytest.raises(tokstream.InvalidRequest) as info:
            check_header(name, value)
        assert "header" in str(info.value)
        # A value may be a credential: never echoed.
        assert "SECRET" not in str(info.value) and "Injected" not in str(info.value)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=50), max_size=10))
def test_fuzzed_heads_give_a_head_nothing_yet_or_protocol_error(pieces: list[bytes]) -> None:
    parser = ResponseHeadParser(max_size=256)
    try:
        for piece in pieces:
            got = parser.feed(piece)
            if got is not None:
                head, _ = got
                assert 200 <= head.status <= 999
                with contextlib.suppress(tokstream.ProtocolError):
                    body_reader(head)
                return
            assert len(parser._buffer) <= 256
    except tokstream.ProtocolError:
        return
