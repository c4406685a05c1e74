"""The sans-IO core: bytes in, events out; tokens in, parse events out.

Nothing here awaits, does I/O, or imports trio or httpx, so the core can be
driven from trio (``tokstream``'s own shell), asyncio, threads or a test, as
h11 can:

* ``_http11.py`` and ``_chunked.py`` (private): HTTP/1.1 for the trio
  transport: the request head, the response head, and the body's framing,
  with a bulk chunked decoder that takes a whole network read in one call.
* :class:`SSEDecoder`: Server-Sent Events framing.
* :class:`StreamDecoder`: a vLLM ``/v1/completions`` stream body to
  ``Token`` / ``Done`` / ``Error`` events.
* :class:`CompletionRequest`: the request's fields, validation and JSON body.
* :func:`http_status_error`: an HTTP error response to the right exception.
* :class:`RetryPolicy`: which failed attempts a stream retries, after what
  backoff, and resume after a drop (the decisions; the shell does the waiting).
* :mod:`tokstream.core.parser`: a reply's tokens to reasoning, content and tool
  calls (:class:`ResponseParser`).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._decoder import StreamDecoder
from ._http_errors import http_status_error
from ._request import CompletionRequest, encode_token_ids
from ._retry import RetryPolicy
from ._sse import DEFAULT_MAX_EVENT_SIZE, SSEDecoder, SSEEvent

if _typing.TYPE_CHECKING:
    from .parser import ResponseParser, parse_output


def __getattr__(name: str) -> _typing.Any:
    # The response parser loads on first use: the stream path never needs it.
    if name in ("ResponseParser", "parse_output"):
        value = getattr(_importlib.import_module(f"{__name__}.parser"), name)
        globals()[name] = value
        return value
    if name == "parser":  # ``import tokstream.core`` used to load it
        return _importlib.import_module(f"{__name__}.parser")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ResponseParser", "parse_output"})


__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "CompletionRequest",
    "ResponseParser",
    "RetryPolicy",
    "SSEDecoder",
    "SSEEvent",
    "StreamDecoder",
    "encode_token_ids",
    "http_status_error",
    "parse_output",
]
