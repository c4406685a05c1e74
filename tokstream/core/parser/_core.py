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
  hold-back is appended as is. Otherwise the hold-back scanner (``_holdback``)
  finds complete tags and holds back a possible tag's prefix (``"<tool"``),
  so held text is never emitted and then retracted.

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
reported as content: segment text is the text of the segment's own tokens
(the pieces join to ``tokenizer.decode(ids)``), while deltas, ``content`` and
``reasoning`` are the semantic text between tags. With single-ID tags (real
models) the two always agree. A piece is the text a token completes: a
character whose UTF-8 bytes are split over several tokens is in the piece of
the token that completes it, and bytes still incomplete when the reply ends
become U+FFFD in the last piece (at ``finish()``; they yield no delta).

Tool-call bodies are collected as text and parsed once, at the closing tag, by
the format module (``_hermes``, ``_qwen3_coder``): no per-token regex, no
incremental JSON.

Deltas are coalesced per ``feed()`` call: one call yields at most one delta per
run of same-kind text.

Layout: this module has the public API and the per-token loops; state changes,
segment closing and deltas are in ``_transitions``, text-tag matching with
hold-back in ``_holdback`` (both bases of :class:`ResponseParser`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._events import Token
from ._events import ParseEvent, Reply, ReplySegment, TextDelta, ToolCall
from ._hermes import parse_hermes
from ._protocols import LeafSink, ParserTokenizer, ThinkingMode, ToolFormat
from ._qwen3_coder import parse_qwen3_coder
from ._segments import OpenSegment, freeze_ids
from ._tags import STOP, TEXT, THINK, build_tag_tables
from ._tools import ToolSchemas, ToolSpecs, normalise_tools
from ._transitions import KIND, Transitions

__all__ = ["ResponseParser"]

_FORMATS: dict[str, Callable[[str, ToolSchemas | None], Any]] = {
    "hermes": parse_hermes,
    "qwen3_coder": parse_qwen3_coder,
}

# feed() builds its one content delta without the frozen-dataclass __init__
# (object.__setattr__ per field): in a live stream that is once per token.
_new = object.__new__
_set_text: Callable[[object, str], None] = TextDelta.__dict__["text"].__set__


class ResponseParser(Transitions):
    """Parse one assistant reply, token by token, into events and segments.

    Sans-IO: :meth:`feed` returns events at once; nothing is awaited. Feeding
    the same IDs whole, one at a time, or in any grouping, through
    :meth:`feed`, :meth:`feed_ids` or :meth:`feed_until_call`, gives the same
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

    __slots__ = ("_feed_piece", "_finished", "_flush_piece", "_state_codes", "_tag_get", "_tag_ids")

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
        detokenizer = tokenizer.detokenizer()
        self._feed_piece: Callable[[int], str] = detokenizer.feed
        self._flush_piece: Callable[[], str] = detokenizer.flush
        self._tag_get = self._tag_ids.get
        self._segments: list[ReplySegment] = []
        self._calls: list[ToolCall] = []
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._body: list[str] = []
        self._events: list[ParseEvent] = []
        self._delta: list[str] = []
        self._hold = ""
        self._hold_toks = []
        self._assigned = 0
        self._finished = False
        self._thinking_unterminated = False
        self._state = THINK if thinking == "open" else TEXT
        self._cur = OpenSegment(KIND[self._state], 0)

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

    def feed_until_call(
        self, tokens: Sequence[Token], start: int = 0
    ) -> tuple[list[ParseEvent], int]:
        """Push ``tokens[start:]``, but stop right after a token that completes a call.

        A streaming shell that holds a burst of already-arrived tokens uses it
        to hand out each :class:`ToolCall` (and start its tool) before it parses
        the tokens after the call's closing tag. Otherwise the same as
        :meth:`feed`: feeding every token this way gives the same events.

        Args:
            tokens: :class:`~tokstream.Token` events, in stream order.
            start: Index of the first token to feed.

        Returns:
            The new events, and the index of the first token not fed:
            ``len(tokens)`` unless a token completed a call (the call is then
            the last event, or followed only by the events of the same token).

        Raises:
            RuntimeError: :meth:`finish` was already called.
        """
        if self._finished:
            raise RuntimeError("ResponseParser.feed_until_call() after finish()")
        events: list[ParseEvent] = []
        self._events = events
        tag_get = self._tag_get
        piece_of = self._feed_piece
        delta = self._delta
        cur = self._cur
        hold = self._hold
        calls = self._calls
        n_calls = len(calls)
        end = len(tokens)
        for k in range(start, end):  # feed()'s loop; calls complete only on its slow path
            t = tokens[k]
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
                if len(calls) != n_calls:
                    end = k + 1
                    break
        if delta:
            self._flush_delta()
        return events, end

    def finish(self) -> list[ParseEvent]:
        """End the reply: report what is unterminated, then the :class:`Reply`.

        Held-back text that never became a tag is released as text. An open
        tool call is reported with :attr:`ToolCallStatus.UNTERMINATED`; open
        thinking sets ``Reply.thinking_unterminated``.

        Incomplete UTF-8 bytes at the very end (a reply cut inside a
        character) become U+FFFD in the text of the segment that holds their
        tokens, so the segments' texts still join to ``tokenizer.decode(ids)``.
        They yield no delta and are not in ``content`` or ``reasoning``: like
        vLLM's streamed text, deltas carry only complete characters.

        Returns:
            The final events; the last is the :class:`Reply`.

        Raises:
            RuntimeError: Called twice.
        """
        if self._finished:
            raise RuntimeError("ResponseParser.finish() was already called")
        self._events = []
        self._release_hold()
        tail = self._flush_piece()
        if tail and self._cur.pieces:
            # The cut character's tokens are the last fed. They are in the open
            # segment unless a closing tag ended on them; that segment is
            # already out, and its text keeps only the complete characters.
            self._cur.pieces[-1] += tail
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
