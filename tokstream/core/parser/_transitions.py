"""The reply's state changes: closing segments, reporting calls, emitting deltas.

:class:`Transitions` is the part of :class:`~tokstream.ResponseParser` that runs
when a tag is recognised (by ID in ``_core``, or in text by ``_holdback``) and
when the reply ends: it closes the open segment (handing it to ``on_segment``
and the context tree), parses a closed tool call's body with the format module,
and turns the text collected since the last event into one delta. The states,
tags and the token-boundary rule are described in ``_core``'s theory of
operation. Nothing here runs per plain token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._events import (
    ParseEvent,
    ReplySegment,
    SegmentKind,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallStarted,
    ToolCallStatus,
)
from ._holdback import HoldBackScanner, Pending
from ._segments import OpenSegment, freeze_ids
from ._tags import CALL_CLOSE, TEXT, THINK, THINK_CLOSE, THINK_OPEN, TOOL
from ._tools import ToolSchemas

__all__ = ["KIND", "Transitions"]

KIND: tuple[SegmentKind, SegmentKind, SegmentKind] = ("text", "thinking", "tool_call")
"""The segment kind of each state (``TEXT``, ``THINK``, ``TOOL``)."""

# Deltas are built without the frozen-dataclass __init__ (object.__setattr__ per
# field): the per-token path creates one per feed() call, so it must be cheap.
_new = object.__new__
_set_text: Callable[[object, str], None] = TextDelta.__dict__["text"].__set__
_set_think: Callable[[object, str], None] = ThinkingDelta.__dict__["text"].__set__


class Transitions(HoldBackScanner):
    """State changes and segment closing; a base of ``ResponseParser``.

    Its attributes are set in ``ResponseParser.__init__``.
    """

    __slots__ = (
        "_assigned",
        "_body",
        "_calls",
        "_content",
        "_cur",
        "_delta",
        "_events",
        "_format",
        "_on_segment",
        "_reasoning",
        "_segments",
        "_state",
        "_thinking_unterminated",
        "_tools",
    )

    _assigned: int
    _body: list[str]
    _calls: list[ToolCall]
    _content: list[str]
    _events: list[ParseEvent]
    _format: Callable[[str, ToolSchemas | None], Any]
    _on_segment: Callable[[ReplySegment], None] | None
    _reasoning: list[str]
    _segments: list[ReplySegment]
    _thinking_unterminated: bool
    _tools: ToolSchemas | None

    def _transition(
        self, code: int, before: list[Pending], tag_toks: list[Pending], index: int
    ) -> None:
        self._assign(before)
        state = self._state
        if (code == THINK_CLOSE and state == THINK) or (code == CALL_CLOSE and state == TOOL):
            self._assign(tag_toks)
            self._close_current(terminated=True)
            self._switch(TEXT)
            return
        self._close_current(terminated=False, cut_by="the next <tool_call>")
        if code == THINK_OPEN:
            self._switch(THINK)
        else:
            self._switch(TOOL)
            self._events.append(ToolCallStarted(len(self._calls), index))
        self._assign(tag_toks)

    def _switch(self, state: int) -> None:
        self._flush_delta()
        self._state = state
        if state == TOOL:
            self._body = []
        self._cur = OpenSegment(KIND[state], self._assigned)

    def _flush_delta(self) -> None:
        delta = self._delta
        text = delta[0] if len(delta) == 1 else "".join(delta)
        delta.clear()
        if not text:
            return
        state = self._state
        if state == TOOL:
            self._body.append(text)
            return
        if state == TEXT:
            self._content.append(text)
            ev: ParseEvent = _new(TextDelta)
            _set_text(ev, text)
        else:
            self._reasoning.append(text)
            ev = _new(ThinkingDelta)
            _set_think(ev, text)
        self._events.append(ev)

    def _close_current(self, *, terminated: bool, cut_by: str = "the end of the reply") -> None:
        """Close the open segment; a call is parsed, thinking may be unterminated."""
        state = self._state
        if state == TOOL:
            self._flush_delta()
            cur = self._cur
            body = "".join(self._body)
            seg = self._close_segment()
            name, args, status, error = self._format(body, self._tools)
            if not terminated:
                status = ToolCallStatus.UNTERMINATED
                error = f"no </tool_call> before {cut_by}"
            start = cur.start
            call = ToolCall(
                index=len(self._calls),
                name=name,
                arguments=args,
                status=status,
                raw=body,
                ids=seg.ids if seg is not None else freeze_ids([]),
                error=error,
                start_token=start,
                end_token=start + len(cur.ids),
            )
            self._calls.append(call)
            self._events.append(call)
        else:
            self._close_segment()

    def _close_all(self) -> None:
        self._release_hold()
        if self._state == TOOL:
            self._close_current(terminated=False)
            self._switch(TEXT)
        elif self._state == THINK:
            self._thinking_unterminated = True
            self._close_current(terminated=False)
            self._switch(TEXT)
        else:
            self._flush_delta()
            self._close_segment()

    def _open_segment(self, kind: SegmentKind) -> OpenSegment:
        self._close_segment()
        self._cur = OpenSegment(kind, self._assigned)
        return self._cur

    def _close_segment(self) -> ReplySegment | None:
        cur = self._cur
        if not cur.ids:
            return None
        seg = cur.freeze(len(self._calls) if cur.kind == "tool_call" else None)
        self._segments.append(seg)
        self._assigned += len(cur.ids)
        self._cur = OpenSegment(cur.kind, self._assigned)
        if self._on_segment is not None:
            self._on_segment(seg)
        return seg
