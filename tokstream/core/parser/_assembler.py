"""The reply under construction: its state, segments, calls and pending text.

:class:`ReplyAssembler` is the part of :class:`~tokstream.ResponseParser`'s
state that tags change (as h11's ``Connection`` owns a ``ConnectionState``).
The parser owns one. It calls :meth:`~ReplyAssembler.tag` when a tag is
recognised (by ID, or in text by the hold-back scanner), :meth:`~ReplyAssembler.stop`
on a stop token and :meth:`~ReplyAssembler.close_all` when the reply ends. The
assembler then closes the open segment, emitting it as a
:class:`~tokstream.ReplySegment` event, parses a closed call's body with the
format's decoder, and turns the text collected since the last event into one
delta. The states, tags and the token-boundary rule are described in
``_core``'s theory of operation. Nothing here runs per plain token: the
parser's loop appends plain tokens to :attr:`ReplyAssembler.cur` and
:attr:`ReplyAssembler.delta` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from ._events import (
    ParseEvent,
    Reply,
    ReplySegment,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallOpened,
    ToolCallStatus,
)
from ._format import CallDecoder, CallListDecoder, DecodedCall, HeaderRouter
from ._holdback import Pending
from ._jsonscan import JsonScan, PyScan
from ._segments import Item, OpenSegment, freeze_ids
from ._tags import CALLS, HEAD, KIND, ROUTE, TEXT, THINK, TOOL, TagTables
from ._tools import ToolSchemas

__all__ = ["ReplyAssembler"]

# Deltas are built without the frozen-dataclass __init__ (object.__setattr__ per
# field): a live stream creates one per received batch, so it must be cheap.
_new = object.__new__
_set_text: Callable[[object, str], None] = TextDelta.__dict__["text"].__set__
_set_think: Callable[[object, str], None] = ThinkingDelta.__dict__["text"].__set__
_STATE_OF = {"text": TEXT, "thinking": THINK, "tool_call": TOOL}


class ReplyAssembler:
    """Segments, calls, deltas and the current state of one reply.

    Args:
        tables: The compiled tag tables (for state moves and messages).
        decode_call: The format's call decoder (``None``: no calls).
        tools: Tool schemas for the decoder, or ``None``.
        state: The state code the reply starts in.
        json_body: Whether call bodies are JSON (a tag in an open string is text).
        route_header: The format's header router (``None``: no headers).
        json_end: Whether a call ends where its JSON balances (then the reply
            goes on in ``after_call``).
        body_tags: Tag codes whose text starts a call's body.
        after_call: The state after a JSON-ended call.
        separators: Text allowed between JSON-ended calls besides whitespace.
        decode_calls: The format's decoder for bodies of several calls (then
            ``decode_call`` is ``None``).
        python: Whether balance-ended calls are Python literals (``'`` strings).

    Attributes:
        state: The current state code (``TEXT``, ``THINK``, ``TOOL``, ``CALLS``
            or ``HEAD``).
        cur: The open segment; the parser's loop appends plain tokens to it.
        delta: Text since the last delta; the parser's loop appends to it.
        content: Every content delta's text so far.
        events: The events not yet taken by the parser, in order. The parser
            takes the list (and puts an empty one here) when it hands them out.
        assigned: Tokens in closed segments.
    """

    __slots__ = (
        "_after_call",
        "_balance",
        "_body",
        "_body_tags",
        "_call_id",
        "_call_name",
        "_calls",
        "_decode_call",
        "_decode_calls",
        "_header",
        "_json",
        "_json_body",
        "_json_end",
        "_json_pos",
        "_reasoning",
        "_route",
        "_scan",
        "_segments",
        "_stay",
        "_tables",
        "_thinking_unterminated",
        "_tools",
        "assigned",
        "content",
        "cur",
        "delta",
        "events",
        "state",
    )

    def __init__(
        self,
        tables: TagTables,
        decode_call: CallDecoder | None,
        tools: ToolSchemas | None,
        state: int,
        *,
        json_body: bool = False,
        route_header: HeaderRouter | None = None,
        json_end: bool = False,
        body_tags: frozenset[int] = frozenset(),
        after_call: int = TEXT,
        separators: str = "",
        decode_calls: CallListDecoder | None = None,
        python: bool = False,
    ) -> None:
        self._json_end = json_end
        self._decode_calls = decode_calls
        self._scan: type[JsonScan] | type[PyScan] = PyScan if python else JsonScan
        self._body_tags = body_tags
        self._after_call = after_call
        self._stay = " \t\r\n" + separators
        self._tables = tables
        self._decode_call = decode_call
        self._tools = tools
        self._json_body = json_body
        self._route = route_header
        self.events: list[ParseEvent] = []
        self.state = state
        self.cur = OpenSegment(KIND[state], 0)
        self.delta: list[str] = []
        self.content: list[str] = []
        self.assigned = 0
        self._segments: list[ReplySegment] = []
        self._calls: list[ToolCall] = []
        self._reasoning: list[str] = []
        self._body: list[str] = []
        self._header: list[str] = []
        self._json: JsonScan | None = None
        self._json_pos = 0
        self._balance: JsonScan | PyScan = self._scan()
        self._call_name: str | None = None
        self._call_id: str | None = None
        self._thinking_unterminated = False

    @property
    def segments(self) -> list[ReplySegment]:
        """The closed segments, in order (the live list)."""
        return self._segments

    @property
    def calls(self) -> list[ToolCall]:
        """The completed calls, in order (the live list)."""
        return self._calls

    # -- what the parser calls ----------------------------------------------------------

    def assign(self, toks: Iterable[Pending]) -> None:
        """Give tokens to the open segment."""
        cur = self.cur
        for item, piece, _ in toks:
            cur.items.append(item)
            cur.pieces.append(piece)

    def emit(self, text: str) -> None:
        """Add text of the current state (it becomes part of the next delta)."""
        if text:
            self.delta.append(text)

    def take(self, text: str) -> int | None:
        """Add text of the current state, up to an implicit state change.

        A JSON-ended call ends where its JSON balances; text other than
        whitespace and separators leaves a section of JSON-ended calls (it is
        content). Returns ``None`` when all of ``text`` was taken with no
        change, else where the state changes (maybe ``len(text)``); then the
        caller gives the segment its tokens and calls :meth:`change` (the rest
        of ``text`` belongs to the new state).
        """
        if self.state == TOOL:
            end = self._balance.balance(text)
            self.emit(text if end < 0 else text[:end])
            return None if end < 0 else end
        stay = self._stay
        for k, ch in enumerate(text):
            if ch not in stay:
                self.emit(text[:k])
                return k
        self.emit(text)
        return None

    def change(self) -> None:
        """Make the state change :meth:`take` found: a call ends, or a section does."""
        self._close_current(terminated=True)
        self._switch(self._after_call if self.state == TOOL else TEXT)

    def tag(self, code: int, tag_toks: list[Pending], index: int) -> None:
        """A tag valid in the current state arrived, carried by ``tag_toks``.

        ``index`` is the reply position of the token being parsed (for
        :class:`ToolCallOpened`). Inside an open JSON string of a call body the
        tag is text of the body instead.
        """
        state = self.state
        if state == TOOL and self._json_body and self._in_json_string():
            self.assign(tag_toks)
            self.emit(self._tables.tag_text[code])
            return
        to = self._tables.moves[state][code]
        if to == ROUTE:  # the header ends: its tokens start the block it names
            self.assign(tag_toks)
            self.flush_delta()
            target = self._routed("".join(self._header))
            self._enter(target, index, self.cur)
            return
        if to == state and state != TOOL:  # absorbed: markup, not text
            self.assign(tag_toks)
            return
        if to == TEXT or (to == CALLS and state == TOOL):
            # A closing tag: it belongs to the block it closes.
            self.assign(tag_toks)
            self._close_current(terminated=True)
            self._switch(to)
            return
        self._close_current(terminated=False, cut_by=f"the next {self._tables.tag_text[code]}")
        self._switch(to)
        if to == TOOL:
            self.events.append(ToolCallOpened(len(self._calls), index))
            if code in self._body_tags:  # the tag's text is the body's start
                self.take(self._tables.tag_text[code])
        elif to == HEAD:  # the router reads the header with the tag that opened it
            self._header.append(self._tables.tag_text[code])
        self.assign(tag_toks)

    def stop(self, item: Item, piece: str) -> None:
        """A stop token: close everything, then emit it as a ``stop`` segment."""
        self.close_all()
        cur = self.cur = OpenSegment("stop", self.assigned)
        cur.items.append(item)
        cur.pieces.append(piece)
        self._close_segment()
        self._switch(TEXT)

    def close_all(self) -> None:
        """End whatever is open: a call is unterminated, thinking is flagged."""
        state = self.state
        if state == HEAD:  # a cut header: route what there is of it
            self.flush_delta()
            target = self._routed("".join(self._header))
            self._enter(target, None, self.cur)
            state = self.state
        if state == TOOL:
            self._close_current(terminated=False)
            self._switch(TEXT)
        elif state == THINK:
            self._thinking_unterminated = True
            self._close_current(terminated=False)
            self._switch(TEXT)
        else:
            self.flush_delta()
            self._close_segment()

    def flush_delta(self) -> None:
        """Turn the text since the last delta into one delta event (or call body)."""
        delta = self.delta
        text = delta[0] if len(delta) == 1 else "".join(delta)
        delta.clear()
        if not text:
            return
        state = self.state
        if state == TOOL:
            self._body.append(text)
            return
        if state == TEXT:
            self.content.append(text)
            ev: ParseEvent = _new(TextDelta)
            _set_text(ev, text)
        elif state == THINK:
            self._reasoning.append(text)
            ev = _new(ThinkingDelta)
            _set_think(ev, text)
        else:  # section markup or a header: not content
            if state == HEAD:
                self._header.append(text)
            return
        self.events.append(ev)

    def reply(self) -> Reply:
        """The whole reply (after :meth:`close_all`)."""
        return Reply(
            reasoning="".join(self._reasoning),
            content="".join(self.content),
            tool_calls=tuple(self._calls),
            segments=tuple(self._segments),
            token_ids=self.closed_ids(),
            thinking_unterminated=self._thinking_unterminated,
        )

    def closed_ids(self) -> npt.NDArray[np.int32]:
        """The IDs of the closed segments, in order (a read-only int32 array)."""
        segments = self._segments
        if not segments:
            return freeze_ids([])
        ids = (
            np.concatenate([seg.ids for seg in segments]) if len(segments) > 1 else segments[0].ids
        )
        ids.flags.writeable = False
        return ids

    # -- state changes ------------------------------------------------------------------

    def _routed(self, header: str) -> int:
        """Route a header; keep the call name and ID it gives; return the state."""
        route = self._route
        assert route is not None  # a format with a header state has a router
        routed = route(header)
        self._call_name = routed[1]
        self._call_id = routed[2] if len(routed) > 2 else None
        return _STATE_OF.get(routed[0], TEXT)

    def _enter(self, target: int, index: int | None, cur: OpenSegment) -> None:
        """Turn the open header segment into the start of a ``target`` block."""
        self.state = target
        cur.kind = KIND[target]
        if target == TOOL:
            self._body = []
            self._json = None
            if self._json_end:
                self._balance = self._scan()
            self.events.append(ToolCallOpened(len(self._calls), index if index is not None else 0))

    def _in_json_string(self) -> bool:
        """Whether the call body so far ends inside an open JSON string."""
        self.flush_delta()
        if self._json is None:
            self._json = JsonScan()
            self._json_pos = 0
        body = "".join(self._body)
        self._body[:] = [body]
        self._json.feed(body[self._json_pos :])
        self._json_pos = len(body)
        return self._json.in_string

    def _switch(self, state: int) -> None:
        self.flush_delta()
        self.state = state
        if state == TOOL:
            self._body = []
            self._json = None
            self._call_name = self._call_id = None
            if self._json_end:
                self._balance = self._scan()
        elif state == HEAD:
            self._header = []
        self.cur = OpenSegment(KIND[state], self.assigned)

    def _close_current(self, *, terminated: bool, cut_by: str = "the end of the reply") -> None:
        """Close the open segment; a call's body is decoded and the call reported."""
        self.flush_delta()
        if self.state != TOOL:
            self._close_segment()
            return
        cur = self.cur
        body = "".join(self._body)
        seg = self._close_segment()
        ids = seg.ids if seg is not None else freeze_ids([])
        span = (cur.start, cur.start + len(cur.items))
        if not terminated:
            closing = self._tables.call_close
            cut = f"no {closing} before {cut_by}" if closing else f"cut off by {cut_by}"
            res = self._decode_one(body)
            cut_call = DecodedCall(res.name, res.arguments, ToolCallStatus.UNTERMINATED, cut)
            self._report(cut_call._replace(call_id=res.call_id), body, ids, span)
            return
        if self._decode_calls is None:
            self._report(self._decode_one(body), body, ids, span)
            return
        decoded = [DecodedCall(*res) for res in self._decode_calls(body, self._tools)]
        if not decoded:
            decoded = [DecodedCall(None, None, ToolCallStatus.MALFORMED, "no call in the body")]
        for res in decoded:
            self._report(self._checked(res), res.raw or body, ids, span)

    def _decode_one(self, body: str) -> DecodedCall:
        """Decode a one-call body; apply what the header said (name, call ID)."""
        decode = self._decode_call
        if decode is None:  # a cut list body: its calls are not read
            return DecodedCall(None, None, ToolCallStatus.UNTERMINATED, None)
        res = DecodedCall(*decode(body, self._tools))  # a plain 4-tuple is fine too
        if self._call_name is not None:  # the header named the call
            name = self._call_name
            status, error = res.status, res.error
            if status in (ToolCallStatus.OK, ToolCallStatus.UNKNOWN_TOOL):
                status, error = ToolCallStatus.OK, None
                if self._tools is not None and name not in self._tools:
                    status, error = ToolCallStatus.UNKNOWN_TOOL, f"unknown tool {name!r}"
            res = res._replace(name=name, status=status, error=error)
        if self._call_id is not None:
            res = res._replace(call_id=self._call_id)
        return self._checked(res)

    @staticmethod
    def _checked(res: DecodedCall) -> DecodedCall:
        """A call without a name is malformed, whatever the decoder said."""
        if res.name is None and res.status in (ToolCallStatus.OK, ToolCallStatus.UNKNOWN_TOOL):
            return res._replace(status=ToolCallStatus.MALFORMED, error="the call has no name")
        return res

    def _report(
        self, res: DecodedCall, raw: str, ids: npt.NDArray[np.int32], span: tuple[int, int]
    ) -> None:
        call = ToolCall(
            index=len(self._calls),
            name=res.name,
            arguments=res.arguments,
            status=res.status,
            raw=raw,
            ids=ids,
            error=res.error,
            start_token=span[0],
            end_token=span[1],
            call_id=res.call_id,
        )
        self._calls.append(call)
        self.events.append(call)

    def _close_segment(self) -> ReplySegment | None:
        cur = self.cur
        if not cur.items:
            return None
        seg = cur.freeze(len(self._calls) if cur.kind == "tool_call" else None)
        self._segments.append(seg)
        self.assigned += len(cur.items)
        self.cur = OpenSegment(cur.kind, self.assigned)
        self.events.append(seg)
        return seg
