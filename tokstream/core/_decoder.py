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
  int32, with ``finish_reason``, ``stop_reason`` (int, str or None), usage
  (from the ``choices: []`` usage chunk), every ID and the whole text.
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
from ._wire import decode_chunk, decode_error

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
        self._ids: list[int] = []
        self._texts: list[str] = []
        self._logprobs: list[float] | None = None
        self._prompt_ids: list[int] | None = None
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
        for payload in self._sse.feed_raw(data):
            if isinstance(payload, SSEEvent):
                if payload.event not in ("message", "error"):
                    continue
                payload = payload.data
            if payload == _DONE:
                if self._finish_reason is None:
                    problem = "[DONE] came before any finish_reason"
                    out.append(self._protocol_error(problem, payload))
                else:
                    out.append(self._done())
                return out
            self._chunk(payload, out)
            if out and isinstance(out[-1], (Done, Error)):
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
        return Error(exc, self._id_array(), "".join(self._texts), stats)

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

    def _chunk(self, payload: bytes, out: list[Event]) -> None:
        try:
            chunk = decode_chunk(payload)
        except msgspec.ValidationError as exc:
            if payload[:1] in (b"{", b"["):
                # Valid JSON of the wrong shape would silently lose tokens.
                out.append(self._protocol_error(f"unexpected chunk shape ({exc})", payload))
                return
            self._parse_error(payload)
            return
        except msgspec.DecodeError:
            self._parse_error(payload)
            return
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
        if choice.prompt_token_ids is not None and self._prompt_ids is None:
            self._prompt_ids = choice.prompt_token_ids
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
        self._ids.extend(ids)
        self._texts.append(text)
        self.tokens += len(ids)
        lp = choice.logprobs.token_logprobs if choice.logprobs is not None else None
        if lp is None and self._logprobs is None:
            if len(ids) == 1:
                out.append(Token(ids[0], text))
            else:
                last = len(ids) - 1
                out.extend([Token(tid, text if i == last else "") for i, tid in enumerate(ids)])
            return
        self._tokens_with_logprobs(ids, text, lp, out)

    def _tokens_with_logprobs(
        self, ids: list[int], text: str, lp: list[float | None] | None, out: list[Event]
    ) -> None:
        if self._logprobs is None:
            self._logprobs = [float("nan")] * (len(self._ids) - len(ids))
        last = len(ids) - 1
        for i, tid in enumerate(ids):
            value = lp[i] if lp is not None and i < len(lp) else None
            self._logprobs.append(float("nan") if value is None else value)
            out.append(Token(tid, text if i == last else "", value))

    def _done(self) -> Done:
        self.finished = True
        logprobs = None
        if self._logprobs is not None:
            logprobs = np.array(self._logprobs, dtype=np.float32)
            logprobs.flags.writeable = False
        prompt = None
        if self._prompt_ids is not None:
            prompt = np.array(self._prompt_ids, dtype=np.int32)
            prompt.flags.writeable = False
        return Done(
            finish_reason=self._finish_reason,
            stop_reason=self._stop_reason,
            token_ids=self._id_array(),
            text="".join(self._texts),
            prompt_token_ids=prompt,
            usage=self._usage,
            logprobs=logprobs,
            request_id=self._completion_id,
            diagnostics=self.statistics(),
        )

    def _id_array(self) -> npt.NDArray[np.int32]:
        arr = np.array(self._ids, dtype=np.int32)
        arr.flags.writeable = False
        return arr

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
