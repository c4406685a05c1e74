"""The live view every streaming command shares: text as it streams, calls, the end.

:class:`LiveView` takes the events of one reply, in order, from any source: a
stream's ``Token`` / ``Done`` / ``Error``, the response parser's events
(``ThinkingDelta``, ``TextDelta``, ``ToolCall``, ...), and the turn loop's
``ToolStarted`` / ``ToolResult``. It is the ``on_event`` callback of
``tokstream.open_reply`` and ``tokstream.run_turn``, and can be fed by hand.

* Text mode: the reply's text as it streams, thinking dimmed (after a
  ``thinking:`` label, so that it shows without colour too); each tool call
  on a line of its own, highlighted the moment it closes (name, arguments,
  status); the tool's start and result under it. Without a tokenizer there is
  no parser, and the server's text is shown as it arrives.
* ``--show-ids``: one row per token (index, ID, its own text from the
  tokenizer's incremental detokenizer, or the server's chunk text without one;
  the log-probability with ``--logprobs``).
* ``--json``: :class:`JsonView`, one JSON object per event on stdout.

At the end, :func:`stats_line` sums the stream up: tokens, time to first
token, tokens per second, finish reason, and whether the server's echo of the
prompt equals the prompt sent. Colour follows rich: only on a terminal, never
with ``NO_COLOR``; ``--color always|never`` overrides.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
from rich.console import Console

import tokstream
from tokstream import (
    Done,
    Error,
    Reply,
    ReplySegment,
    TextDelta,
    ThinkingDelta,
    Token,
    ToolCall,
    ToolCallOpened,
    ToolResult,
    ToolStarted,
)

__all__ = ["JsonView", "LiveView", "echo_status", "make_console", "stats_line"]

_RESULT_PREVIEW = 200

THINKING = "dim"
THINKING_LABEL = "dim italic"
CALL_OK = "bold yellow"
CALL_BAD = "bold red"
TOOL_NOTE = "magenta"
TOOL_FAILED = "red"


def make_console(file: TextIO, color: str = "auto") -> Console:
    """A rich console on ``file``: colour on a terminal (``auto``), ``always`` or ``never``."""
    force = {"always": True, "never": False}.get(color)
    return Console(
        file=file,
        force_terminal=force,
        no_color=True if color == "never" else None,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
    )


def echo_status(done: Done, prompt: Sequence[int] | np.ndarray | None) -> str:
    """``"verified"``, ``"DIFFERS"``, ``"missing"`` (no echo), or ``"unchecked"`` (no prompt)."""
    if prompt is None:
        return "unchecked"
    if done.prompt_token_ids is None:
        return "missing"
    return "verified" if np.array_equal(done.prompt_token_ids, np.asarray(prompt)) else "DIFFERS"


def stats_line(done: Done, prompt: Sequence[int] | np.ndarray | None) -> str:
    """The one line that sums a finished stream up (see the module docstring).

    Timing is left out without a first token's time (a recording), and the
    echo check without ``prompt``.
    """
    d = done.diagnostics
    n = len(done.token_ids)
    ttft = d.time_to_first_token
    decode_time = d.elapsed - (ttft or 0.0)
    rate = f"{(n - 1) / decode_time:.1f} tok/s" if n > 1 and decode_time > 0 else "- tok/s"
    parts = [f"{n} tokens", f"finish {done.finish_reason}"]
    if ttft is not None:  # a stream (a recording has no timing)
        parts += [f"ttft {ttft:.3f} s", rate, f"{d.elapsed:.3f} s"]
    if prompt is not None:
        parts.append(f"prompt echo {echo_status(done, prompt)}")
    return "done: " + " · ".join(parts)


class LiveView:
    """Renders one reply's events as they arrive (see the module docstring).

    Args:
        console: Where the reply goes (stdout's console).
        tokenizer: The model's tokenizer, for per-token text with ``show_ids``.
        show_ids: One row per token instead of flowing text.
        parsed: Whether parse events (deltas, calls) will come; if not, the
            server's text of each ``Token`` is shown.
        logprobs: Show each token's log-probability (with ``show_ids``).

    Attributes:
        terminal: The stream's ``Done`` or ``Error`` once it arrived.
        tokens: Tokens seen so far.
    """

    def __init__(
        self,
        console: Console,
        *,
        tokenizer: tokstream.Tokenizer | None = None,
        show_ids: bool = False,
        parsed: bool = False,
        logprobs: bool = False,
    ) -> None:
        self.console = console
        self.show_ids = show_ids
        self.parsed = parsed
        self.logprobs = logprobs
        self._tokenizer = tokenizer
        self._piece = tokenizer.detokenizer().feed if tokenizer is not None else None
        self._thinking = False
        self._section: str | None = None  # "thinking" or "text": what the last delta was
        self._at_line_start = True
        self.terminal: Done | Error | None = None
        self.tokens = 0

    def new_reply(self) -> None:
        """Start the next reply of a conversation (fresh token count and detokenizer)."""
        self.end_line()
        self.tokens = 0
        self.terminal = None
        self._thinking = False
        self._section = None
        if self._tokenizer is not None:
            self._piece = self._tokenizer.detokenizer().feed

    def _write(self, text: str, style: str | None = None) -> None:
        if text:
            self.console.out(text, style=style, highlight=False, end="")
            self._at_line_start = text.endswith("\n")
            self.console.file.flush()

    def end_line(self) -> None:
        """Finish the current line, if text is pending on it."""
        if not self._at_line_start:
            self._write("\n")

    def line(self, text: str, style: str | None = None) -> None:
        """Print ``text`` on a line of its own."""
        self.end_line()
        self._write(text + "\n", style)

    def __call__(self, event: object) -> None:
        """Show one event (an ``on_event`` callback)."""
        if isinstance(event, Token):
            self.tokens += 1
            if self.show_ids:
                self._row(event)
            elif not self.parsed:
                self._write(event.text)
        elif isinstance(event, ThinkingDelta):
            self._thinking = True
            if not self.show_ids:
                self._delta("thinking", event.text, THINKING)
        elif isinstance(event, TextDelta):
            self._thinking = False
            if not self.show_ids:
                self._delta("text", event.text, None)
        elif isinstance(event, ToolCall):
            self._call(event)
        elif isinstance(event, ToolStarted):
            self.line(
                f"  > running {event.call.name} (call #{event.call.index}, at token "
                f"{event.token_index}{'' if self.terminal else '; the model is still writing'})",
                TOOL_NOTE,
            )
        elif isinstance(event, ToolResult):
            text = event.content
            if len(text) > _RESULT_PREVIEW:
                text = text[:_RESULT_PREVIEW] + "..."
            style = TOOL_NOTE if event.ok else TOOL_FAILED
            self.line(f"  > {event.call.name} returned: {' '.join(text.split())}", style)
        elif isinstance(event, (Done, Error)):
            self.terminal = event
            self.end_line()
        elif isinstance(event, (ToolCallOpened, ReplySegment, Reply)):
            pass  # the call shows when it closes; segments and the reply repeat what was shown

    def _delta(self, section: str, text: str, style: str | None) -> None:
        # A section starts on a line of its own, without the blank lines the model put
        # around its tags ("<think>\n", "</think>\n\n").
        if self._section != section:
            text = text.lstrip("\n")
            if not text:
                return  # the section has not started yet: keep waiting for its text
            self._section = section
            self.end_line()
            if section == "thinking":
                self._write("thinking: ", THINKING_LABEL)
        self._write(text, style)

    def _row(self, token: Token) -> None:
        if self._piece is not None:
            piece = self._piece(token.id)
            shown = json.dumps(piece, ensure_ascii=False) if piece else "·"
        else:
            shown = json.dumps(token.text, ensure_ascii=False)
        logprob = ""
        if self.logprobs:
            logprob = "       -" if token.logprob is None else f"{token.logprob:8.3f}"
            logprob += "  "
        row = f"{self.tokens:>5}  {token.id:>8}  {logprob}{shown}"
        self.line(row, THINKING if self._thinking else None)

    def _call(self, call: ToolCall) -> None:
        self._section = None  # text after the call starts on a new line
        args = json.dumps(call.arguments, ensure_ascii=False)
        if call.ok:
            self.line(f"[tool call #{call.index}] {call.name}({args}) {call.status}", CALL_OK)
        else:
            raw = " ".join(call.raw.split())
            self.line(
                f"[tool call #{call.index}] {call.name or '?'} {call.status}: {call.error} "
                f"(raw: {raw[:_RESULT_PREVIEW]!r})",
                CALL_BAD,
            )


class JsonView:
    """One JSON object per event, a line each, on ``out`` (``--json``).

    Objects have an ``"event"`` key: ``token``, ``thinking``, ``text``,
    ``tool_call``, ``tool_started``, ``tool_result``, ``done`` or ``error``
    (segments and the final reply repeat what came before and are left out).
    ``done`` carries the stats (and ``prompt_echo``), ``error`` the class,
    message, the IDs that arrived and where the request was saved.

    Args:
        out: Where the lines go.
        prompt: The prompt sent, to check the server's echo against.
    """

    def __init__(self, out: TextIO = sys.stdout, prompt: Sequence[int] | None = None) -> None:
        self.out = out
        self.prompt = prompt
        self.terminal: Done | Error | None = None
        self.tokens = 0

    def new_reply(self, prompt: Sequence[int] | None = None) -> None:
        """Start the next reply of a conversation."""
        self.tokens = 0
        self.terminal = None
        self.prompt = prompt

    def _emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()

    def __call__(self, event: object) -> None:
        """Write one event (an ``on_event`` callback)."""
        if isinstance(event, Token):
            self.tokens += 1
            obj: dict[str, Any] = {"event": "token", "index": self.tokens, "id": event.id}
            obj["text"] = event.text
            if event.logprob is not None:
                obj["logprob"] = event.logprob
            self._emit(obj)
        elif isinstance(event, ThinkingDelta):
            self._emit({"event": "thinking", "text": event.text})
        elif isinstance(event, TextDelta):
            self._emit({"event": "text", "text": event.text})
        elif isinstance(event, ToolCall):
            self._emit(
                {
                    "event": "tool_call",
                    "index": event.index,
                    "name": event.name,
                    "arguments": event.arguments,
                    "status": str(event.status),
                    "error": event.error,
                    "raw": event.raw,
                }
            )
        elif isinstance(event, ToolStarted):
            self._emit(
                {
                    "event": "tool_started",
                    "index": event.call.index,
                    "name": event.call.name,
                    "token_index": event.token_index,
                }
            )
        elif isinstance(event, ToolResult):
            self._emit(
                {
                    "event": "tool_result",
                    "index": event.call.index,
                    "name": event.call.name,
                    "content": event.content,
                    "error": event.error,
                }
            )
        elif isinstance(event, Done):
            self.terminal = event
            self._emit(done_json(event, self.prompt))
        elif isinstance(event, Error):
            self.terminal = event
            self._emit(
                {
                    "event": "error",
                    "class": type(event.error).__name__,
                    "message": str(event.error),
                    "tokens": len(event.token_ids),
                    "token_ids": event.token_ids.tolist(),
                    "text": event.text,
                    "saved_to": None if event.saved_to is None else str(event.saved_to),
                }
            )


def done_json(done: Done, prompt: Sequence[int] | None) -> dict[str, Any]:
    """The ``done`` object of :class:`JsonView`."""
    d = done.diagnostics
    usage = done.usage
    return {
        "event": "done",
        "finish_reason": done.finish_reason,
        "stop_reason": done.stop_reason,
        "tokens": len(done.token_ids),
        "token_ids": done.token_ids.tolist(),
        "text": done.text,
        "logprobs": None if done.logprobs is None else done.logprobs.tolist(),
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "request_id": done.request_id,
        "time_to_first_token": d.time_to_first_token,
        "elapsed": d.elapsed,
        "prompt_echo": echo_status(done, prompt),
    }
