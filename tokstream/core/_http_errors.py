"""HTTP error responses: turn a status, headers and body into the right exception.

The body is read with vLLM's one error envelope (``_wire.ErrorEnvelope``), the
same struct that reads an error event inside a stream. ``Retry-After`` (delta
seconds or an HTTP date) and ``retry-after-ms`` become the error's
``retry_after`` in seconds. No I/O and no clock: an HTTP date is measured
against the ``now`` the caller passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .._exceptions import HTTPStatusError, status_error_class
from ._wire import decode_error

__all__ = ["ERROR_BODY_LIMIT", "body_preview", "http_status_error", "retry_after_seconds"]

ERROR_BODY_LIMIT = 64 * 1024
_BODY_PREVIEW = 500


def body_preview(body: bytes, limit: int = _BODY_PREVIEW) -> str:
    """The start of a body, decoded leniently, for messages."""
    return body[:limit].decode("utf-8", "replace")


def retry_after_seconds(headers: Mapping[str, str], now: float | None) -> float | None:
    """Seconds the server asked to wait, from ``retry-after-ms`` or ``Retry-After``.

    Args:
        headers: Response headers by lower-case name.
        now: The current wall-clock time (``time.time()``), to measure an HTTP
            date against; ``None`` ignores dates.

    Returns:
        The wait in seconds (never negative), or ``None`` if no header says
        one or its value cannot be read.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        value = _number(millis)
        if value is not None:
            return value / 1000.0
    text = headers.get("retry-after")
    if text is None:
        return None
    value = _number(text)
    if value is not None:
        return value
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


def _number(text: str) -> float | None:
    """A non-negative number of seconds; one too big for a float is ``inf`` (too long to wait)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if value == math.inf and text.lstrip("+").lower() not in ("inf", "infinity"):
        return math.inf  # "1e400": an excessive wait, not a malformed value
    return value if 0 <= value < math.inf else None


def http_status_error(
    status: int,
    body: bytes,
    *,
    url: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    now: float | None = None,
) -> HTTPStatusError:
    """Build the :class:`HTTPStatusError` subclass for an error response.

    Understands vLLM's ``{"error": {"message", "type", "param", "code"}}``, a
    plain-string ``error``, the flat ``{"object": "error", "message": ...}``,
    FastAPI's ``{"detail": ...}`` and non-JSON bodies (whose start becomes the
    message). The headers are kept on the error, with the wait the server asked
    for (``retry_after``; an HTTP date counts from ``now``).
    """
    preview = body_preview(body)
    server = decode_error(body)
    message = server.message if server is not None else None
    if message is None:
        message = preview.strip() or "(empty body)"
    cls = status_error_class(status)
    where = f"{url} (request_id={request_id})" if request_id else url
    retry_after = retry_after_seconds(headers, now) if headers is not None else None
    asked = f" (the server asked to wait {retry_after:g}s)" if retry_after is not None else ""
    return cls(
        f"HTTP {status} from {where}: {message}{asked}",
        status_code=status,
        body_preview=preview,
        server_message=message,
        type=server.type if server is not None else None,
        param=server.param if server is not None else None,
        code=server.code if server is not None else None,
        url=url,
        request_id=request_id,
        headers=headers,
        retry_after=retry_after,
    )
