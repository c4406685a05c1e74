"""Sans-IO HTTP/1.1, client side: the request head out, the response head and body framing in.

The trio transport (``tokstream._trio._http``) does the I/O; this module only
turns values into bytes and bytes into values, so it is tested and fuzzed
synchronously:

* :func:`encode_head` writes a request head; :func:`check_header` validates a
  header once, where it enters (the client's headers at construction, a
  request's own when it is built), so that writing one costs no checks.
* :class:`ResponseHeadParser` reads the response head from bytes split
  anywhere, bounded in size, skipping ``1xx`` interim responses.
* :func:`body_reader` picks the body's framing from the head: chunked
  (:class:`~tokstream.core._chunked.ChunkedDecoder`), ``Content-Length``
  (:class:`LengthReader`) or delimited by the connection's close
  (:class:`CloseReader`). All three have the same small interface:
  ``feed(data) -> bytes``, ``done``, ``unused`` and ``end_of_input()``.

What it deliberately does not do: transfer or content codings other than
``chunked`` and ``identity`` (tokstream asks for ``identity``, so a compressed
body means a proxy ignored that, and is reported rather than decoded as
garbage), pipelining, upgrades, or requests other than the client's own.

Every malformed input raises :class:`~tokstream.ProtocolError`; a bad header
given by the caller raises :class:`~tokstream.InvalidRequest`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from .._exceptions import InvalidRequest, ProtocolError
from ._chunked import ChunkedDecoder

__all__ = [
    "DEFAULT_MAX_HEAD_SIZE",
    "BodyReader",
    "BodyReaderProtocol",
    "CloseReader",
    "LengthReader",
    "ResponseHead",
    "ResponseHeadParser",
    "body_reader",
    "check_header",
    "encode_head",
]

DEFAULT_MAX_HEAD_SIZE = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: ([\x09\x20-\x7e\x80-\xff]*))?")
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")


def check_header(name: str, value: str) -> tuple[str, str]:
    """Validate one request header; return it with a lower-case name.

    Raises:
        InvalidRequest: The name is not an HTTP token, or the value is empty,
            not printable ASCII, or has a line break (which would let it write
            another header).
    """
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise InvalidRequest("header name", name, "must be an HTTP token (letters, digits, -)")
    if not isinstance(value, str) or _VALUE.fullmatch(value) is None:
        # Never echo the value: it may be a credential.
        raise InvalidRequest(
            f"header {name!r}",
            "<hidden>",
            "must be printable ASCII without line breaks or surrounding spaces",
        )
    return name.lower(), value


def encode_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Return the request head: the request line, the headers and the blank line.

    The headers must have passed :func:`check_header`; ``target`` is the
    origin-form path (and query), already percent-encoded.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("ascii")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed response head.

    Attributes:
        status: The status code.
        reason: The reason phrase (may be empty).
        http_version: ``"1.1"`` or ``"1.0"``.
        fields: The header fields in order, as ``(lower-case name, value)``
            strings (latin-1 decoded, so every byte survives).
    """

    status: int
    reason: str
    http_version: str
    fields: tuple[tuple[str, str], ...]

    def headers(self) -> dict[str, str]:
        """Return the headers by lower-case name; repeated fields are joined with ``", "``."""
        out: dict[str, str] = {}
        for name, value in self.fields:
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def tokens(self, name: str) -> list[str]:
        """Return the comma-separated, lower-cased tokens of every field called ``name``."""
        return [
            item.strip().lower()
            for field, value in self.fields
            if field == name
            for item in value.split(",")
            if item.strip()
        ]

    @property
    def keep_alive(self) -> bool:
        """Whether the server lets the connection carry another request afterwards."""
        return self.http_version == "1.1" and "close" not in self.tokens("connection")


class ResponseHeadParser:
    """Read one response head (after any ``1xx`` interim responses) from bytes split anywhere.

    Args:
        max_size: The largest head accepted, in bytes.

    Attributes:
        interim: ``1xx`` responses skipped so far.
    """

    __slots__ = ("_buffer", "_max_size", "interim")

    def __init__(self, max_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        self._max_size = max_size
        self._buffer = b""
        self.interim = 0

    def feed(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """Push bytes; return the head and the bytes after it once complete, else ``None``.

        Raises:
            ProtocolError: The head is malformed, larger than ``max_size``, or a
                ``101`` upgrade.
        """
        start = max(len(self._buffer) - 3, 0)  # a blank line may straddle the reads
        buffer = self._buffer + data if self._buffer else data
        while True:
            match = _END_OF_HEAD.search(buffer, start)
            if match is None:
                if len(buffer) > self._max_size:
                    raise _error(f"the response head is larger than {self._max_size} bytes")
                self._buffer = buffer
                return None
            if match.start() > self._max_size:
                raise _error(f"the response head is larger than {self._max_size} bytes")
            head = _parse_head(buffer[: match.start()])
            buffer = buffer[match.end() :]
            start = 0
            if head.status >= 200:
                self._buffer = b""
                return head, buffer
            if head.status == 101:
                raise _error("the server switched protocols (101), which tokstream never asks for")
            self.interim += 1


def _parse_head(raw: bytes) -> ResponseHead:
    lines = raw.split(b"\n")
    status_line = lines[0].removesuffix(b"\r")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise _error(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            raise _error("a header is folded across lines (obsolete line folding)")
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            raise _error(f"invalid header line {line[:80]!r}")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise _error(f"invalid value for header {name[:40]!r}")
        fields.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return ResponseHead(
        status=int(match.group(2)),
        reason=(match.group(3) or b"").decode("latin-1"),
        http_version=match.group(1).decode("ascii"),
        fields=tuple(fields),
    )


class BodyReaderProtocol(Protocol):
    """A response body's framing: wire bytes in, body bytes out."""

    @property
    def done(self) -> bool:
        """Whether the body's end was read."""
        ...

    @property
    def unused(self) -> bytes:
        """Bytes that followed the body's end."""
        ...

    @property
    def error(self) -> ProtocolError | None:
        """The framing error the next :meth:`feed` raises (its body came out first)."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Push wire bytes; return the body bytes among them."""
        ...

    def end_of_input(self) -> bool:
        """Declare that the connection closed; return whether that ended the body cleanly."""
        ...


class LengthReader:
    """A body framed by ``Content-Length``."""

    __slots__ = ("done", "remaining", "unused")

    error = None  # a length cannot be malformed once the head was read

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0
        self.unused = b""

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes in ``data``; bytes past the length go to ``unused``."""
        if self.done:
            self.unused += data
            return b""
        if len(data) < self.remaining:
            self.remaining -= len(data)
            return data
        body, self.unused = data[: self.remaining], data[self.remaining :]
        self.remaining = 0
        self.done = True
        return body

    def end_of_input(self) -> bool:
        """A close before ``Content-Length`` bytes is a truncated body."""
        return self.done


class CloseReader:
    """A body that ends when the server closes the connection."""

    __slots__ = ("done",)

    unused = b""
    error = None

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Return ``data``: everything before the close is body."""
        return data

    def end_of_input(self) -> bool:
        """The close is the body's end."""
        self.done = True
        return True


BodyReader: TypeAlias = "ChunkedDecoder | LengthReader | CloseReader"
"""The three body framings; each satisfies :class:`BodyReaderProtocol`."""


def body_reader(head: ResponseHead) -> BodyReader:
    """Return the reader for the body of a response to a POST (RFC 9112, section 6.3).

    Raises:
        ProtocolError: A transfer coding other than ``chunked``, a content
            coding other than ``identity``, or an invalid ``Content-Length``.
    """
    if head.status in (204, 304):
        return LengthReader(0)
    encodings = [c for c in head.tokens("content-encoding") if c != "identity"]
    if encodings:
        raise _error(
            f"the body is compressed (content-encoding: {', '.join(encodings)}) although "
            "the request asked for identity; a proxy in front of the server ignored that, "
            'use transport="httpx" behind it'
        )
    codings = head.tokens("transfer-encoding")
    if codings:
        if codings != ["chunked"]:
            raise _error(f"unsupported transfer-encoding: {', '.join(codings)}")
        return ChunkedDecoder()
    lengths = {v.strip() for n, v in head.fields if n == "content-length" for v in v.split(",")}
    if lengths:
        if len(lengths) != 1 or not (value := lengths.pop()).isdigit() or len(value) > 18:
            raise _error(f"invalid content-length: {head.headers()['content-length'][:40]!r}")
        return LengthReader(int(value))
    return CloseReader()


def _error(problem: str) -> ProtocolError:
    return ProtocolError(f"invalid HTTP/1.1 response: {problem}")
