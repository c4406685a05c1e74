"""vLLM's wire schemas: the JSON shapes tokstream reads, as typed msgspec structs.

* :class:`Chunk` (with :class:`Choice`, :class:`WireUsage`, :class:`Logprobs`):
  one ``data:`` payload of a streamed ``/v1/completions`` response. It only
  notes whether the payload is an error (``error`` present, or ``"object":
  "error"``); the error itself is read with the envelope below.
* :class:`ErrorEnvelope`: vLLM's error body, the one struct for both places it
  appears: an HTTP error response and an error event inside an HTTP 200
  stream. :meth:`ErrorEnvelope.server_error` is the one reading of it.
* :class:`ModelList` / :class:`ModelCard`: ``GET /v1/models``.

Only the fields tokstream uses are declared; msgspec skips the rest. Data and
decoding only: no I/O, and no policy on what an error means (the callers in
``_decoder.py`` and ``_http_errors.py`` build the exceptions).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

__all__ = [
    "Choice",
    "Chunk",
    "ErrorDetail",
    "ErrorEnvelope",
    "Logprobs",
    "ModelCard",
    "ModelList",
    "ServerError",
    "WireUsage",
    "decode_chunk",
    "decode_error",
]


class Logprobs(msgspec.Struct):
    """A choice's ``logprobs`` (the completions API's legacy shape)."""

    token_logprobs: list[float | None] | None = None


class Choice(msgspec.Struct):
    """One entry of a chunk's ``choices``."""

    index: int = 0
    text: str | None = ""
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    logprobs: Logprobs | None = None


class WireUsage(msgspec.Struct):
    """The usage chunk's counts (``stream_options.include_usage``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Chunk(msgspec.Struct):
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

_decode_envelope = msgspec.json.Decoder(ErrorEnvelope).decode


def decode_error(body: bytes) -> ServerError | None:
    """Read an error body (HTTP or in-band); ``None`` if it is not a JSON error envelope."""
    try:
        return _decode_envelope(body).server_error()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
