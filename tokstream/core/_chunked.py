"""A sans-IO decoder for HTTP/1.1's chunked transfer coding, in bulk.

``ChunkedDecoder.feed(data)`` takes the wire bytes of a chunked body, split
anywhere, and returns the body bytes they carry (``b""`` when they carried only
framing). uvicorn frames every SSE event of a vLLM stream as its own chunk, so
one 64 KiB network read holds hundreds of chunks: one call decodes them all in
one pass over the buffer, with no per-chunk call, event object or copy beyond
the slice of each chunk's data.

Theory of operation (RFC 9112, section 7.1)::

    chunked-body = *chunk last-chunk trailer-section CRLF
    chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    last-chunk   = 1*("0") [ chunk-ext ] CRLF

* A size line is 1-16 hex digits, then optional extensions (``;name=value``,
  read and ignored, as every client does) and optional whitespace before its
  CRLF. A size line longer than ``max_line_size`` is an error.
* Chunk data passes straight through: it is never buffered, whatever its size.
* After the last chunk come trailer fields (``name: value`` lines, kept in
  :attr:`ChunkedDecoder.trailers`), then an empty line: the body's end. The
  trailer section is bounded by ``max_trailer_size``.
* Bytes after the end are not body: they are kept in
  :attr:`ChunkedDecoder.unused` (for an HTTP/1.1 client that does not pipeline,
  they mean the connection cannot be reused).

Memory is bounded by the two limits: only an incomplete size line, an
incomplete CRLF or the trailer section is ever held between calls.

Errors: malformed framing raises :class:`~tokstream.ProtocolError` (and so does
every later call); the body bytes of the chunks before it are returned first, by
the call that reached it, so that nothing that arrived intact is lost. Running
out of input before the end is not an error here: :attr:`done` stays False, and
the caller decides what a closed connection means (``RemoteDisconnected``). No
I/O.
"""

from __future__ import annotations

import re

from .._exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_LINE_SIZE", "DEFAULT_MAX_TRAILER_SIZE", "ChunkedDecoder"]

DEFAULT_MAX_LINE_SIZE = 4096
DEFAULT_MAX_TRAILER_SIZE = 16 * 1024

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

_MAX_HEX_DIGITS = 16
# Slow path only: a size line with extensions or whitespace.
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\x09\x20-\x7e\x80-\xff]*)?",
)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")


class ChunkedDecoder:
    """Decode a chunked HTTP/1.1 body; see the module docstring for the rules.

    Args:
        max_line_size: The longest chunk-size line accepted (extensions included).
        max_trailer_size: The largest trailer section accepted.

    Attributes:
        done: True once the last chunk and the trailer section were read.
        trailers: The trailer fields, as ``(lower-case name, value)`` bytes.
        unused: Bytes that followed the body's end (empty for a clean end).
        chunks: Chunks decoded so far (the last, empty chunk excluded).
        error: The framing error found, if any; every later :meth:`feed`
            raises it (the call that found it raised it too, unless it had
            body bytes to return first).
    """

    __slots__ = (
        "_max_line",
        "_max_trailer",
        "_pending",
        "_remaining",
        "_state",
        "_trailer_size",
        "chunks",
        "done",
        "error",
        "trailers",
        "unused",
    )

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_trailer_size: int = DEFAULT_MAX_TRAILER_SIZE,
    ) -> None:
        self._max_line = max_line_size
        self._max_trailer = max_trailer_size
        self._state = _SIZE
        self._remaining = 0  # data bytes left in the current chunk
        self._pending = b""  # an incomplete size line, CRLF or trailer line
        self._trailer_size = 0
        self.error: ProtocolError | None = None  # sticky: every later feed raises it
        self.done = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.unused = b""
        self.chunks = 0

    def feed(self, data: bytes) -> bytes:
        """Push wire bytes; return the body bytes they complete (``b""`` if none).

        After the end (:attr:`done`), further bytes go to :attr:`unused`.

        Raises:
            ProtocolError: The framing is invalid (this call and every later one).
        """
        if self.error is not None:
            raise self.error
        if self.done:
            self.unused += data
            return b""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except ProtocolError as exc:
            self.error = exc
            if not out:
                raise
            # The chunks before the bad framing are body: hand them out first
            # (they may carry tokens); the next call raises.
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def end_of_input(self) -> bool:
        """Declare that the input ended; return whether the body had ended (else truncated)."""
        return self.done

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        """Decode ``data``, appending body bytes to ``out`` (kept when this raises)."""
        pos = 0
        n = len(data)
        state = self._state
        while pos < n:
            if state == _SIZE:
                end_of_line = data.find(b"\r\n", pos)
                if end_of_line < 0:
                    self._pending = data[pos:]
                    if len(self._pending) > self._max_line:
                        raise _error(f"a chunk-size line is longer than {self._max_line} bytes")
                    break
                if end_of_line - pos > self._max_line:
                    raise _error(f"a chunk-size line is longer than {self._max_line} bytes")
                line = data[pos:end_of_line]
                pos = end_of_line + 2
                # The common case, a bare hex size; int() alone would also take
                # signs, "_", spaces and a "0x" prefix, which isalnum and the
                # prefix check exclude.
                if len(line) <= _MAX_HEX_DIGITS and line.isalnum():
                    try:
                        size = int(line, 16)
                    except ValueError:
                        raise _error(f"invalid chunk size {line[:40]!r}") from None
                    if line[0] == 48 and len(line) > 1 and line[1] in (88, 120):  # "0x"
                        raise _error(f"invalid chunk size {line[:40]!r}")
                else:
                    size = _parse_size_line(line)
                if size == 0:
                    state = _TRAILER
                    continue
                end = pos + size
                if end + 2 <= n and data[end] == 13 and data[end + 1] == 10:
                    # The whole chunk and its CRLF are here: the bulk path.
                    out.append(data[pos:end])
                    pos = end + 2
                    self.chunks += 1
                    continue
                self._remaining = size
                state = _DATA
            elif state == _DATA:
                end = pos + self._remaining
                if end > n:
                    out.append(data[pos:] if pos else data)
                    self._remaining = end - n
                    break
                out.append(data[pos:end])
                pos = end
                self._remaining = 0
                state = _DATA_END
            elif state == _DATA_END:
                if data[pos] != 13:
                    raise _error("chunk data is not followed by CRLF")
                if pos + 1 == n:
                    self._pending = b"\r"
                    break
                if data[pos + 1] != 10:
                    raise _error("chunk data is not followed by CRLF")
                pos += 2
                self.chunks += 1
                state = _SIZE
            else:  # _TRAILER
                pos = self._trailer(data, pos)
                if self.done:
                    state = _DONE
                    self.unused = data[pos:]
                break
        self._state = state

    def _trailer(self, data: bytes, pos: int) -> int:
        """Read trailer lines from ``pos``; return where reading stopped."""
        while True:
            end_of_line = data.find(b"\r\n", pos)
            if end_of_line < 0:
                self._pending = data[pos:]
                if self._trailer_size + len(self._pending) > self._max_trailer:
                    raise _error(f"the trailer section is larger than {self._max_trailer} bytes")
                return len(data)
            if end_of_line == pos:
                self.done = True
                return pos + 2
            self._trailer_size += end_of_line - pos + 2
            if self._trailer_size > self._max_trailer:
                raise _error(f"the trailer section is larger than {self._max_trailer} bytes")
            self.trailers.append(_parse_field(data[pos:end_of_line]))
            pos = end_of_line + 2


def _parse_size_line(line: bytes) -> int:
    match = _SIZE_LINE.fullmatch(line)
    if match is None:
        raise _error(f"invalid chunk-size line {line[:40]!r}")
    return int(match.group(1), 16)


def _parse_field(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    value = value.strip(b" \t")
    if not colon or _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
        raise _error(f"invalid trailer field {line[:40]!r}")
    return name.lower(), value


def _error(problem: str) -> ProtocolError:
    return ProtocolError(
        f"invalid HTTP/1.1 chunked body: {problem}; the server or a proxy in front of it "
        "sent a malformed response"
    )
