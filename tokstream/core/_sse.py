"""A sans-IO Server-Sent Events decoder: bytes in, events out.

``SSEDecoder.feed(data)`` accepts the body's bytes split anywhere (inside a
line, inside a CRLF pair, inside a UTF-8 character) and returns the events
completed so far. It follows the WHATWG event-stream rules that matter for
vLLM: LF, CRLF and CR line ends; ``:`` comment lines; ``data:`` (multi-line
data joins with ``\\n``), ``event:``, ``id:`` and ``retry:`` fields; one
optional space after the colon; an event is dispatched at a blank line.

It never grows without bound: an event (its data plus the line being read)
larger than ``max_event_size`` raises :class:`~tokstream.ProtocolError`.

It does no I/O, no JSON and knows nothing of vLLM; ``[DONE]`` is just data
here. Bytes are split into lines before any text decoding, so a multi-byte
character split across reads is never corrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEDecoder", "SSEEvent"]

DEFAULT_MAX_EVENT_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched server-sent event.

    Attributes:
        data: The event's data (lines joined with ``\\n``), as raw UTF-8 bytes.
        event: The event type; ``"message"`` when the stream named none.
        id: The last event ID seen so far, or ``None``.
    """

    data: bytes
    event: str = "message"
    id: str | None = None

    @property
    def text(self) -> str:
        """The data decoded as UTF-8 (invalid bytes replaced)."""
        return self.data.decode("utf-8", "replace")


class SSEDecoder:
    """Incremental SSE parser. See the module docstring for the rules.

    Args:
        max_event_size: The largest event, in bytes, accepted before
            :class:`~tokstream.ProtocolError` is raised.

    Attributes:
        lines: Lines parsed so far (data, comment, field and blank lines).
        events: Events dispatched so far.
        last_event_id: The last ``id:`` value, or ``None``.
    """

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_event_size = max_event_size
        self.lines = 0
        self.events = 0
        self.last_event_id: str | None = None
        self._partial: list[bytes] = []  # pieces of the line being read
        self._partial_size = 0
        self._data: list[bytes] = []  # data lines of the event being built
        self._data_size = 0
        self._event_type = ""
        self._id_changed = False
        self._skip_lf = False  # the previous piece ended in CR: a leading LF is its pair
        self.error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Push body bytes; return the events they complete, in order.

        Events completed before an oversized one in the same ``data`` are still
        returned; the error is then raised by the next call.

        Raises:
            ProtocolError: An event exceeded ``max_event_size``.
        """
        events = [
            # Plain bytes mean no event type and no event ID had been seen.
            item if isinstance(item, SSEEvent) else SSEEvent(item)
            for item in self.feed_raw(data)
        ]
        if self.error is not None and not events:
            raise self.error
        return events

    def feed_raw(self, data: bytes) -> list[bytes | SSEEvent]:
        """Like :meth:`feed`, but a plain ``message`` event comes as its data bytes.

        This is the hot path the vLLM decoder uses: vLLM sends only unnamed
        ``data:`` events, and skipping one object per event matters there.
        Events with a type or an ID still come as :class:`SSEEvent`. An
        oversized event sets :attr:`error` and stops decoding; the events before
        it are returned, and every later call raises the error.
        """
        if self.error is not None:
            raise self.error
        if not data:
            return []
        if (
            # Fast path: exactly one whole `data: ...\n\n` event, as vLLM frames it.
            not self._partial
            and not self._data
            and not self._skip_lf
            and not self._event_type
            and len(data) <= self.max_event_size
            and data[:6] == b"data: "
            and data.find(b"\n") == len(data) - 2
            and data[-1:] == b"\n"
            and b"\r" not in data
        ):
            self.lines += 2
            self.events += 1
            self._event_type = ""
            if self._id_changed:
                return [SSEEvent(data[6:-2], "message", self.last_event_id)]
            return [data[6:-2]]
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            if data[-1:] == b"\r":
                self._skip_lf = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in data:
            if data:
                self._partial.append(data)
                self._partial_size += len(data)
                self._check_size()
            return []
        if self._partial_size + self._data_size + len(data) > self.max_event_size:
            return self._feed_lines_checked(data)
        return self._feed_lines(data)

    def _feed_lines(self, data: bytes) -> list[bytes | SSEEvent]:
        if self._partial:
            self._partial.append(data)
            data = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        out: list[bytes | SSEEvent] = []
        line = self._line
        pos = 0
        # An event begun in an earlier read: finish it line by line.
        while self._data or self._event_type:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            self.lines += 1
            line(data[pos:end], out)
            pos = end + 1
        if pos:
            data = data[pos:]
        if not (self._data or self._event_type):
            # Whole events, split at the blank lines that end them: a plain
            # one-line `data: ...` event (all vLLM sends) costs no line loop.
            parts = data.split(b"\n\n")
            data = parts.pop()
            plain = 0
            for part in parts:
                if part[:6] == b"data: " and b"\n" not in part:
                    plain += 1
                    if self._id_changed:
                        out.append(SSEEvent(part[6:], "message", self.last_event_id))
                    else:
                        out.append(part[6:])
                    continue
                for piece in part.split(b"\n"):
                    line(piece, out)
                line(b"", out)
                self.lines += part.count(b"\n") + 2
            self.lines += 2 * plain
            self.events += plain
        # What is left: complete lines of an event still open, then a partial line.
        if data:
            pieces = data.split(b"\n")
            tail = pieces.pop()
            self.lines += len(pieces)
            for piece in pieces:
                line(piece, out)
            if tail:
                self._partial.append(tail)
                self._partial_size = len(tail)
        self._check_size()
        return out

    def _line(self, line: bytes, out: list[bytes | SSEEvent]) -> None:
        """Process one complete line (without its line end)."""
        if not line:
            if self._data:
                out.append(self._dispatch())
            else:
                self._event_type = ""
        elif line[:5] == b"data:":
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data.append(value)
            self._data_size += len(value) + 1
        elif line[:1] != b":":
            self._field(line)

    def _feed_lines_checked(self, data: bytes) -> list[bytes | SSEEvent]:
        # Enough bytes for an oversized event: decode line by line so that the
        # events before it survive and nothing past the limit is buffered.
        out: list[bytes | SSEEvent] = []
        start = 0
        while self.error is None:
            end = data.find(b"\n", start)
            if end < 0:
                out += self._feed_lines(data[start:]) if start < len(data) else []
                break
            if self._partial_size + self._data_size + (end - start) > self.max_event_size:
                self._partial_size += end - start
                self._check_size()
                break
            out += self._feed_lines(data[start : end + 1])
            start = end + 1
        return out

    def finish(self) -> int:
        """Declare end of input; return the bytes of an undispatched event, if any.

        Per the SSE rules an event without its closing blank line is dropped;
        the returned count lets callers report it. The decoder is reset.

        Raises:
            ProtocolError: An event exceeded ``max_event_size`` earlier.
        """
        if self.error is not None:
            raise self.error
        left = self._partial_size + self._data_size
        self._partial.clear()
        self._partial_size = 0
        self._data.clear()
        self._data_size = 0
        return left

    def buffer_preview(self, limit: int = 200) -> str:
        """Return the tail of the bytes not yet dispatched, for diagnostics."""
        raw = b"\n".join(self._data) + (b"\n" if self._data else b"") + b"".join(self._partial)
        if len(raw) > limit:
            raw = b"..." + raw[-limit:]
        return raw.decode("utf-8", "replace")

    def _dispatch(self) -> bytes | SSEEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data.clear()
        self._data_size = 0
        self.events += 1
        event_type = self._event_type
        self._event_type = ""
        if event_type or self._id_changed:
            return SSEEvent(data, event_type or "message", self.last_event_id)
        return data

    def _field(self, line: bytes) -> None:
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", "replace")
            self._id_changed = True
        # "retry" and unknown fields are ignored, as the SSE rules say.

    def _check_size(self) -> None:
        size = self._partial_size + self._data_size
        if size > self.max_event_size:
            self._partial.clear()
            self._data.clear()
            self.error = ProtocolError(
                f"server-sent event exceeds max_event_size={self.max_event_size} bytes "
                f"({size} bytes buffered without an event boundary); the stream is not valid "
                "SSE or the limit is too low"
            )
