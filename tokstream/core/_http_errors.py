"""HTTP error responses: turn a status and body into the right exception.

The body is read with vLLM's one error envelope (``_wire.ErrorEnvelope``), the
same struct that reads an error event inside a stream. No I/O.
"""

from __future__ import annotations

from .._exceptions import HTTPStatusError, status_error_class
from ._wire import decode_error

__all__ = ["ERROR_BODY_LIMIT", "http_status_error"]

ERROR_BODY_LIMIT = 64 * 1024
_BODY_PREVIEW = 500


def http_status_error(
    status: int, body: bytes, *, url: str, request_id: str | None
) -> HTTPStatusError:
    """Build the :class:`HTTPStatusError` subclass for an error response body.

    Understands vLLM's ``{"error": {"message", "type", "param", "code"}}``, a
    plain-string ``error``, the flat ``{"object": "error", "message": ...}``,
    FastAPI's ``{"detail": ...}`` and non-JSON bodies (whose start becomes the
    message).
    """
    preview = body[:_BODY_PREVIEW].decode("utf-8", "replace")
    server = decode_error(body)
    message = server.message if server is not None else None
    if message is None:
        message = preview.strip() or "(empty body)"
    cls = status_error_class(status)
    where = f"{url} (request_id={request_id})" if request_id else url
    return cls(
        f"HTTP {status} from {where}: {message}",
        status_code=status,
        body_preview=preview,
        server_message=message,
        type=server.type if server is not None else None,
        param=server.param if server is not None else None,
        code=server.code if server is not None else None,
        url=url,
        request_id=request_id,
    )
