"""HTTP error responses: turn a status and body into the right exception.

Understands vLLM's error shapes (see :func:`http_status_error`). No I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._exceptions import HTTPStatusError, status_error_class

__all__ = ["ERROR_BODY_LIMIT", "http_status_error"]

ERROR_BODY_LIMIT = 64 * 1024
_BODY_PREVIEW = 500


class _ErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: Any = None
    code: int | str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail | str | None = None
    message: str | None = None
    type: str | None = None
    param: Any = None
    code: int | str | None = None
    detail: Any = None


def http_status_error(
    status: int, body: bytes, *, url: str, request_id: str | None
) -> HTTPStatusError:
    """Build the :class:`HTTPStatusError` subclass for an error response body.

    Understands vLLM's ``{"error": {"message", "type", "param", "code"}}``, a
    plain-string ``error``, the flat ``{"object": "error", "message": ...}``,
    FastAPI's ``{"detail": ...}`` and non-JSON bodies.
    """
    preview = body[:_BODY_PREVIEW].decode("utf-8", "replace")
    message: str | None = None
    etype: str | None = None
    param: str | None = None
    code: int | str | None = None
    try:
        env = msgspec.json.decode(body, type=_ErrorEnvelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        env = None
    if env is not None:
        if isinstance(env.error, _ErrorDetail):
            message, etype = env.error.message, env.error.type
            param = None if env.error.param is None else str(env.error.param)
            code = env.error.code
        elif isinstance(env.error, str):
            message = env.error
        elif env.message is not None:
            message, etype, code = env.message, env.type, env.code
            param = None if env.param is None else str(env.param)
        elif env.detail is not None:
            message = env.detail if isinstance(env.detail, str) else str(env.detail)
    if message is None:
        message = preview.strip() or "(empty body)"
    cls = status_error_class(status)
    where = f"{url} (request_id={request_id})" if request_id else url
    return cls(
        f"HTTP {status} from {where}: {message}",
        status_code=status,
        body_preview=preview,
        server_message=message,
        type=etype,
        param=param,
        code=code,
        url=url,
        request_id=request_id,
    )
