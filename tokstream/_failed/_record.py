"""A failed request as saved for replay: the record and its JSON.

:class:`FailedRequest` holds what it takes to understand and resend one request
that failed: the exact body it sent (prompt IDs included), where it went, the
error (class, message, status, body preview), every attempt, the stream's
diagnostics, and the partial output (IDs, text, logprobs), with timestamps and
the tokstream version. It is data: it encodes itself to JSON and reads a file
in :meth:`FailedRequest.load`; choosing the directory, writing files and
retention are the store's (``_store.py``).

**No secret enters a record.** :meth:`FailedRequest.from_error` takes the
secrets to keep out (the API key, the URL's userinfo and password, sensitive
header values) and replaces them by ``***`` in every string it keeps, inside
the body too (``_secrets.py``); the URL's userinfo is replaced whatever it is.
Request headers are not kept at all.

The JSON layout is versioned (``"format": "tokstream-failed-request"``,
``"version": 1``); :meth:`FailedRequest.load` says clearly when a file is
missing, is not JSON, is not such a record, is damaged, or comes from a newer
tokstream (:class:`~tokstream.InvalidRecord`), and never lets a decoder
exception through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from .._events import Error
from .._exceptions import InvalidRecord, TokstreamError
from .._lazy import lazy_module
from .._statistics import StreamStatistics
from .._version import __version__
from ..core._request import CompletionRequest
from ._compare import ReplayComparison
from ._secrets import Scrubber, redact_url

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = [
    "FORMAT",
    "VERSION",
    "FailedRequest",
    "SavedAttempt",
    "SavedError",
    "read_summary",
]

FORMAT = "tokstream-failed-request"
"""The ``format`` field of every record."""
VERSION = 1
"""The record layout's version; a reader refuses newer ones."""

_TokenId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


@dataclass(frozen=True, slots=True)
class SavedError:
    """The error a saved request failed with, as plain data.

    Attributes:
        class_name: The exception's class, e.g. ``"InBandError"``.
        message: Its message (secrets replaced by ``***``).
        status: The HTTP status for an ``HTTPStatusError``, else ``None``.
        body_preview: The start of the error response's body, if any.
        server_message: The server's own message, for an ``APIError``.
        server_type: The server's error type, for an ``APIError``.
        code: The server's error code, for an ``APIError``.
        param: The parameter the server named, for an ``APIError``.
        retry_after: The wait the server asked for (``Retry-After``), if known.
    """

    class_name: str
    message: str
    status: int | None = None
    body_preview: str | None = None
    server_message: str | None = None
    server_type: str | None = None
    code: int | str | None = None
    param: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class SavedAttempt:
    """One attempt at a saved request (there is one per try when retries are on).

    Attributes:
        number: 1 for the first attempt.
        error: The class name of the error it ended with.
        message: That error's message (secrets replaced by ``***``).
        status: Its HTTP status, if any.
        waited: Seconds waited before this attempt.
        tokens: Token IDs received in this attempt.
        retry_after: The wait the server asked for after it, if it did.
        replica: Which replica answered it, if known.
    """

    number: int
    error: str
    message: str
    status: int | None = None
    waited: float = 0.0
    tokens: int = 0
    retry_after: float | None = None
    replica: str | None = None


class _Wire(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The JSON layout of a record (version 1); the body comes last, verbatim."""

    format: str
    version: int
    tokstream_version: str
    failed_at: dt.datetime
    started_at: dt.datetime
    url: str
    model: str | None = None
    request_id: str | None = None
    replica: str | None = None
    error: SavedError
    attempts: tuple[SavedAttempt, ...] = ()
    diagnostics: StreamStatistics = field(default_factory=StreamStatistics)
    token_ids: list[_TokenId] = msgspec.field(default_factory=list)
    text: str = ""
    logprobs: list[float | None] | None = None
    request: msgspec.Raw


class _Head(msgspec.Struct):
    format: str | None = None
    version: int | None = None


class _Summary(msgspec.Struct):
    """What ``tokstream failed list`` shows, read without decoding the body."""

    failed_at: dt.datetime
    url: str
    error: SavedError
    token_ids: list[_TokenId] = msgspec.field(default_factory=list)


_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True, eq=False)
class FailedRequest:
    """One failed request, as saved for replay (``tokstream replay FILE``).

    Get one with :meth:`load` (a file the store wrote; ``Error.saved_to`` names
    it), and resend it with ``client.replay(record)``.

    Attributes:
        url: The completions URL it was sent to (userinfo replaced by ``***``).
        model: The model name sent.
        request_id: The request ID (sent as ``X-Request-Id``, or the server's).
        replica: Which replica the stream reached (``Error.replica``), if known.
        body: The exact JSON body sent, prompt IDs included.
        error: The error it finally failed with.
        attempts: Every attempt, in order (one when it was not retried).
        diagnostics: The stream's counters at the failure.
        token_ids: The IDs that arrived before the failure (int32, read-only).
        text: Their text, as streamed.
        logprobs: Their log-probabilities (float32, NaN where the server sent
            none) when requested, else ``None``.
        started_at: When the request started (UTC).
        failed_at: When it failed (UTC).
        tokstream_version: The tokstream version that saved it.
    """

    url: str
    model: str | None
    request_id: str | None
    body: bytes
    error: SavedError
    attempts: tuple[SavedAttempt, ...]
    diagnostics: StreamStatistics
    token_ids: npt.NDArray[np.int32]
    text: str
    logprobs: npt.NDArray[np.float32] | None
    started_at: dt.datetime
    failed_at: dt.datetime
    tokstream_version: str = __version__
    replica: str | None = None

    def __repr__(self) -> str:
        return (
            f"<tokstream.FailedRequest {self.error.class_name} {self.url} "
            f"tokens={self.token_ids.size} failed_at={self.failed_at.isoformat()}>"
        )

    # -- building and reading ------------------------------------------------

    @classmethod
    def from_error(
        cls,
        event: Error,
        *,
        body: bytes,
        url: str,
        model: str | None,
        request_id: str | None,
        secrets: Iterable[str] = (),
        failed_at: dt.datetime | None = None,
    ) -> FailedRequest:
        """Return the record of a stream's terminal ``Error``.

        Args:
            event: The terminal event (its error, partial output, diagnostics
                and, when retries ran, its ``attempts``).
            body: The JSON body that was sent.
            url: The URL it was sent to.
            model: The model name sent.
            request_id: The request ID.
            secrets: Strings that must never be saved (the API key, the URL's
                password, sensitive header values); each becomes ``***``.
            failed_at: When it failed (default: now, UTC).
        """
        clean = Scrubber(secrets)
        failed_at = failed_at or dt.datetime.now(dt.UTC)
        exc = event.error
        logprobs = None
        if event.logprobs is not None:
            logprobs = np.array(event.logprobs, dtype=np.float32)
            logprobs.flags.writeable = False
        return cls(
            url=clean(redact_url(url)),
            model=clean.optional(model),
            request_id=clean.optional(request_id),
            body=clean.body(body),
            error=_saved_error(exc, clean),
            attempts=_saved_attempts(event, clean),
            diagnostics=dataclasses.replace(
                event.diagnostics,
                parse_error_previews=tuple(map(clean, event.diagnostics.parse_error_previews)),
                buffer_preview=clean(event.diagnostics.buffer_preview),
            ),
            token_ids=_readonly(np.array(event.token_ids, dtype=np.int32)),
            text=clean(event.text),
            logprobs=logprobs,
            started_at=failed_at - dt.timedelta(seconds=max(0.0, event.diagnostics.elapsed)),
            failed_at=failed_at,
            replica=clean.optional(event.replica),
        )

    def to_json(self) -> bytes:
        """Return the record as JSON (UTF-8); :meth:`from_json` reads it back."""
        logprobs = None
        if self.logprobs is not None:
            logprobs = self.logprobs.tolist()  # msgspec writes NaN as null
        wire = _Wire(
            format=FORMAT,
            version=VERSION,
            tokstream_version=self.tokstream_version,
            failed_at=self.failed_at,
            started_at=self.started_at,
            url=self.url,
            model=self.model,
            request_id=self.request_id,
            replica=self.replica,
            error=self.error,
            attempts=self.attempts,
            diagnostics=self.diagnostics,
            token_ids=self.token_ids.tolist(),
            text=self.text,
            logprobs=logprobs,
            request=msgspec.Raw(self.body),
        )
        return _encode(wire)

    @classmethod
    def from_json(cls, data: bytes, *, path: str = "<bytes>") -> FailedRequest:
        """Return the record encoded in ``data``.

        Raises:
            InvalidRecord: ``data`` is not a record this tokstream can read;
                the message names ``path`` and the problem.
        """
        _read_head(data, path)
        wire = _decode(data, _Wire, path)
        try:
            fields = msgspec.json.decode(wire.request)
        except msgspec.DecodeError as exc:
            raise InvalidRecord(path, f"its request body is not JSON ({exc})") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("prompt"), list):
            raise InvalidRecord(path, "its request body has no prompt token IDs")
        logprobs = None
        if wire.logprobs is not None:
            logprobs = _readonly(
                np.array([np.nan if v is None else v for v in wire.logprobs], dtype=np.float32)
            )
        return cls(
            url=wire.url,
            model=wire.model,
            request_id=wire.request_id,
            body=bytes(wire.request),
            error=wire.error,
            attempts=wire.attempts,
            diagnostics=wire.diagnostics,
            token_ids=_readonly(np.array(wire.token_ids, dtype=np.int32)),
            text=wire.text,
            logprobs=logprobs,
            started_at=wire.started_at,
            failed_at=wire.failed_at,
            tokstream_version=wire.tokstream_version,
            replica=wire.replica,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FailedRequest:
        """Read a saved failed request (the file ``Error.saved_to`` names).

        Raises:
            InvalidRecord: The file is missing or unreadable, is not JSON, is
                not a tokstream failed-request record, is damaged, or was
                written by a newer tokstream. The message names the file and
                the problem; no decoder exception escapes.
        """
        return cls.from_json(_read(path), path=os.fspath(path))

    # -- using it -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The base URL to give a ``Client`` (``url`` without ``/completions``)."""
        return self.url.removesuffix("/completions")

    @property
    def prompt(self) -> npt.NDArray[np.int64]:
        """The prompt token IDs sent."""
        return np.array(self.body_fields()["prompt"], dtype=np.int64)

    def body_fields(self) -> dict[str, Any]:
        """Return the JSON body, decoded."""
        fields: dict[str, Any] = msgspec.json.decode(self.body)
        return fields

    def request(self) -> CompletionRequest:
        """Return the request to resend: the same body (``CompletionRequest.from_body``).

        Raises:
            InvalidRequest: A body field fails validation (named).
        """
        return CompletionRequest.from_body(self.body_fields())

    def compare(self, token_ids: object) -> ReplayComparison:
        """Compare a replay's token IDs with the IDs saved here."""
        return ReplayComparison.of(self.token_ids, token_ids)


# -- internals ----------------------------------------------------------------


def _saved_error(exc: TokstreamError, clean: Scrubber) -> SavedError:
    def text(name: str) -> str | None:
        value = getattr(exc, name, None)
        return None if value is None else clean(str(value))

    code = getattr(exc, "code", None)
    retry_after = getattr(exc, "retry_after", None)
    status = getattr(exc, "status_code", None)
    return SavedError(
        class_name=type(exc).__name__,
        message=clean(str(exc)),
        status=status if isinstance(status, int) else None,
        body_preview=text("body_preview"),
        server_message=text("server_message"),
        server_type=text("type"),
        code=code if isinstance(code, int) and not isinstance(code, bool) else text("code"),
        param=text("param"),
        retry_after=float(retry_after) if isinstance(retry_after, (int, float)) else None,
    )


def _saved_attempts(event: Error, clean: Scrubber) -> tuple[SavedAttempt, ...]:
    """Every attempt of the stream (``Error.attempts``), or the one the event says."""
    exc = event.error
    if not event.attempts:
        status = getattr(exc, "status_code", None)
        retry_after = getattr(exc, "retry_after", None)
        return (
            SavedAttempt(
                number=1,
                error=type(exc).__name__,
                message=clean(str(exc)),
                status=status if isinstance(status, int) else None,
                tokens=int(event.token_ids.size),
                retry_after=float(retry_after) if isinstance(retry_after, (int, float)) else None,
                replica=clean.optional(event.replica),
            ),
        )
    return tuple(
        SavedAttempt(
            number=a.number,
            error=a.error or "",
            message=clean(a.message),
            status=a.status,
            waited=a.waited,
            tokens=a.tokens,
            retry_after=a.retry_after,
            replica=clean.optional(a.replica),
        )
        for a in event.attempts
    )


def _readonly(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    arr.flags.writeable = False
    return arr


def _read(path: str | os.PathLike[str]) -> bytes:
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        problem = "no such file (`tokstream failed list` shows the saved ones)"
    except IsADirectoryError:
        problem = "it is a directory, not a saved request"
    except PermissionError:
        problem = "permission denied"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    raise InvalidRecord(name, problem)


def _read_head(data: bytes, path: str) -> _Head:
    try:
        head = msgspec.json.decode(data, type=_Head)
    except msgspec.ValidationError:  # JSON, but not an object (a DecodeError subclass)
        raise InvalidRecord(path, "it is not a tokstream failed-request record") from None
    except msgspec.DecodeError as exc:
        raise InvalidRecord(path, f"it is not JSON ({exc}); it may be cut short") from None
    if head.format != FORMAT:
        raise InvalidRecord(
            path, f'it is not a tokstream failed-request record (no "format": "{FORMAT}")'
        )
    if head.version is None or head.version > VERSION:
        raise InvalidRecord(
            path,
            f"it was written by a newer tokstream (record version {head.version}; this one "
            f"reads version {VERSION}); upgrade tokstream",
        )
    return head


def _decode(data: bytes, type_: type[_Wire], path: str) -> _Wire:
    try:
        return msgspec.json.decode(data, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRecord(path, f"it is damaged ({exc})") from None


def read_summary(path: Path) -> tuple[dt.datetime, str, str, int]:
    """Return ``(failed_at, error class, url, tokens)`` of a saved record, cheaply.

    Raises:
        InvalidRecord: As :meth:`FailedRequest.load`.
    """
    data = _read(path)
    _read_head(data, str(path))
    try:
        summary = msgspec.json.decode(data, type=_Summary)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRecord(str(path), f"it is damaged ({exc})") from None
    return summary.failed_at, summary.error.class_name, summary.url, len(summary.token_ids)
