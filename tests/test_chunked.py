"""The bulk chunked-body decoder (``core/_chunked.py``), tested synchronously.

Equivalence: the decoded body is the same whether the wire bytes come whole,
one byte at a time or split anywhere (h11 ``tests/test_io.py`` style), for
real vLLM recordings framed as uvicorn frames them and for bodies with chunk
extensions and trailers. Fuzzing: malformed sizes, extensions, trailers and
truncation give only ``ProtocolError`` (or "not done yet"), and the decoder
never holds more than its limits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokstream
from tokstream.core._chunked import ChunkedDecoder

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(p.stem for p in DATA.glob("*.sse"))


def events_of(name: str) -> list[bytes]:
    raw = (DATA / f"{name}.sse").read_bytes()
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def frame(
    pieces: list[bytes],
    *,
    extensions: list[bytes] | None = None,
    trailers: bytes = b"",
    size_format: bytes = b"%x",
) -> bytes:
    """Chunked framing of ``pieces``, one chunk each (as uvicorn frames SSE events)."""
    out = []
    for i, piece in enumerate(pieces):
        ext = extensions[i % len(extensions)] if extensions else b""
        out.append(size_format % len(piece) + ext + b"\r\n" + piece + b"\r\n")
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


def decode(wire: bytes, cuts: list[int] | None = None) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    body = []
    if cuts is None:
        body.append(decoder.feed(wire))
    else:
        pos = 0
        for cut in [*cuts, len(wire)]:
            body.append(decoder.feed(wire[pos:cut]))
            pos = cut
    return b"".join(body), decoder


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recording_framed_by_uvicorn_decodes_whole_and_byte_by_byte(name: str) -> None:
    events = events_of(name)
    wire = frame(events)
    whole, decoder = decode(wire)
    assert whole == b"".join(events)
    assert decoder.done and decoder.unused == b"" and decoder.chunks == len(events)
    by_byte, decoder = decode(wire, list(range(1, len(wire))))
    assert by_byte == whole and decoder.done and decoder.chunks == len(events)


@settings(max_examples=80)
@given(
    data=st.data(),
    name=st.sampled_from(RECORDINGS),
    extensions=st.lists(
        st.sampled_from([b"", b";a", b";a=b", b' ; name="quoted;value"', b";x=1;y=2", b"  "]),
        min_size=1,
        max_size=4,
    ),
    trailers=st.sampled_from([b"", b"x-trace: 1\r\n", b"a: b\r\nc:d\r\n", b"e-tag:   \r\n"]),
    size_format=st.sampled_from([b"%x", b"%X", b"%04x"]),
)
def test_random_splits_extensions_and_trailers_give_the_same_body(
    data: st.DataObject,
    name: str,
    extensions: list[bytes],
    trailers: bytes,
    size_format: bytes,
) -> None:
    events = events_of(name)
    wire = frame(events, extensions=extensions, trailers=trailers, size_format=size_format)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=50)))
    body, decoder = decode(wire, cuts)
    assert body == b"".join(events)
    assert decoder.done and decoder.unused == b""
    want = [tuple(line.split(b":", 1)) for line in trailers.split(b"\r\n") if line]
    assert [(n, v) for n, v in decoder.trailers] == [(n.lower(), v.strip()) for n, v in want]


def test_one_read_with_hundreds_of_chunks_is_one_call() -> None:
    events = [b"data: {}\n\n"] * 300
    decoder = ChunkedDecoder()
    assert decoder.feed(frame(events)) == b"".join(events)
    assert decoder.chunks == 300 and decoder.done


def test_large_chunks_pass_through_without_buffering() -> None:
    piece = b"x" * 1_000_000
    wire = frame([piece])
    decoder = ChunkedDecoder()
    out = [decoder.feed(wire[i : i + 65536]) for i in range(0, len(wire), 65536)]
    assert b"".join(out) == piece and decoder.done
    # Each read's data came straight back: nothing was held between calls.
    assert all(len(o) >= 65536 - 16 for o in out[1:-1])


def test_bytes_after_the_end_are_unused_not_body() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n") == b"abc"
    assert decoder.done and decoder.unused == b"HTTP/1.1 200 OK\r\n"
    assert decoder.feed(b"more") == b""
    assert decoder.unused.endswith(b"more")


@pytest.mark.parametrize(
    "wire",
    [
        b"3\r\nab",  # inside the data
        b"3\r\nabc",  # before the CRLF after the data
        b"3\r\nabc\r",
        b"3",  # inside a size line
        b"3\r\nabc\r\n0\r\n",  # before the empty line ending the trailers
        b"3\r\nabc\r\n0\r\nx: y\r\n",
        b"",
    ],
)
def test_truncation_is_not_done_and_not_an_error(wire: bytes) -> None:
    decoder = ChunkedDecoder()
    decoder.feed(wire)
    assert not decoder.done
    assert decoder.end_of_input() is False


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        (b"0x3\r\nabc\r\n", "invalid chunk size"),
        (b"+3\r\nabc\r\n", "invalid chunk-size line"),
        (b"-1\r\n", "invalid chunk-size line"),
        (b" 3\r\nabc\r\n", "invalid chunk-size line"),
        (b"3_0\r\n", "invalid chunk-size line"),
        (b"g\r\n", "invalid chunk size"),
        (b"\r\n", "invalid chunk-size line"),
        (b"1" * 17 + b"\r\n", "invalid chunk-size line"),
        (b"3 3\r\nabc\r\n", "invalid chunk-size line"),
        (b"\xd9\xa3\r\n", "invalid chunk-size line"),
        (b"3;a\nb\r\nabc\r\n", "invalid chunk-size line"),
        (b"3;\x00\r\nabc\r\n", "invalid chunk-size line"),
        (b"3\r\nabcd\r\n", "not followed by CRLF"),
        (b"3\r\nabc\n\r\n", "not followed by CRLF"),
        (b"3\r\nabc\rX", "not followed by CRLF"),
        (b"3\r\nabc\r\n0\r\nno colon\r\n\r\n", "invalid trailer field"),
        (b"3\r\nabc\r\n0\r\nbad name: v\r\n\r\n", "invalid trailer field"),
        (b"3\r\nabc\r\n0\r\nx: a\x00b\r\n\r\n", "invalid trailer field"),
        (b"f" * 5000, "longer than 4096"),
        (b"3" + b" " * 5000 + b"\r\n", "longer than 4096"),
    ],
)
def test_malformed_framing_is_a_protocol_error(wire: bytes, needle: str) -> None:
    for step in (len(wire), 1):  # whole, and byte by byte
        decoder = ChunkedDecoder()
        body = b""
        with pytest.raises(tokstream.ProtocolError, match=needle) as info:
            for i in range(0, len(wire), step):
                body += decoder.feed(wire[i : i + step])
            decoder.feed(b"")  # a call that returned body bytes raises on the next one
        assert "chunked body" in str(info.value)
        assert body in (b"", b"abc")  # only intact chunk data, before the error
        # The decoder stays failed.
        with pytest.raises(tokstream.ProtocolError):
            decoder.feed(b"0\r\n\r\n")


def test_the_chunks_before_bad_framing_are_delivered_then_it_raises() -> None:
    # They may carry tokens: a read that holds good chunks and then a bad one
    # must not lose the good ones (issue 10).
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n2\r\nde\r\nzz\r\nxx\r\n") == b"abcde"
    with pytest.raises(tokstream.ProtocolError, match="invalid chunk size b'zz'"):
        decoder.feed(b"")
    with pytest.raises(tokstream.ProtocolError):
        decoder.feed(b"0\r\n\r\n")


def test_oversized_trailers_are_an_error() -> None:
    decoder = ChunkedDecoder(max_trailer_size=100)
    with pytest.raises(tokstream.ProtocolError, match="larger than 100"):
        decoder.feed(b"0\r\n" + b"x: " + b"y" * 200 + b"\r\n\r\n")
    decoder = ChunkedDecoder(max_trailer_size=100)
    decoder.feed(b"0\r\n")
    with pytest.raises(tokstream.ProtocolError, match="larger than 100"):
        for _ in range(20):  # many small trailer fields, no end
            decoder.feed(b"x: yyyyyy\r\n")


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [b"\r\n", b"0\r\n", b"a\r\n", b";x=y", b"0x", b"\r", b"\n", b"ffff\r\n", b": "]
            ),
        ),
        max_size=30,
    )
)
def test_fuzzed_wire_bytes_give_body_or_protocol_error_only(pieces: list[bytes]) -> None:
    decoder = ChunkedDecoder(max_line_size=64, max_trailer_size=128)
    fed = 0
    body = 0
    try:
        for piece in pieces:
            body += len(decoder.feed(piece))
            fed += len(piece)
            # Bounded: it holds at most one size line or the trailer section.
            assert len(decoder._pending) <= 128
    except tokstream.ProtocolError:
        return
    assert body <= fed
    if decoder.done:
        assert decoder.end_of_input()
