"""The completion request: fields, local validation, and fast JSON encoding.

:class:`CompletionRequest` holds what one ``POST /v1/completions`` sends. It
validates itself when built and raises :class:`~tokstream.InvalidRequest`,
naming the field and the value, before any I/O. ``encode()`` produces the JSON
body; only fields that are set are sent, except ``max_tokens`` (always) and the
streaming trio ``stream``, ``return_token_ids`` and ``stream_options``.

A numpy prompt is serialised by vectorised digit arithmetic, never through a
Python list per token: a 32k-ID prompt encodes in well under a millisecond.

This module does no I/O and knows nothing of HTTP beyond the body's shape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from .._exceptions import InvalidRequest
from .._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = ["CompletionRequest", "encode_token_ids"]

_json_encode = msgspec.json.Encoder().encode

# Fields the body always carries for a token stream; ``extra_body`` cannot drop them.
_STREAM_FIELDS: dict[str, Any] = {
    "stream": True,
    "return_token_ids": True,
    "stream_options": {"include_usage": True},
}
_MAX_ID = 2**31 - 1


def _normalise_prompt(prompt: object) -> npt.NDArray[np.int64]:
    if isinstance(prompt, (str, bytes)):
        raise InvalidRequest(
            "prompt", prompt, "must be token IDs (a numpy integer array or a sequence of ints)"
        )
    if isinstance(prompt, np.ndarray):
        arr: npt.NDArray[Any] = prompt
    else:
        if not isinstance(prompt, Sequence):
            raise InvalidRequest(
                "prompt", prompt, "must be token IDs (a numpy integer array or a sequence of ints)"
            )
        for i, tok in enumerate(prompt):
            if not isinstance(tok, (int, np.integer)) or isinstance(tok, bool):
                raise InvalidRequest(f"prompt[{i}]", tok, "token IDs must be integers")
            if not 0 <= tok <= _MAX_ID:
                problem = "token IDs must be non-negative" if tok < 0 else "does not fit in int32"
                raise InvalidRequest(f"prompt[{i}]", tok, problem)
        arr = np.asarray(prompt, dtype=np.int64) if len(prompt) else np.zeros(0, np.int64)
    if arr.ndim != 1:
        raise InvalidRequest("prompt", f"array of shape {arr.shape}", "must be one-dimensional")
    if arr.size == 0:
        raise InvalidRequest("prompt", [], "is empty; send at least one token ID")
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise InvalidRequest(
            "prompt", f"array of dtype {arr.dtype}", "token IDs must be an integer array"
        )
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        i = int(np.argmax(arr < 0))
        raise InvalidRequest(f"prompt[{i}]", int(arr[i]), "token IDs must be non-negative")
    if int(arr.max()) > _MAX_ID:
        i = int(np.argmax(arr > _MAX_ID))
        raise InvalidRequest(f"prompt[{i}]", int(arr[i]), "token ID does not fit in int32")
    return arr.astype(np.int64, copy=False)


def _id_rows(ids: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """Return an ``(n, width + 1)`` byte matrix: right-aligned digits, then a comma.

    Leading zeros become spaces (JSON allows whitespace before a number), so
    every row has the same width and no per-ID compaction is needed. The work
    is a handful of vectorised passes per digit over reused scratch buffers:
    fresh large buffers would page-fault on every call.
    """
    n = int(ids.size)
    x, q, d, z = _scratch(n)
    np.copyto(x, ids, casting="unsafe")
    width = len(str(int(x.max())))
    rows = np.empty((n, width + 1), dtype=np.uint8)
    rows[:, width] = ord(",")
    zb = z.view(np.uint8)
    ten, ascii_zero = np.uint32(10), np.uint32(ord("0"))  # numpy loads on first use
    for col in range(width - 1, -1, -1):
        np.floor_divide(x, ten, out=q)
        np.multiply(q, ten, out=d)
        np.subtract(x, d, out=d)
        d += ascii_zero
        if col < width - 1:
            # A leading zero (nothing left above this digit) becomes "0" - 16 = " ".
            np.equal(x, 0, out=z)
            zb <<= 4
            np.subtract(d, zb, out=d)
        rows[:, col] = d
        x, q = q, x
    return rows


def encode_token_ids(ids: npt.NDArray[np.integer[Any]]) -> bytes:
    """Encode non-negative integer IDs as a JSON array, vectorised.

    Numbers are right-aligned with spaces to a common width (valid JSON), and
    no Python object is built per ID.

    Args:
        ids: A one-dimensional array of non-negative integers below 2**31.

    Returns:
        The bytes of a JSON array, e.g. ``b"[  42,1879]"``.
    """
    if ids.size == 0:
        return b"[]"
    return b"".join(_ids_json_parts(ids))


def _ids_json_parts(ids: npt.NDArray[np.integer[Any]]) -> tuple[bytes, memoryview, bytes]:
    rows = _id_rows(ids)
    return (b"[", rows.data.cast("B")[:-1], b"]")


_SCRATCH_KEEP = 1 << 16
_local = threading.local()


def _scratch(n: int) -> list[npt.NDArray[Any]]:
    bufs: tuple[npt.NDArray[Any], ...] | None = getattr(_local, "bufs", None)
    if bufs is None or bufs[0].size < n:
        bufs = (
            np.empty(n, np.uint32),
            np.empty(n, np.uint32),
            np.empty(n, np.uint32),
            np.empty(n, np.bool_),
        )
        if n <= _SCRATCH_KEEP:
            _local.bufs = bufs
    return [b[:n] for b in bufs]


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidRequest(name, value, "must be a number")
    f = float(value)
    if math.isnan(f):
        raise InvalidRequest(name, value, "must not be NaN")
    return f


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidRequest(name, value, "must be an int")
    return int(value)


def check_session_id(value: object) -> str:
    """Return ``value`` if it can be a session key (it travels as a header).

    Raises:
        InvalidRequest: Not a non-empty printable ASCII string without
            surrounding spaces.
    """
    if (
        not isinstance(value, str)
        or not value
        or not value.isascii()
        or not value.isprintable()
        or value.strip() != value
    ):
        raise InvalidRequest(
            "session_id", value, "must be non-empty printable ASCII, without surrounding spaces"
        )
    return value


@dataclass(frozen=True, slots=True, eq=False)
class CompletionRequest:
    """One streamed ``/v1/completions`` request over pre-tokenized input.

    Building one validates every field; bad input raises
    :class:`~tokstream.InvalidRequest` (naming the field and the value) before
    anything is sent. ``None`` means "not set": the field is left out of the
    body and the server's default applies.

    Args:
        prompt: Token IDs, as a numpy integer array or any sequence of ints.
            Stored as an int64 array.
        model: The served model name; the client's default when ``None``.
        max_tokens: Completion length cap. Always sent (vLLM's default is 16).
        temperature: ``>= 0``; ``0`` is greedy.
        top_p: In ``(0, 1]``.
        top_k: ``-1`` or ``0`` (disabled) or ``>= 1``.
        min_p: In ``[0, 1]``.
        seed: Sampling seed.
        stop: Stop string(s); vLLM cuts them from the text but keeps their IDs.
        stop_token_ids: Extra stop token IDs.
        skip_special_tokens: Default ``False`` so special tokens keep their text.
        include_stop_str_in_output: Keep the stop string in the text.
        priority: Scheduling priority (int; a lower value runs earlier). Needs a
            server started with ``--scheduling-policy priority``.
        logprobs: Number of top log-probabilities per token (``0`` for just the
            sampled one).
        request_id: Sent as the ``X-Request-Id`` header.
        session_id: A stable key shared by every request of one conversation
            or rollout. Sent as the ``X-Session-ID`` header, the key that
            vllm-router's ``consistent_hash`` policy reads first (so a
            ``request_id`` never breaks the affinity), and as vLLM's
            ``session_id`` body field. Every turn then lands on the replica
            whose prefix cache already holds the conversation.
        n: Only ``1`` is supported.
        extra_body: More body fields, e.g. ``structured_outputs`` or
            ``logit_bias``; they override the named fields except the streaming
            ones.
    """

    prompt: npt.NDArray[np.int64]
    model: str | None = None
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | None = None
    stop_token_ids: tuple[int, ...] | None = None
    skip_special_tokens: bool = False
    include_stop_str_in_output: bool | None = None
    priority: int | None = None
    logprobs: int | None = None
    request_id: str | None = None
    session_id: str | None = None
    n: int = 1
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "prompt", _normalise_prompt(self.prompt))
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InvalidRequest("model", self.model, "must be a non-empty string")
        if self.max_tokens is None:
            s(self, "max_tokens", 16)
        if _check_int("max_tokens", self.max_tokens) < 1:
            raise InvalidRequest("max_tokens", self.max_tokens, "must be at least 1")
        if self.temperature is not None:
            t = _check_number("temperature", self.temperature)
            if t < 0 or math.isinf(t):
                raise InvalidRequest("temperature", self.temperature, "must be finite and >= 0")
        if self.top_p is not None:
            p = _check_number("top_p", self.top_p)
            if not 0 < p <= 1:
                raise InvalidRequest("top_p", self.top_p, "must be in (0, 1]")
        if self.top_k is not None:
            k = _check_int("top_k", self.top_k)
            if k < -1:
                raise InvalidRequest("top_k", self.top_k, "must be -1 or 0 (disabled) or >= 1")
        if self.min_p is not None:
            m = _check_number("min_p", self.min_p)
            if not 0 <= m <= 1:
                raise InvalidRequest("min_p", self.min_p, "must be in [0, 1]")
        if self.seed is not None:
            _check_int("seed", self.seed)
        if self.stop is not None:
            stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
            for i, st in enumerate(stop):
                if not isinstance(st, str) or not st:
                    raise InvalidRequest(f"stop[{i}]", st, "stop strings must be non-empty str")
            s(self, "stop", stop)
        if self.stop_token_ids is not None:
            ids = tuple(self.stop_token_ids)
            for i, tid in enumerate(ids):
                if _check_int(f"stop_token_ids[{i}]", tid) < 0:
                    raise InvalidRequest(f"stop_token_ids[{i}]", tid, "must be non-negative")
            s(self, "stop_token_ids", tuple(int(t) for t in ids))
        if not isinstance(self.skip_special_tokens, bool):
            raise InvalidRequest("skip_special_tokens", self.skip_special_tokens, "must be bool")
        if self.include_stop_str_in_output is not None and not isinstance(
            self.include_stop_str_in_output, bool
        ):
            raise InvalidRequest(
                "include_stop_str_in_output", self.include_stop_str_in_output, "must be bool"
            )
        if self.priority is not None:
            _check_int("priority", self.priority)
        if self.logprobs is not None and _check_int("logprobs", self.logprobs) < 0:
            raise InvalidRequest("logprobs", self.logprobs, "must be >= 0")
        if self.request_id is not None and (
            not isinstance(self.request_id, str) or not self.request_id.isprintable()
        ):
            raise InvalidRequest("request_id", self.request_id, "must be a printable str")
        if self.session_id is not None:
            check_session_id(self.session_id)
        if _check_int("n", self.n) != 1:
            raise InvalidRequest(
                "n", self.n, "is unsupported: tokstream streams one choice; send n requests"
            )
        if not isinstance(self.extra_body, Mapping):
            raise InvalidRequest("extra_body", self.extra_body, "must be a dict")
        for key in self.extra_body:
            if key in _STREAM_FIELDS or key == "prompt":
                raise InvalidRequest(
                    f"extra_body[{key!r}]", self.extra_body[key], "is set by tokstream itself"
                )
            if key in _FIELD_NAMES:
                raise InvalidRequest(
                    f"extra_body[{key!r}]",
                    self.extra_body[key],
                    f"is a request field; pass {key}= so it is validated",
                )

    def check_vocab(self, vocab_size: int) -> None:
        """Raise :class:`~tokstream.InvalidRequest` if a prompt ID is >= ``vocab_size``."""
        if int(self.prompt.max()) >= vocab_size:
            i = int(np.argmax(self.prompt >= vocab_size))
            raise InvalidRequest(
                f"prompt[{i}]",
                int(self.prompt[i]),
                f"token ID is out of vocabulary (vocab_size={vocab_size})",
            )

    def body_fields(self, default_model: str | None = None) -> dict[str, Any]:
        """Return the JSON body's fields except ``prompt`` (set fields only)."""
        body: dict[str, Any] = {}
        model = self.model or default_model
        if model is not None:
            body["model"] = model
        body["max_tokens"] = 16 if self.max_tokens is None else int(self.max_tokens)
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if value is not None:
                body[name] = float(value)
        for name in ("top_k", "seed", "priority", "logprobs"):
            value = getattr(self, name)
            if value is not None:
                body[name] = int(value)
        if self.stop is not None:
            body["stop"] = list(self.stop)
        if self.stop_token_ids is not None:
            body["stop_token_ids"] = list(self.stop_token_ids)
        body["skip_special_tokens"] = self.skip_special_tokens
        if self.include_stop_str_in_output is not None:
            body["include_stop_str_in_output"] = self.include_stop_str_in_output
        if self.session_id is not None:
            body["session_id"] = self.session_id
        body.update(self.extra_body)
        body.update(_STREAM_FIELDS)
        return body

    def encode(self, default_model: str | None = None) -> bytes:
        """Return the JSON request body.

        Args:
            default_model: The model name to send when :attr:`model` is ``None``.

        Returns:
            UTF-8 JSON bytes; ``prompt`` comes first.
        """
        rest = _json_encode(self.body_fields(default_model))
        return b"".join((b'{"prompt":', *_ids_json_parts(self.prompt), b",", rest[1:]))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CompletionRequest:
        """Return the request whose :meth:`encode` gives ``body`` back (as JSON values).

        The inverse of :meth:`encode`: named fields become fields, anything
        else goes to ``extra_body``, and the streaming fields tokstream always
        sends are dropped (they are sent again). ``request_id`` is a header, not
        part of the body, so it is ``None``. Used to resend a saved request.

        Args:
            body: A decoded JSON request body, ``prompt`` included.

        Raises:
            InvalidRequest: The body is not a valid token-ID request (no
                ``prompt``, or a field fails validation), naming the field.
        """
        if not isinstance(body, Mapping):
            raise InvalidRequest("body", body, "must be a JSON object")
        if "prompt" not in body:
            raise InvalidRequest("body", sorted(body), "has no prompt")
        named: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in body.items():
            if key in _STREAM_FIELDS:
                continue
            if key in _FIELD_NAMES and key != "request_id":
                named[key] = value
            else:
                extra[key] = value
        for key in ("stop", "stop_token_ids"):
            if isinstance(named.get(key), list):
                named[key] = tuple(named[key])
        return cls(**named, extra_body=extra)

    @classmethod
    def build(cls, prompt_or_request: object, **fields: Any) -> CompletionRequest:
        """Return a request from a prompt plus fields, or a request plus overrides.

        Raises:
            InvalidRequest: On any bad field, or an unknown field name.
        """
        allowed = cls.__dataclass_fields__
        for name in fields:
            if name not in allowed or name == "prompt":
                raise InvalidRequest(
                    name, fields[name], "is not a request field (put server extras in extra_body)"
                )
        if isinstance(prompt_or_request, CompletionRequest):
            if not fields:
                return prompt_or_request
            current = {f: getattr(prompt_or_request, f) for f in allowed}
            current.update(fields)
            return cls(**current)
        return cls(prompt=prompt_or_request, **fields)  # type: ignore[arg-type]


_FIELD_NAMES = frozenset(CompletionRequest.__dataclass_fields__) - {"extra_body"}
