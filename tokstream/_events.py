"""Stream events: what a token stream yields, in order.

A stream yields zero or more :class:`Token` events, then exactly one terminal
event: :class:`Done` on success, :class:`Error` on failure. Nothing follows the
terminal event.

Events are frozen value objects (nouns, no ``Event`` suffix), in the style of
h11's ``_events.py``: ``Token``, built once per token, is a frozen
``msgspec.Struct`` without GC tracking (about 70 ns to build, against about
450 ns for a frozen dataclass); ``Done`` and ``Error``, built once per stream,
are frozen, slotted dataclasses. All of them support ``==``, ``repr`` and
pattern matching by keyword or position (``case Token(id, text):``). This
module holds data only: no I/O, no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from ._exceptions import TokstreamError
from ._lazy import lazy_module
from ._statistics import Attempt, StreamStatistics

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy", globals())

__all__ = ["Attempt", "Done", "Error", "Event", "StreamStatistics", "Token", "Usage"]

_EMPTY_IDS: list[npt.NDArray[np.int32]] = []  # built on first use: numpy loads lazily


def _empty_ids() -> npt.NDArray[np.int32]:
    if not _EMPTY_IDS:
        empty = np.zeros(0, dtype=np.int32)
        empty.flags.writeable = False
        _EMPTY_IDS.append(empty)
    return _EMPTY_IDS[0]


def _brief_repr(self: object) -> str:
    """Each field's repr, but an array as its type, size and ends (a long reply's IDs,
    printed in full, would fill the screen)."""
    parts = []
    for f in fields(self):  # type: ignore[arg-type]
        value = getattr(self, f.name)
        if isinstance(value, np.ndarray):
            ends = (
                value.tolist()
                if value.size <= 6
                else [*value[:3].tolist(), "...", *value[-2:].tolist()]
            )
            shown = f"<{value.dtype}[{value.size}] {' '.join(map(str, ends))}>".replace(" >", ">")
        else:
            shown = repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(self).__name__}({', '.join(parts)})"


class Token(msgspec.Struct, frozen=True, gc=False):
    """One sampled token ID, exactly as the server streamed it.

    Attributes:
        id: The token ID.
        text: The text the server released with this token. vLLM sends text per
            chunk, not per token; tokstream puts a chunk's whole text on the
            **last** token of that chunk and ``""`` on the others. The text can be
            empty while IDs arrive (UTF-8 hold-back, the stop token, text held
            back for a stop string), so the concatenation of every ``text`` equals
            the concatenation of the chunks' texts, exactly, but a single token's
            text need not be its decode. Use a tokenizer on the IDs for that.
        logprob: The sampled token's log-probability when ``logprobs`` was
            requested, else ``None``.
    """

    id: int
    text: str = ""
    logprob: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the server reported in its usage chunk."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class Done:
    """The stream finished normally. Always the last event.

    Attributes:
        finish_reason: ``"stop"`` or ``"length"`` (or whatever the server sent).
        stop_reason: ``None`` for the model's EOS, the ``int`` token ID for a stop
            token ID (or an EOS that only ``generation_config`` declares), or the
            ``str`` for a stop string.
        token_ids: Every streamed completion ID, in order, including the final
            stop token the server returned (int32, read-only).
        text: The concatenation of every chunk's text.
        prompt_token_ids: The prompt IDs the server echoed in its first chunk
            (int32, read-only), or ``None`` if it sent none. Compare it with what
            you sent to prove the server saw exactly that.
        usage: The server's token counts, or ``None`` without a usage chunk.
        logprobs: Per-token log-probabilities aligned with ``token_ids`` (float32)
            when requested, else ``None``.
        request_id: The server's completion ID (``cmpl-...``), if any.
        diagnostics: The stream's counters at the end.
        attempts: Every attempt when the request was retried or resumed (the
            failed ones, then the one that finished, whose ``error`` is
            ``None``); empty when the first attempt finished.
        splices: Where a resumed stream was continued: for each continuation,
            how many token IDs had arrived before it (``token_ids[:k]`` came
            before the drop). Empty for a stream that never dropped. With
            resume the prompt echo, usage and IDs describe the whole stream
            (see ``RetryPolicy``).
        replica: Which replica served the stream, when the response said so
            in the client's ``replica_header`` (behind vllm-router), else
            ``None``.
    """

    finish_reason: str | None
    stop_reason: int | str | None = None
    token_ids: npt.NDArray[np.int32] = field(default_factory=_empty_ids)
    text: str = ""
    prompt_token_ids: npt.NDArray[np.int32] | None = None
    usage: Usage | None = None
    logprobs: npt.NDArray[np.float32] | None = None
    request_id: str | None = None
    diagnostics: StreamStatistics = field(default_factory=StreamStatistics)
    attempts: tuple[Attempt, ...] = ()
    splices: tuple[int, ...] = ()
    replica: str | None = None

    __repr__ = _brief_repr


@dataclass(frozen=True, slots=True)
class Error:
    """The stream failed. Always the last event.

    Attributes:
        error: The exception describing what failed (a :class:`TokstreamError`
            subclass; see ``tokstream._exceptions`` for the tree). Its message
            names the URL, the request ID and the diagnostics.
        token_ids: The IDs that did arrive before the failure (int32, read-only).
        text: Their text, as streamed.
        diagnostics: The stream's counters at the failure.
        logprobs: Their log-probabilities (float32, aligned with ``token_ids``)
            when requested, else ``None``.
        attempts: Every attempt, in order, the failed final one last (also on
            ``error.attempts``). A stream built outside a client (the bare
            decoder) leaves it empty.
        saved_to: The file the failed request was saved to, for replay
            (``tokstream replay FILE``, ``FailedRequest.load``), or ``None``
            when saving is off or failed. Only the final failure is saved,
            after every retry, with every attempt.
        save_error: Why saving failed (one line), or ``None``. A failure to
            save never replaces :attr:`error`.
        replica: Which replica the stream reached, when the response said so
            in the client's ``replica_header``, else ``None`` (also when no
            response arrived).
    """

    error: TokstreamError
    token_ids: npt.NDArray[np.int32] = field(default_factory=_empty_ids)
    text: str = ""
    diagnostics: StreamStatistics = field(default_factory=StreamStatistics)
    logprobs: npt.NDArray[np.float32] | None = None
    attempts: tuple[Attempt, ...] = ()
    saved_to: Path | None = None
    save_error: str | None = None
    replica: str | None = None

    __repr__ = _brief_repr

    @property
    def message(self) -> str:
        """The error's message."""
        return str(self.error)

    def reraise(self) -> None:
        """Raise :attr:`error` (for callers who prefer exceptions)."""
        raise self.error


Event: TypeAlias = Token | Done | Error
