"""The sans-IO response parser: a reply's token IDs in, parse events out.

:class:`ResponseParser` never awaits and does no I/O: push tokens with
:meth:`~ResponseParser.feed` (or :meth:`~ResponseParser.feed_ids`), get events
back, and call :meth:`~ResponseParser.finish` when the stream ends. The trio
shell that drives it from a live stream is ``tokstream._runner``.

Theory of operation
===================

Text. The parser never trusts per-token text from the server (vLLM sends text
per chunk, lags it behind stop strings and holds back partial UTF-8). It
derives each token's text, its *piece*, from the ID with the tokenizer's
incremental detokenizer, so ``"".join(pieces) == tokenizer.decode(ids)``.

States. Three: ``TEXT`` (content), ``THINK`` (inside ``<think>``) and ``TOOL``
(inside ``<tool_call>``). Each state recognises a few tags::

    TEXT  --<think>------> THINK      (unless thinking="off")
    TEXT  --<tool_call>--> TOOL
    THINK --</think>-----> TEXT
    THINK --<tool_call>--> TOOL       (a call ends thinking implicitly)
    TOOL  --</tool_call>-> TEXT       (the call is parsed and reported)
    TOOL  --<tool_call>--> TOOL       (the open call is reported unterminated)

A stop ID (``<|im_end|>``, ``<|endoftext|>``) closes whatever is open (an open
call is reported unterminated, open thinking is flagged) and becomes a
``stop`` segment. Any other tag-like text is ordinary text of its state.

Recognising tags. Two ways, both always on unless ``match_text=False``:

* By ID: when the tokenizer has a tag as one added token (real Qwen models
  emit ``<tool_call>`` as 151657), a dict lookup on the ID dispatches it. This
  is the hot path's only structural check.
* By text: for tags spelled by several ordinary tokens (a constrained decoder
  may pick ``"<" "tool" "_call" ">"``). A piece with no ``<`` and no pending
  hold-back is appended as is. Otherwise the slow path scans for ``<``: a
  complete tag switches state; a proper prefix of a tag valid in the current
  state (``"<tool"``) is *held back*, neither emitted nor assigned, until the
  next pieces prove it a tag or plain text. Held text is therefore never
  emitted and then retracted.

Segments and the token-boundary rule. Every token is assigned to exactly one
segment (leaf), in stream order, so the segments' IDs concatenate to exactly
the fed IDs. Thinking and tool-call segments include their tags. When a tag's
characters share a token with other text, **a token that carries any
character of a tag belongs to that tag's segment** (an opening tag's segment
is the one it opens; a closing tag's is the one it closes); a token carrying
characters of two tags belongs to the first. Every other token belongs to the
segment that is open when its text is consumed (tokens with empty text, e.g.
UTF-8 hold-back, go with the position they occupy). So a piece ``"\\n<"`` that
starts ``<tool_call>`` goes to the call's segment while its ``"\\n"`` is still
reported as content: segment text is the exact decode of the segment's IDs,
while deltas, ``content`` and ``reasoning`` are the semantic text between tags.
With single-ID tags (real models) the two always agree.

Tool-call bodies are collected as text and parsed once, at the closing tag, by
the format module (``_hermes``, ``_qwen3_coder``): no per-token regex, no
incremental JSON.

Deltas are coalesced per ``feed()`` call: one call yields at most one delta per
run of same-kind text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .._events import Token
from ._events import (
    ParseEvent,
    Reply,
    ReplySegment,
    SegmentKind,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallStarted,
    ToolCallStatus,
)
from ._hermes import parse_hermes
from ._protocols import LeafSink, ParserTokenizer, ThinkingMode, ToolFormat
from ._qwen3_coder import parse_qwen3_coder
from ._segments import OpenSegment, freeze_ids
from ._tags import (
    CALL_CLOSE,
    STOP,
    TEXT,
    THINK,
    THINK_CLOSE,
    THINK_OPEN,
    TOOL,
    build_tag_tables,
)
from ._tools import ToolSchemas, ToolSpecs, normalise_tools

__all__ = ["ResponseParser"]

_KIND: tuple[SegmentKind, SegmentKind, SegmentKind] = ("text", "thinking", "tool_call")

# (id, logprob, piece, start offset of the piece in the scanned string)
_Pending: TypeAlias = tuple[int, float | None, str, int]

_FORMATS: dict[str, Callable[[str, ToolSchemas | None], Any]] = {
    "hermes": parse_hermes,
    "qwen3_coder": parse_qwen3_coder,
}


# Deltas are built without the frozen-dataclass __init__ (object.__setattr__ per
# field): the per-token path creates one per feed() call, so it must be cheap.
_new = object.__new__
_set_text: Callable[[object, str], None] = TextDelta.__dict__["text"].__set__
_set_think: Callable[[object, str], None] = ThinkingDelta.__dict__["text"].__set__


class ResponseParser:
    """Parse one assistant reply, token by token, into events and segments.

    Sans-IO: :meth:`feed` returns events at once; nothing is awaited. Feeding
    the same IDs whole, one at a time, or in any grouping gives the same
    segments and calls (and the same concatenated deltas).

    Args:
        tokenizer: The model's tokenizer (``tokstream.Tokenizer`` or anything
            with ``added_tokens``, ``detokenizer()`` and ``encode()``). Tag IDs
            and stop IDs are looked up in it, and token text is derived from
            IDs with its incremental detokenizer.
        tool_format: ``"hermes"`` (Hermes / Qwen2.5 / Qwen3 JSON calls) or
            ``"qwen3_coder"`` (``<function=...>`` markup).
        tools: Tool definitions (OpenAI-style list, bare function objects, or
            ``{name: parameters_schema}``). When given, an unknown name gives
            :attr:`ToolCallStatus.UNKNOWN_TOOL`, and Qwen3-Coder values convert
            to their schema types. When ``None``, any name is accepted and
            Qwen3-Coder values stay strings.
        thinking: ``"auto"``: ``<think>...</think>`` in the reply is reasoning.
            ``"open"``: the prompt already opened a thinking block, so the
            reply starts inside it. ``"off"``: ``<think>`` is ordinary text.
        match_text: Also recognise tags spelled by several ordinary tokens.
            With ``False``, a tag the tokenizer has as one token is recognised
            only by its ID (tags it lacks are always matched as text).
        stop_ids: IDs that end the reply as a ``stop`` segment. Default: the
            tokenizer's ``<|im_end|>`` and ``<|endoftext|>``.
        reply: An open reply of a context tree (``Context.begin_assistant()``)
            to grow leaf by leaf: each segment is added with ``add_leaf`` the
            moment it is complete, with its exact IDs, text and logprobs. Finish
            the turn yourself with ``reply.finish(done)`` after :meth:`finish`.
        on_segment: Called with each :class:`ReplySegment` the moment it is
            complete (after ``reply.add_leaf``).

    Raises:
        ValueError: Unknown ``tool_format`` or ``thinking``, or a tool
            definition without a name.
    """

    __slots__ = (
        "_assigned",
        "_body",
        "_calls",
        "_content",
        "_cur",
        "_delta",
        "_events",
        "_feed_piece",
        "_finished",
        "_format",
        "_hold",
        "_hold_toks",
        "_on_segment",
        "_prefixes",
        "_reasoning",
        "_segments",
        "_state",
        "_state_codes",
        "_tag_get",
        "_tag_ids",
        "_text_tags",
        "_thinking_unterminated",
        "_tools",
    )

    def __init__(
        self,
        tokenizer: ParserTokenizer,
        *,
        tool_format: ToolFormat = "hermes",
        tools: ToolSpecs | None = None,
        thinking: ThinkingMode = "auto",
        match_text: bool = True,
        stop_ids: Iterable[int] | None = None,
        reply: LeafSink | None = None,
        on_segment: Callable[[ReplySegment], None] | None = None,
    ) -> None:
        if tool_format not in _FORMATS:
            raise ValueError(f"tool_format must be 'hermes' or 'qwen3_coder', not {tool_format!r}")
        if thinking not in ("auto", "open", "off"):
            raise ValueError(f"thinking must be 'auto', 'open' or 'off', not {thinking!r}")
        self._format = _FORMATS[tool_format]
        self._tools = normalise_tools(tools)
        if reply is not None:
            add_leaf = reply.add_leaf
            user_cb = on_segment

            def grow(seg: ReplySegment) -> None:
                add_leaf(seg.kind, seg.ids, seg.text, seg.logprobs)
                if user_cb is not None:
                    user_cb(seg)

            on_segment = grow
        self._on_segment = on_segment
        tables = build_tag_tables(
            tokenizer.added_tokens,
            thinking_tags=thinking != "off",
            match_text=match_text,
            stop_ids=stop_ids,
        )
        self._tag_ids = tables.by_id
        self._text_tags = tables.text_tags
        self._prefixes = tables.prefixes
        self._state_codes = tables.state_codes
        self._feed_piece: Callable[[int], str] = tokenizer.detokenizer().feed
        self._tag_get = self._tag_ids.get
        self._segments: list[ReplySegment] = []
        self._calls: list[ToolCall] = []
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._body: list[str] = []
        self._events: list[ParseEvent] = []
        self._delta: list[str] = []
        self._hold = ""
        self._hold_toks: list[_Pending] = []
        self._assigned = 0
        self._finished = False
        self._thinking_unterminated = False
        self._state = THINK if thinking == "open" else TEXT
        self._cur = OpenSegment(_KIND[self._state], 0)

    # -- public API ------------------------------------------------------------------

    @property
    def token_ids(self) -> npt.NDArray[np.int32]:
        """Every ID fed so far (a fresh int32 array)."""
        ids = [int(i) for seg in self._segments for i in seg.ids]
        ids += self._cur.ids
        ids += [t[0] for t in self._hold_toks]
        return np.array(ids, dtype=np.int32)

    @property
    def segments(self) -> tuple[ReplySegment, ...]:
        """The segments completed so far (the open one is not included)."""
        return tuple(self._segments)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls completed so far."""
        return tuple(self._calls)

    def feed(self, tokens: Iterable[Token]) -> list[ParseEvent]:
        """Push stream tokens; return the events they complete.

        Only ``id`` and ``logprob`` are used: text comes from the tokenizer.

        Args:
            tokens: :class:`~tokstream.Token` events, in stream order.

        Returns:
            The new events, in order (often empty or one delta).

        Raises:
            RuntimeError: :meth:`finish` was already called.
        """
        if self._finished:
            raise RuntimeError("ResponseParser.feed() after finish()")
        events: list[ParseEvent] = []
        self._events = events
        tag_get = self._tag_get
        piece_of = self._feed_piece
        delta = self._delta
        cur = self._cur
        hold = self._hold
        # The hot path: a plain token (no tag ID, no "<", nothing held back) costs
        # one detokenizer step, one dict lookup and four list appends.
        for t in tokens:
            tid = t.id
            piece = piece_of(tid)
            code = tag_get(tid)
            if code is None and not hold and "<" not in piece:
                cur.ids.append(tid)
                cur.lps.append(t.logprob)
                cur.pieces.append(piece)
                delta.append(piece)
            else:
                self._slow(tid, t.logprob, piece, code)
                cur, hold = self._cur, self._hold
        if delta:
            if len(delta) == 1 and self._state == TEXT and delta[0]:
                # _flush_delta() inlined for the streaming case: one content token.
                text = delta.pop()
                self._content.append(text)
                ev: ParseEvent = _new(TextDelta)
                _set_text(ev, text)
                events.append(ev)
            else:
                self._flush_delta()
        return events

    def feed_ids(
        self,
        ids: Iterable[int] | npt.NDArray[np.integer],
        logprobs: Iterable[float | None] | None = None,
    ) -> list[ParseEvent]:
        """Push token IDs (and optionally their logprobs); return the events.

        Args:
            ids: Token IDs, in stream order (ints or an integer array).
            logprobs: Their log-probabilities, aligned with ``ids``, or ``None``.

        Returns:
            The new events, in order.

        Raises:
            RuntimeError: :meth:`finish` was already called.
            ValueError: ``logprobs`` is not the same length as ``ids``.
        """
        id_list = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
        if logprobs is None:
            lp_list: list[float | None] = [None] * len(id_list)
        else:
            lp_list = list(logprobs)
            if len(lp_list) != len(id_list):
                raise ValueError(f"{len(lp_list)} logprobs for {len(id_list)} token IDs")
        if self._finished:
            raise RuntimeError("ResponseParser.feed_ids() after finish()")
        events: list[ParseEvent] = []
        self._events = events
        tag_get = self._tag_get
        piece_of = self._feed_piece
        delta = self._delta
        cur = self._cur
        hold = self._hold
        for tid, lp in zip(id_list, lp_list, strict=True):  # same as feed()'s loop
            piece = piece_of(tid)
            code = tag_get(tid)
            if code is None and not hold and "<" not in piece:
                cur.ids.append(tid)
                cur.lps.append(lp)
                cur.pieces.append(piece)
                delta.append(piece)
            else:
                self._slow(tid, lp, piece, code)
                cur, hold = self._cur, self._hold
        if delta:
            self._flush_delta()
        return events

    def finish(self) -> list[ParseEvent]:
        """End the reply: report what is unterminated, then the :class:`Reply`.

        Held-back text that never became a tag is released as text. An open
        tool call is reported with :attr:`ToolCallStatus.UNTERMINATED`; open
        thinking sets ``Reply.thinking_unterminated``. Incomplete UTF-8 bytes
        at the very end yield no text (as vLLM streams them).

        Returns:
            The final events; the last is the :class:`Reply`.

        Raises:
            RuntimeError: Called twice.
        """
        if self._finished:
            raise RuntimeError("ResponseParser.finish() was already called")
        self._events = []
        self._close_all()
        self._finished = True
        reply = Reply(
            reasoning="".join(self._reasoning),
            content="".join(self._content),
            tool_calls=tuple(self._calls),
            segments=tuple(self._segments),
            token_ids=freeze_ids([int(i) for seg in self._segments for i in seg.ids]),
            thinking_unterminated=self._thinking_unterminated,
        )
        self._events.append(reply)
        return self._events

    # -- the slow path: tags, hold-back, transitions ----------------------------------------

    def _slow(self, tid: int, lp: float | None, piece: str, code: int | None) -> None:
        # Tokens consumed before this one: closed segments, the open one, held ones.
        index = self._assigned + len(self._cur.ids) + len(self._hold_toks)
        if code is None:
            self._scan(tid, lp, piece, index)
            return
        if code == STOP:
            self._release_hold()
            self._close_all()
            self._open_segment("stop").ids.append(tid)
            cur = self._cur
            cur.lps.append(lp)
            cur.pieces.append(piece)
            self._close_segment()
            self._switch(TEXT)
            return
        valid = code in self._state_codes[self._state]
        if not valid:
            # A tag ID where that tag means nothing (e.g. </think> in content): text.
            self._scan(tid, lp, piece, index)
            return
        self._release_hold()
        self._transition(code, [], [(tid, lp, piece, 0)], index)

    def _scan(self, tid: int, lp: float | None, piece: str, index: int) -> None:
        hold = self._hold
        s = hold + piece
        toks = self._hold_toks
        toks.append((tid, lp, piece, len(hold)))
        pos = scan = 0
        while True:
            i = s.find("<", scan)
            if i < 0:
                self._emit(s[pos:])
                self._assign(toks)
                self._hold, self._hold_toks = "", []
                return
            found = self._match(s, i)
            if found is None:
                if s[i:] in self._prefixes[self._state]:
                    self._emit(s[pos:i])
                    before = [t for t in toks if t[3] + len(t[2]) <= i]
                    self._assign(before)
                    self._hold = s[i:]
                    self._hold_toks = [(t[0], t[1], t[2], t[3] - i) for t in toks[len(before) :]]
                    return
                scan = i + 1
                continue
            tag, code = found
            self._emit(s[pos:i])
            before = [t for t in toks if t[3] + len(t[2]) <= i]
            self._transition(code, before, toks[len(before) :], index)
            toks = []
            pos = scan = i + len(tag)

    def _match(self, s: str, i: int) -> tuple[str, int] | None:
        for tag, code in self._text_tags[self._state]:
            if s.startswith(tag, i):
                return tag, code
        return None

    def _release_hold(self) -> None:
        if self._hold or self._hold_toks:
            self._emit(self._hold)
            self._assign(self._hold_toks)
            self._hold, self._hold_toks = "", []

    def _emit(self, text: str) -> None:
        if text:
            self._delta.append(text)

    def _assign(self, toks: Iterable[_Pending]) -> None:
        cur = self._cur
        for tid, lp, piece, _ in toks:
            cur.ids.append(tid)
            cur.lps.append(lp)
            cur.pieces.append(piece)

    def _transition(
        self, code: int, before: list[_Pending], tag_toks: list[_Pending], index: int
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
        self._cur = OpenSegment(_KIND[state], self._assigned)

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
