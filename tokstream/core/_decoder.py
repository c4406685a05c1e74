"""A sans-IO decoder for vLLM's streamed ``/v1/completions`` body.

``StreamDecoder.feed(data)`` takes body bytes (split anywhere) and returns
stream events: one :class:`~tokstream.Token` per token ID, in order, then
exactly one :class:`~tokstream.Done` or :class:`~tokstream.Error`. It layers
the vLLM chunk rules over :class:`~tokstream._sse.SSEDecoder`.

Theory of operation:

* Each ``data:`` payload is one JSON chunk, decoded with the typed msgspec
  structs of ``_wire.py``. ``data: [DONE]`` ends the stream. **A stream whose
  IDs may be incomplete never ends in ``Done``**: a payload that is not valid
  JSON (cut short, invalid UTF-8, a lone surrogate, ``-Infinity``), valid
  JSON of the wrong shape, or a token ID that is negative or outside int32
  ends it with a ``ProtocolError`` that keeps the IDs so far and shows the
  payload. Only an empty payload (``data:`` alone, which carries nothing) is
  skipped.
* A chunk carries ``token_ids`` and ``text``. vLLM merges deltas when the
  reader falls behind, so one chunk can carry many IDs (709 were seen). Each ID
  becomes one ``Token``. **A chunk's whole text goes on the last Token of that
  chunk; the others get ""**, because vLLM releases text only once it is
  complete (UTF-8 hold-back, stop-string hold-back), i.e. with the newest ID.
  The concatenation of all Token texts therefore equals the concatenation of
  the chunks' texts, exactly. Text may be "" while IDs arrive (a held-back
  UTF-8 byte, the stop token), and lags the IDs when stop strings are set.
* ``[DONE]`` ends the stream; before any ``finish_reason`` it is a
  ``ProtocolError`` (vLLM always finishes the choice first).
* ``prompt_token_ids`` (first chunk only) is kept and returned on ``Done`` as
  int32 (later chunks are read without it), with ``finish_reason``,
  ``stop_reason`` (int, str or None), usage
  (from the ``choices: []`` usage chunk), every ID and the whole text.
  ``usage.completion_tokens`` must equal the IDs delivered; a mismatch means
  IDs went missing (or appeared) and ends the stream with ``ProtocolError``.
* ``finish_reason: "abort"`` (vLLM aborted the request: a shutdown, a pause for
  new weights) ends the stream with :class:`~tokstream.RequestAborted`, never
  ``Done``, keeping the IDs.
* What is kept for ``Done`` is compact: the IDs in an ``array('i')`` (4 bytes
  each), the text as UTF-8 in one ``bytearray``, logprobs in an
  ``array('f')``, the prompt echo parsed straight into int32 (no Python object
  per token or per ID). An ID outside int32 is a ``ProtocolError``.
* The common chunk (one choice, IDs, no finish, usage or logprobs) takes one
  short path per payload; everything else goes through the full checks.
* An error payload (``{"error": {...}}`` or the flat ``{"object": "error",
  "message": ...}``) inside the stream becomes an ``Error`` with
  :class:`~tokstream.InBandError`, read with the same envelope as an HTTP error
  body (``_wire.ErrorEnvelope``). Malformed structure (no ``token_ids``, more
  than one choice, an oversized event) becomes ``ProtocolError``.
* After the terminal event the decoder ignores further input.
* ``finish()`` declares end of input: a stream that finished but sent no
  ``[DONE]`` still yields ``Done``; one that had not finished yields
  ``Error`` (:class:`~tokstream.ProtocolError`: the body ended cleanly but
  early, or was empty, or was not an event stream at all, each said so with
  what arrived). A connection that drops is the client's to report
  (:class:`~tokstream.RemoteDisconnected`).
* Every message names the URL and request ID (:attr:`StreamDecoder.url`,
  :attr:`StreamDecoder.request_id`).
* :meth:`StreamDecoder.restart` begins another attempt of the same request (a
  retry, or a resume after a drop) and keeps what arrived: a continuation's
  IDs are appended, its prompt echo must equal the first echo plus the IDs
  received before it, and ``Done`` reports the whole stream (the first prompt
  echo, every ID, usage summed over the splice).

No I/O, no clock: timing and attempt fields of the statistics are the
caller's (the client fills them in).
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .._events import Done, Error, Event, StreamStatistics, Token, Usage
from .._exceptions import (
    InBandError,
    ProtocolError,
    RequestAborted,
    TokstreamError,
)
from .._lazy import lazy_module
from ._sse import DEFAULT_MAX_EVENT_SIZE, SSEDecoder, SSEEvent
from ._wire import (
    Chunk,
    FirstChoice,
    decode_chunk,
    decode_error,
    decode_first_chunk,
    decode_token_ids,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = ["StreamDecoder", "with_timing"]

_PREVIEW_CHARS = 200
_MAX_PREVIEWS = 3
_HEAD_BYTES = 300


_DONE = b"[DONE]"
_SSE_FIELDS = (b"data", b"event", b"id", b"retry")


class StreamDecoder:
    """Turn a vLLM completion stream's body bytes into stream events.

    Args:
        max_event_size: The largest SSE event accepted (default 4 MiB).
        url: The request URL, named in error messages.
        request_id: The request ID, named in error messages.

    Attributes:
        finished: True once the terminal ``Done`` or ``Error`` was returned.
        tokens: Token IDs decoded so far, over every attempt.
        response_info: What the response head said (``"HTTP 200,
            content-type text/html"``), named when a body is not a stream;
            the caller sets it.
        replica: Put on the terminal event (which replica served the stream);
            the shell sets it from the response headers.
    """

    def __init__(
        self,
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self._sse = SSEDecoder(max_event_size)
        self.url = url
        self.request_id = request_id
        self.response_info: str | None = None
        self.replica: str | None = None
        self.finished = False
        self.bytes_received = 0
        self.chunks = 0
        self.tokens = 0
        self.parse_errors = 0
        self.parse_error_previews: list[str] = []
        self._ids = array("i")
        self._text = bytearray()
        self._final_text: str | None = None
        self._logprobs: array[float] | None = None
        self._prompt_ids: npt.NDArray[np.int32] | None = None
        # The first chunk with a choice is read with the prompt echo (raw JSON).
        self._decode: Callable[[bytes], Chunk] = decode_first_chunk
        self._finish_reason: str | None = None
        self._stop_reason: int | str | None = None
        self._usage: Usage | None = None
        self._completion_id: str | None = None
        # Per attempt: the IDs and bytes before it, and the start of its body.
        self._base = 0
        self._base_bytes = 0
        self._head: bytes | None = None
        self._sse_before = (0, 0)  # lines, events of earlier attempts
        self._preview: str | None = None  # the buffer's tail, kept past finish()
        self._ended_early = False

    # -- public API ---------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Push body bytes; return the events they complete, in order.

        Never raises for bad input: a protocol violation is returned as the
        terminal ``Error`` event.
        """
        if self.finished or not data:
            return []
        if self._head is None:
            self._head = data[:_HEAD_BYTES]
        self.bytes_received += len(data)
        self.chunks += 1
        out: list[Event] = []
        append = out.append
        decode = self._decode
        # The short path applies once the first chunk was read the long way.
        short = (
            decode is decode_chunk and self._logprobs is None and self._completion_id is not None
        )
        add_ids = self._ids.fromlist
        text = self._text
        for payload in self._sse.feed_raw(data):
            if payload.__class__ is not bytes:
                assert isinstance(payload, SSEEvent)
                if payload.event not in ("message", "error"):
                    continue
                payload = payload.data
            if payload == _DONE:
                if self._finish_reason is None:
                    problem = "[DONE] came before any finish_reason"
                    append(self._protocol_error(problem, payload))
                else:
                    append(self._done())
                return out
            try:
                chunk = decode(payload)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                if self._undecodable(payload, exc, out):
                    return out
                continue
            # The common chunk: one choice with IDs and text, nothing else to note.
            choices = chunk.choices
            if short and choices and len(choices) == 1 and chunk.usage is None:
                choice = choices[0]
                ids = choice.token_ids
                if (
                    ids
                    and choice.finish_reason is None
                    and choice.logprobs is None
                    and choice.index == 0
                    and chunk.error is None
                    and chunk.object != "error"
                ):
                    add_ids(ids)  # each ID is 0..2**31-1: msgspec checked it
                    piece = choice.text or ""
                    text += piece.encode()  # msgspec refuses lone surrogates
                    self.tokens += len(ids)
                    if len(ids) == 1:
                        append(Token(ids[0], piece))
                    else:
                        last = len(ids) - 1
                        out.extend(
                            [Token(tid, piece if i == last else "") for i, tid in enumerate(ids)]
                        )
                    continue
            self._chunk(chunk, payload, out)
            if self._ended():
                return out
            decode = self._decode
            short = (
                decode is decode_chunk
                and self._logprobs is None
                and self._completion_id is not None
            )
        if self._sse.error is not None:
            # The events before the oversized one were delivered above.
            out.append(self._sse_failure(self._sse.error))
        return out

    def finish(self) -> list[Event]:
        """Declare the end of the body; return the terminal event if not yet sent."""
        if self.finished:
            return []
        self._preview = self._sse.buffer_preview()
        try:
            leftover = self._sse.finish()
        except ProtocolError as exc:  # an oversized event, already reported by feed()
            return [self._sse_failure(exc)]
        if self._finish_reason is not None:
            return [self._done()]
        return [self.fail(ProtocolError(self._cut_short(leftover)))]

    def fail(self, exc: TokstreamError) -> Error:
        """Return the terminal ``Error`` for ``exc`` with what arrived so far.

        The decoder is finished afterwards. ``exc`` gets the URL, request ID and
        diagnostics if it lacks them.
        """
        self.finished = True
        stats = self.statistics()
        if exc.diagnostics is None:
            exc.diagnostics = stats
        exc.url = exc.url or self.url
        exc.request_id = exc.request_id or self.request_id
        return Error(
            exc,
            self._id_array(),
            self._text_str(),
            stats,
            self._logprob_array(),
            replica=self.replica,
        )

    def restart(self) -> None:
        """Begin decoding another attempt of the same request: a retry, or a resume.

        What arrived is kept: the IDs, text and logprobs, the first prompt echo
        and the counters. The next body is read from its start (a new prompt
        echo, finish reason and usage). If IDs had arrived, the next body is a
        continuation: its prompt echo must be the first echo followed by them
        (else the stream ends with ``ProtocolError``), and ``Done`` reports the
        whole stream.
        """
        self._sse_before = (
            self._sse_before[0] + self._sse.lines,
            self._sse_before[1] + self._sse.events,
        )
        self._sse = SSEDecoder(self._sse.max_event_size)
        self.finished = False
        # A terminal event may still hold a view of the IDs (an exported buffer
        # cannot grow): continue in a copy, once per attempt.
        self._ids = array("i", self._ids)
        if self._final_text is not None:
            self._text = bytearray(self._final_text.encode("utf-8", "surrogatepass"))
            self._final_text = None
        self._decode = decode_first_chunk
        self._finish_reason = None
        self._stop_reason = None
        self._usage = None
        self._completion_id = None
        self._base = self.tokens
        self._base_bytes = self.bytes_received
        self._head = None
        self._preview = None
        self._ended_early = False
        self.response_info = None
        self.replica = None  # the next attempt's response says which

    @property
    def finish_reason(self) -> str | None:
        """The current attempt's finish reason, once its finishing chunk arrived."""
        return self._finish_reason

    @property
    def ended_early(self) -> bool:
        """Whether :meth:`finish` found a stream cut short: it had begun, then the body ended."""
        return self._ended_early

    def received_ids(self) -> npt.NDArray[np.int32]:
        """A copy of every ID decoded so far (what a continuation's prompt appends)."""
        return np.array(self._ids, dtype=np.int32)

    @property
    def attempt_tokens(self) -> int:
        """Token IDs decoded in the current attempt (since :meth:`restart`)."""
        return self.tokens - self._base

    @property
    def attempt_bytes(self) -> int:
        """Body bytes received in the current attempt (since :meth:`restart`)."""
        return self.bytes_received - self._base_bytes

    def statistics(self) -> StreamStatistics:
        """Return the decoder's counters (timing and attempt fields are left at their defaults)."""
        return StreamStatistics(
            bytes_received=self.bytes_received,
            chunks=self.chunks,
            sse_lines=self._sse_before[0] + self._sse.lines,
            sse_events=self._sse_before[1] + self._sse.events,
            parse_errors=self.parse_errors,
            parse_error_previews=tuple(self.parse_error_previews),
            tokens=self.tokens,
            buffer_preview=self._sse.buffer_preview() if self._preview is None else self._preview,
        )

    # -- internals ----------------------------------------------------------

    def _ended(self) -> bool:
        return self.finished  # a call: mypy keeps no narrowing of `finished` across it

    def _where(self) -> str:
        url = self.url or "the server"
        return f"{url} (request_id={self.request_id})" if self.request_id else url

    def _undecodable(self, payload: bytes, exc: Exception, out: list[Event]) -> bool:
        """A payload msgspec refused: the stream ends (True), unless it carried nothing."""
        if not payload.strip():
            return False  # `data:` alone: nothing to lose
        if isinstance(exc, msgspec.ValidationError):
            text = str(exc)
            if "token_ids" in text and ("`int` >=" in text or "`int` <=" in text):
                problem = f"a token ID outside int32 0..2**31-1 ({text})"
            else:
                problem = f"a chunk of an unexpected shape ({text})"
        else:
            self.parse_errors += 1
            if len(self.parse_error_previews) < _MAX_PREVIEWS:
                self.parse_error_previews.append(_preview(payload))
            problem = f"a data: payload that is not valid JSON ({exc})"
        out.append(
            self._protocol_error(
                f"{problem}; IDs may be missing, so the stream cannot end in Done", payload
            )
        )
        return True

    def _chunk(self, chunk: Chunk, payload: bytes, out: list[Event]) -> None:
        """Every chunk the short path in :meth:`feed` does not take."""
        if chunk.is_error:
            out.append(self._in_band_error(payload))
            return
        if self._completion_id is None:
            self._completion_id = chunk.id
        if chunk.usage is not None:
            u = chunk.usage
            self._usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
        if not chunk.choices:
            return
        if len(chunk.choices) != 1 or chunk.choices[0].index != 0:
            out.append(
                self._protocol_error(
                    "the stream carries more than one choice; tokstream streams n=1 only",
                    payload,
                )
            )
            return
        choice = chunk.choices[0]
        if isinstance(choice, FirstChoice) and self._decode is decode_first_chunk:
            # vLLM echoes the prompt on the first choice only: skip it from now on.
            self._decode = decode_chunk
            try:
                echo = decode_token_ids(choice.prompt_token_ids)
            except ValueError as exc:
                out.append(self._protocol_error(f"invalid prompt_token_ids ({exc})", payload))
                return
            problem = self._take_echo(echo)
            if problem is not None:
                out.append(self._protocol_error(problem, payload))
                return
        ids = choice.token_ids
        text = choice.text or ""
        if choice.finish_reason is not None:
            self._finish_reason = choice.finish_reason
            self._stop_reason = choice.stop_reason
        if not ids:
            if text or (ids is None and choice.finish_reason is None):
                out.append(
                    self._protocol_error(
                        "a chunk has no token_ids; the server must support "
                        "return_token_ids (vLLM >= 0.10)",
                        payload,
                    )
                )
            return
        self._ids.fromlist(ids)
        self._text += text.encode()
        self.tokens += len(ids)
        lp = choice.logprobs.token_logprobs if choice.logprobs is not None else None
        if lp is None and self._logprobs is None:
            last = len(ids) - 1
            out.extend([Token(tid, text if i == last else "") for i, tid in enumerate(ids)])
            return
        self._tokens_with_logprobs(ids, text, lp, out)

    def _take_echo(self, echo: npt.NDArray[np.int32] | None) -> str | None:
        """Keep the first attempt's prompt echo; check a continuation's against it."""
        base = self._base
        if base == 0 or self._prompt_ids is None:
            if base == 0:
                self._prompt_ids = echo
            return None
        if echo is None:
            return None
        first = self._prompt_ids
        expected = np.concatenate([first, np.array(self._ids[:base], dtype=np.int32)])
        if not np.array_equal(echo, expected):
            return (
                f"the continuation's prompt echo ({len(echo)} IDs) is not the prompt "
                f"({len(first)} IDs) followed by the {base} IDs received before the drop; "
                "the server did not continue this stream"
            )
        return None

    def _tokens_with_logprobs(
        self, ids: list[int], text: str, lp: list[float | None] | None, out: list[Event]
    ) -> None:
        if self._logprobs is None:
            self._logprobs = array("f", [float("nan")]) * (len(self._ids) - len(ids))
        last = len(ids) - 1
        for i, tid in enumerate(ids):
            value = lp[i] if lp is not None and i < len(lp) else None
            self._logprobs.append(float("nan") if value is None else value)
            out.append(Token(tid, text if i == last else "", value))

    def _done(self) -> Done | Error:
        """The stream finished: ``Done``, unless it was aborted or its usage disagrees."""
        delivered = self.tokens - self._base
        if self._finish_reason == "abort":
            return self.fail(
                RequestAborted(
                    f"the server aborted the request to {self._where()} (finish_reason "
                    f'"abort", e.g. it is shutting down or paused generation) after '
                    f"{self.tokens} tokens; the tokens are on the Error event, and "
                    "RetryPolicy(resume=True) would continue from them"
                )
            )
        usage = self._usage
        if usage is not None and usage.completion_tokens != delivered:
            return self.fail(
                ProtocolError(
                    f"invalid vLLM stream from {self._where()}: usage.completion_tokens="
                    f"{usage.completion_tokens}, but {delivered} token IDs arrived; IDs "
                    "went missing (or a proxy changed the stream), so it cannot end in Done"
                )
            )
        if usage is not None and self._base:
            # A continuation: its prompt held the IDs received before the splice.
            usage = Usage(
                usage.prompt_tokens - self._base,
                usage.completion_tokens + self._base,
                usage.total_tokens,
            )
        self.finished = True
        return Done(
            finish_reason=self._finish_reason,
            stop_reason=self._stop_reason,
            token_ids=self._id_array(),
            text=self._text_str(),
            prompt_token_ids=self._prompt_ids,
            usage=usage,
            logprobs=self._logprob_array(),
            request_id=self._completion_id,
            diagnostics=self.statistics(),
            replica=self.replica,
        )

    def _cut_short(self, leftover: int) -> str:
        """The message for a body that ended before the stream finished, saying what arrived."""
        where = self._where()
        info = f"{self.response_info}, " if self.response_info else ""
        received = self.bytes_received - self._base_bytes
        if received == 0:
            return (
                f"the server sent an empty response from {where} ({info}no body); "
                "nothing was streamed, so retrying is safe"
            )
        head_bytes = (self._head or b"").lstrip()
        sse_like = head_bytes[:1] == b":" or head_bytes.startswith(_SSE_FIELDS)
        if self._sse.events == 0 and not sse_like:
            head = _preview(self._head or b"")
            return (
                f"the response from {where} is not an event stream ({info}{received} bytes "
                f"without a data: event; it starts {head!r}); is base_url a vLLM server's /v1?"
            )
        detail = f"; {leftover} bytes of an unterminated event" if leftover else ""
        self._ended_early = True
        return (
            f"the stream from {where} ended before it finished (no finish_reason, no "
            f"[DONE]{detail}); {self.tokens} tokens had arrived"
        )

    def _logprob_array(self) -> npt.NDArray[np.float32] | None:
        if self._logprobs is None:
            return None
        logprobs = np.array(self._logprobs, dtype=np.float32)
        logprobs.flags.writeable = False
        return logprobs

    def _id_array(self) -> npt.NDArray[np.int32]:
        # Called once the decoder is finished: share the array's memory (it can
        # no longer grow: an exported buffer cannot be resized).
        arr: npt.NDArray[np.int32] = np.frombuffer(self._ids, dtype=np.int32)
        arr.flags.writeable = False
        return arr

    def _text_str(self) -> str:
        if self._final_text is None:
            self._final_text = self._text.decode("utf-8", "surrogatepass")
            self._text = bytearray()  # the str is all that is kept from now on
        return self._final_text

    def _sse_failure(self, exc: ProtocolError) -> Error:
        """The SSE layer's error (it knows no URL), said with where it came from."""
        return self.fail(
            ProtocolError(
                f"invalid event stream from {self._where()}: {exc.message}",
                url=self.url,
                request_id=self.request_id,
            )
        )

    def _protocol_error(self, problem: str, payload: bytes) -> Error:
        return self.fail(
            ProtocolError(
                f"invalid vLLM stream from {self._where()}: {problem}; "
                f"chunk: {_preview(payload)!r}",
                url=self.url,
                request_id=self.request_id,
            )
        )

    def _in_band_error(self, payload: bytes) -> Error:
        server = decode_error(payload)
        if server is None:
            return self._protocol_error("an error event that is not an error object", payload)
        message = server.message or ""
        where = f"{self.tokens} tokens in" if self.tokens else "before any token"
        exc = InBandError(
            f"the server reported an error inside the stream from {self._where()} ({where}): "
            f"{message} [type={server.type}, code={server.code}]",
            server_message=message,
            type=server.type,
            param=server.param,
            code=server.code,
            url=self.url,
            request_id=self.request_id,
        )
        return self.fail(exc)


def _preview(payload: bytes) -> str:
    text = payload[: _PREVIEW_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."


def with_timing(event: Done | Error, elapsed: float, ttft: float | None) -> Done | Error:
    """Return ``event`` with timing filled into its diagnostics (and its error's)."""
    stats = dataclasses.replace(event.diagnostics, elapsed=elapsed, time_to_first_token=ttft)
    if isinstance(event, Error) and isinstance(event.error, TokstreamError):
        event.error.diagnostics = stats
    return dataclasses.replace(event, diagnostics=stats)
