"""A sans-IO decoder for vLLM's streamed ``/v1/completions`` body.

``StreamDecoder.feed(data)`` takes body bytes (split anywhere) and returns
stream events: one :class:`~tokstream.Token` per token ID, in order, then
exactly one :class:`~tokstream.Done` or :class:`~tokstream.Error`. It layers
the vLLM chunk rules over :class:`~tokstream._sse.SSEDecoder`.

Theory of operation:

* Each ``data:`` payload is one JSON chunk, decoded with the typed msgspec
  structs of ``_wire.py``.
  A payload that is not valid JSON is skipped and counted; the first few are
  kept (truncated) for diagnostics. ``data: [DONE]`` ends the stream.
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
  early). A connection that drops is the client's to report
  (:class:`~tokstream.RemoteDisconnected`).

No I/O, no clock: timing fields of the statistics are the caller's (the
client fills them in).
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable

import msgspec
import numpy as np
import numpy.typing as npt

from .._events import Done, Error, Event, StreamStatistics, Token, Usage
from .._exceptions import (
    InBandError,
    ProtocolError,
    TokstreamError,
)
from ._sse import DEFAULT_MAX_EVENT_SIZE, SSEDecoder, SSEEvent
from ._wire import (
    Chunk,
    FirstChoice,
    decode_chunk,
    decode_error,
    decode_first_chunk,
    decode_token_ids,
)

__all__ = ["StreamDecoder", "with_timing"]

_PREVIEW_CHARS = 200
_MAX_PREVIEWS = 3


_DONE = b"[DONE]"


class StreamDecoder:
    """Turn a vLLM completion stream's body bytes into stream events.

    Args:
        max_event_size: The largest SSE event accepted (default 4 MiB).
        url: The request URL, named in error messages.
        request_id: The request ID, named in error messages.

    Attributes:
        finished: True once the terminal ``Done`` or ``Error`` was returned.
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

    # -- public API ---------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Push body bytes; return the events they complete, in order.

        Never raises for bad input: a protocol violation is returned as the
        terminal ``Error`` event.
        """
        if self.finished or not data:
            return []
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
                self._undecodable(payload, exc, out)
            else:
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
                        try:
                            add_ids(ids)
                        except OverflowError:
                            append(self._protocol_error("a token ID outside int32", payload))
                            return out
                        piece = choice.text or ""
                        text += piece.encode()  # msgspec refuses lone surrogates
                        self.tokens += len(ids)
                        if len(ids) == 1:
                            append(Token(ids[0], piece))
                        else:
                            last = len(ids) - 1
                            out.extend(
                                [
                                    Token(tid, piece if i == last else "")
                                    for i, tid in enumerate(ids)
                                ]
                            )
                        continue
                self._chunk(chunk, payload, out)
                decode = self._decode
                short = (
                    decode is decode_chunk
                    and self._logprobs is None
                    and self._completion_id is not None
                )
            if self._ended():
                return out
        if self._sse.error is not None:
            # The events before the oversized one were delivered above.
            out.append(self.fail(self._sse.error))
        return out

    def finish(self) -> list[Event]:
        """Declare the end of the body; return the terminal event if not yet sent."""
        if self.finished:
            return []
        leftover = self._sse.finish()
        if self._finish_reason is not None:
            return [self._done()]
        detail = f" ({leftover} bytes of an unterminated event)" if leftover else ""
        return [
            self.fail(
                ProtocolError(
                    f"the stream ended before it finished (no finish_reason, no [DONE]){detail}; "
                    f"{self.tokens} tokens had arrived",
                    url=self.url,
                    request_id=self.request_id,
                )
            )
        ]

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
        return Error(exc, self._id_array(), self._text_str(), stats, self._logprob_array())

    def statistics(self) -> StreamStatistics:
        """Return the decoder's counters (timing fields are left at zero)."""
        return StreamStatistics(
            bytes_received=self.bytes_received,
            chunks=self.chunks,
            sse_lines=self._sse.lines,
            sse_events=self._sse.events,
            parse_errors=self.parse_errors,
            parse_error_previews=tuple(self.parse_error_previews),
            tokens=self.tokens,
            buffer_preview=self._sse.buffer_preview(),
        )

    # -- internals ----------------------------------------------------------

    def _ended(self) -> bool:
        return self.finished

    def _undecodable(self, payload: bytes, exc: Exception, out: list[Event]) -> None:
        if isinstance(exc, msgspec.ValidationError) and payload[:1] in (b"{", b"["):
            # Valid JSON of the wrong shape would silently lose tokens.
            out.append(self._protocol_error(f"unexpected chunk shape ({exc})", payload))
            return
        self._parse_error(payload)

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
                self._prompt_ids = decode_token_ids(choice.prompt_token_ids)
            except ValueError as exc:
                out.append(self._protocol_error(f"invalid prompt_token_ids ({exc})", payload))
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
        try:
            self._ids.fromlist(ids)
        except OverflowError:
            out.append(self._protocol_error("a token ID outside int32", payload))
            return
        self._text += text.encode()
        self.tokens += len(ids)
        lp = choice.logprobs.token_logprobs if choice.logprobs is not None else None
        if lp is None and self._logprobs is None:
            last = len(ids) - 1
            out.extend([Token(tid, text if i == last else "") for i, tid in enumerate(ids)])
            return
        self._tokens_with_logprobs(ids, text, lp, out)

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

    def _done(self) -> Done:
        self.finished = True
        return Done(
            finish_reason=self._finish_reason,
            stop_reason=self._stop_reason,
            token_ids=self._id_array(),
            text=self._text_str(),
            prompt_token_ids=self._prompt_ids,
            usage=self._usage,
            logprobs=self._logprob_array(),
            request_id=self._completion_id,
            diagnostics=self.statistics(),
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

    def _parse_error(self, payload: bytes) -> None:
        self.parse_errors += 1
        if len(self.parse_error_previews) < _MAX_PREVIEWS:
            self.parse_error_previews.append(_preview(payload))

    def _protocol_error(self, problem: str, payload: bytes) -> Error:
        return self.fail(
            ProtocolError(
                f"invalid vLLM stream: {problem}; chunk: {_preview(payload)!r}",
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
            f"the server reported an error inside the stream ({where}): {message} "
            f"[type={server.type}, code={server.code}]",
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
