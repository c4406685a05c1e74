"""vLLM's wire schemas: the JSON shapes tokstream reads, as typed msgspec structs.

* :class:`Chunk` (with :class:`Choice`, :class:`WireUsage`, :class:`Logprobs`):
  one ``data:`` payload of a streamed ``/v1/completions`` response. It only
  notes whether the payload is an error (``error`` present, or ``"object":
  "error"``); the error itself is read with the envelope below.
  :class:`FirstChunk` is the same with the prompt echo (``prompt_token_ids``)
  kept as raw JSON, for :func:`decode_token_ids`: a 32k-ID echo becomes one
  int32 array without a Python int per ID. The stream decoder reads chunks
  with it until the echo arrived, then with :class:`Chunk`, which skips it.
* :class:`ErrorEnvelope`: vLLM's error body, the one struct for both places it
  appears: an HTTP error response and an error event inside an HTTP 200
  stream. :meth:`ErrorEnvelope.server_error` is the one reading of it.
* :class:`ModelList` / :class:`ModelCard`: ``GET /v1/models``.

Only the fields tokstream uses are declared; msgspec skips the rest. The
per-chunk structs are not tracked by the garbage collector (decoded JSON has
no cycles). Data and decoding only: no I/O, and no policy on what an error
means (the callers in ``_decoder.py`` and ``_http_errors.py`` build the
exceptions).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec

from .._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = [
    "Choice",
    "Chunk",
    "ErrorDetail",
    "ErrorEnvelope",
    "Logprobs",
    "ModelCard",
    "ModelList",
    "ServerError",
    "TokenId",
    "WireUsage",
    "FirstChoice",
    "FirstChunk",
    "decode_chunk",
    "decode_error",
    "decode_first_chunk",
    "decode_token_ids",
]

_NULL = msgspec.Raw(b"null")
_INT32_MAX = 2**31 - 1

TokenId = Annotated[int, msgspec.Meta(ge=0, le=_INT32_MAX)]
"""A token ID as the wire may carry it: ``0..2**31-1``, checked by msgspec as it decodes
(a negative ID or one outside int32 fails the chunk, at no measurable cost)."""


class Logprobs(msgspec.Struct, gc=False):
    """A choice's ``logprobs`` (the completions API's legacy shape)."""

    token_logprobs: list[float | None] | None = None


class Choice(msgspec.Struct, gc=False):
    """One entry of a chunk's ``choices`` (the prompt echo skipped)."""

    index: int = 0
    text: str | None = ""
    token_ids: list[TokenId] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    logprobs: Logprobs | None = None


class FirstChoice(Choice, gc=False):
    """A choice with the prompt echo, as raw JSON (``b"null"`` when absent)."""

    prompt_token_ids: msgspec.Raw = _NULL


class WireUsage(msgspec.Struct, gc=False):
    """The usage chunk's counts (``stream_options.include_usage``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Chunk(msgspec.Struct, gc=False):
    """One streamed ``data:`` payload.

    ``error`` is left untyped: it only says that the payload is an error, which
    :func:`decode_error` then reads from the whole payload with the one envelope
    (the flat error shape has no ``error`` key, only ``"object": "error"``).
    """

    id: str | None = None
    object: str | None = None
    choices: list[Choice] | None = None
    usage: WireUsage | None = None
    error: Any = None

    @property
    def is_error(self) -> bool:
        """Whether this payload is an error event rather than a completion chunk."""
        return self.error is not None or self.object == "error"


class FirstChunk(Chunk, gc=False):
    """A chunk whose choices keep the prompt echo (see :class:`FirstChoice`)."""

    choices: list[FirstChoice] | None = None  # type: ignore[assignment]


class ErrorDetail(msgspec.Struct):
    """The object under ``"error"`` in vLLM's (OpenAI-style) error body."""

    message: str | None = None
    type: str | None = None
    param: Any = None
    code: int | str | None = None


class ServerError(NamedTuple):
    """What the server said about an error, whichever shape it used.

    Attributes:
        message: The server's message, or ``None`` if the body had none.
        type: The server's error type (e.g. ``"BadRequestError"``).
        param: The offending parameter, as a string.
        code: The server's error code (vLLM repeats the HTTP status).
    """

    message: str | None
    type: str | None = None
    param: str | None = None
    code: int | str | None = None


class ErrorEnvelope(msgspec.Struct):
    """vLLM's error body, in every shape seen from vLLM and what sits in front of it.

    * ``{"error": {"message", "type", "param", "code"}}`` (vLLM, OpenAI);
    * ``{"error": "a string"}``;
    * the older flat ``{"object": "error", "message", "type", "param", "code"}``;
    * FastAPI's ``{"detail": ...}``.
    """

    error: ErrorDetail | str | None = None
    object: str | None = None
    message: str | None = None
    type: str | None = None
    param: Any = None
    code: int | str | None = None
    detail: Any = None

    def server_error(self) -> ServerError:
        """Return the server's message, type, param and code from whichever shape was sent."""
        err = self.error
        if isinstance(err, ErrorDetail):
            return ServerError(err.message, err.type, _param(err.param), err.code)
        if isinstance(err, str):
            return ServerError(err)
        if self.message is not None or self.object == "error":
            return ServerError(self.message, self.type, _param(self.param), self.code)
        if self.detail is not None:
            return ServerError(self.detail if isinstance(self.detail, str) else str(self.detail))
        return ServerError(None)


def _param(value: Any) -> str | None:
    return None if value is None else str(value)


class ModelCard(msgspec.Struct):
    """One entry of ``GET /v1/models``."""

    id: str
    owned_by: str | None = None
    root: str | None = None
    max_model_len: int | None = None


class ModelList(msgspec.Struct):
    """The body of ``GET /v1/models``."""

    data: list[ModelCard]


decode_chunk = msgspec.json.Decoder(Chunk).decode
"""Decode one ``data:`` payload; raises ``msgspec.DecodeError`` / ``ValidationError``."""

decode_first_chunk = msgspec.json.Decoder(FirstChunk).decode
"""Decode a payload that may carry the prompt echo (raw); raises as :func:`decode_chunk`."""

_decode_int_list = msgspec.json.Decoder(list[int]).decode


def decode_token_ids(raw: msgspec.Raw) -> npt.NDArray[np.int32] | None:
    """Read a raw JSON array of token IDs into a read-only int32 array (``None`` for ``null``).

    A large array (a 32k-ID prompt echo, about 200 KB of JSON) is parsed by
    numpy straight from the JSON text, a window of about 16 KB at a time into
    the result, so that it costs about 0.5 ms and no Python int per ID or copy
    of the whole text; anything numpy's reading does not match exactly is
    decoded strictly by msgspec instead.

    Raises:
        ValueError: Not an array of integers, or an ID outside ``0..2**31-1``
            (``msgspec.ValidationError`` and ``DecodeError`` are ValueErrors).
    """
    view = memoryview(raw)
    if len(view) == 4 and view.tobytes() == b"null":
        return None
    ids = _parse_int_array(view)
    if ids is None:
        ids = np.array(_decode_int_list(view), dtype=np.int64)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) > _INT32_MAX):
            raise ValueError("a token ID is outside 0..2**31-1")
        ids = ids.astype(np.int32)
    ids.flags.writeable = False
    return ids


_WINDOW = 16 * 1024


def _parse_int_array(view: memoryview) -> npt.NDArray[np.int32] | None:
    """Parse ``[1,2,...]`` a window at a time; ``None`` if it is not exactly that."""
    n = len(view)
    start = 0
    while start < n and view[start] in b" \t\r\n":
        start += 1
    end = n
    while end > start and view[end - 1] in b" \t\r\n":
        end -= 1
    if end - start < 2 or view[start] != 91 or view[end - 1] != 93:  # [ ]
        return None
    start += 1
    end -= 1
    octets = np.frombuffer(view, dtype=np.uint8)
    if not np.any(octets[start:end] > 32):  # "[]", "[ ]"
        return np.empty(0, dtype=np.int32)
    commas = sum(
        int(np.count_nonzero(octets[i : min(i + _WINDOW, end)] == 44))
        for i in range(start, end, _WINDOW)
    )
    out = np.empty(commas + 1, dtype=np.int32)
    filled = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns, then stops, at unmatched text
        while start < end:
            stop = min(start + _WINDOW, end)
            if stop < end:  # cut the window after a comma
                cut = bytes(view[stop - 32 : stop]).rfind(b",")
                if cut < 0:
                    return None
                stop = stop - 32 + cut + 1
            text = bytes(view[start:stop])
            expected = text.count(b",") + (1 if stop == end else 0)
            try:
                part = np.fromstring(text, dtype=np.int64, sep=",")
            except ValueError:
                return None
            if len(part) != expected or filled + len(part) > len(out):
                return None
            if len(part) and (int(part.min()) < 0 or int(part.max()) > _INT32_MAX):
                raise ValueError("a token ID is outside 0..2**31-1")
            out[filled : filled + len(part)] = part
            filled += len(part)
            start = stop
    return out if filled == len(out) else None


_decode_envelope = msgspec.json.Decoder(ErrorEnvelope).decode


def decode_error(body: bytes) -> ServerError | None:
    """Read an error body (HTTP or in-band); ``None`` if it is not a JSON error envelope."""
    try:
        return _decode_envelope(body).server_error()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
