"""The sans-IO response parser: a reply's token IDs in, parse events out.

:class:`ResponseParser` never awaits and does no I/O. It is pull-based, like
h11's ``Connection``: push tokens with :meth:`~ResponseParser.receive_tokens`
(or :meth:`~ResponseParser.receive_ids`), say when the reply ends with
:meth:`~ResponseParser.end_of_reply`, and pull events with
:meth:`~ResponseParser.next_event` until it returns :data:`NEED_TOKENS`.
:meth:`~ResponseParser.feed`, :meth:`~ResponseParser.feed_ids` and
:meth:`~ResponseParser.finish` are the push-and-drain forms. The trio shell
that drives it from a live stream is ``tokstream._trio._reply``.

Theory of operation
===================

Text. The parser never trusts per-token text from the server (vLLM sends text
per chunk, lags it behind stop strings and holds back partial UTF-8). It
derives each token's text, its *piece*, from the ID with the tokenizer's
incremental detokenizer, so ``"".join(pieces) == tokenizer.decode(ids)``.

States and tags come from a :class:`~tokstream.core.parser.ReplyFormat`, a
table the chat format owns (``_format`` has the rules). Three states, named by
the segment they build: ``text`` (content), ``thinking`` and ``tool_call``.
For Qwen / Hermes::

    text      --<think>------> thinking     (unless thinking="off")
    text      --<tool_call>--> tool_call
    thinking  --</think>-----> text
    thinking  --<tool_call>--> tool_call    (a call ends thinking implicitly)
    tool_call --</tool_call>-> text         (the call is decoded and reported)
    tool_call --<tool_call>--> tool_call    (the open call is reported unterminated)

A stop token (``<|im_end|>``, ``<|endoftext|>``) closes whatever is open (an
open call is reported unterminated, open thinking is flagged) and becomes a
``stop`` segment. Any other tag-like text is ordinary text of its state. The
reply starts in ``text``, or in ``thinking`` when the prompt opened a thinking
block (``thinking="open"``; the context tree decides it from the prompt).

Recognising tags. Two ways, both always on unless ``match_text=False``:

* By ID: when the tokenizer has a tag as one added token (real Qwen models
  emit ``<tool_call>`` as 151657), a dict lookup on the ID dispatches it. This
  is the hot path's only structural check.
* By text: for tags spelled by several ordinary tokens (a constrained decoder
  may pick ``"<" "tool" "_call" ">"``). A piece with no ``<`` and no pending
  hold-back is appended as is. Otherwise the hold-back scanner (``_holdback``,
  an object the parser owns) finds complete tags and holds back a possible
  tag's prefix (``"<tool"``), so held text is never emitted and then retracted.

Segments and the token-boundary rule. Every token is assigned to exactly one
segment (leaf), in stream order, so the segments' IDs concatenate to exactly
the received IDs. Thinking and tool-call segments include their tags. When a
tag's characters share a token with other text, **a token that carries any
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
become U+FFFD in the last piece (at the end of the reply; they yield no delta).

Events. Each closed segment is a :class:`~tokstream.ReplySegment` event, in
stream order; a call's segment comes right before its
:class:`~tokstream.ToolCall`. Tool-call bodies are collected as text and
decoded once, at the closing tag, by the format's decoder (``_hermes``,
``_qwen3_coder``): no per-token regex, no incremental JSON. Deltas are
coalesced per received batch: a batch yields at most one delta per run of
same-kind text between events.

One loop. :meth:`ResponseParser._parse` is the only per-token loop. It runs over
a received batch; a plain token (no tag ID, no ``<``, nothing held back) costs
one detokenizer step, one dict lookup and three list appends (the token as
received, its piece, the pending delta), and allocates nothing. Everything
else takes the slow path (``_slow``). The pull form stops the loop after a
token that produced events, so a consumer that acts on a
:class:`~tokstream.ToolCall` (starts its tool) does so before any later token
is parsed; the batch resumes on the next :meth:`~ResponseParser.next_event`.
A segment takes IDs and logprobs out of its tokens once, when it closes.

Errors. Malformed model output never raises: it is a call's status, or
``Reply.thinking_unterminated``. Bad arguments raise
:class:`~tokstream.InvalidRequest`. Using the parser out of order (tokens after
:meth:`~ResponseParser.end_of_reply`, ending twice) is a bug in the caller and
raises ``RuntimeError``.

Layout: this module has the public API and the loop. The parser owns a
``ReplyAssembler`` (``_assembler``: state changes, segment closing, deltas) and
a ``HoldBackScanner`` (``_holdback``: text tags); ``_tags`` compiles the tables.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from ..._events import Token
from ..._exceptions import InvalidRequest
from ._assembler import ReplyAssembler
from ._events import (
    NEED_TOKENS,
    NeedTokens,
    ParseEvent,
    ReplySegment,
    SegmentKind,
    TextDelta,
    ToolCall,
)
from ._format import ReplyFormat, family_reply_format, get_reply_format
from ._holdback import HoldBackScanner
from ._protocols import ParserTokenizer, ThinkingMode
from ._segments import Item, id_items, item_ids
from ._tags import CALLS, KIND, STOP, TEXT, THINK, TOOL, compile_tables
from ._tools import ToolSpecs, normalise_tools

__all__ = ["ResponseParser"]

_LoopRefs: TypeAlias = tuple[
    ReplyAssembler,
    HoldBackScanner,
    Callable[[int], "int | None"],
    Callable[[int], str],
    tuple[str, ...],
    list[str],
]

# Deltas are built without the frozen-dataclass __init__ (see _assembler).
_new = object.__new__
_set_text: Callable[[object, str], None] = TextDelta.__dict__["text"].__set__


class ResponseParser:
    """Parse one assistant reply, token by token, into events and segments.

    Sans-IO and pull-based, like h11: :meth:`receive_tokens` /
    :meth:`receive_ids` push tokens, :meth:`end_of_reply` says no more will
    come, and :meth:`next_event` returns the next event or :data:`NEED_TOKENS`.
    :meth:`feed`, :meth:`feed_ids` and :meth:`finish` push and return every
    event at once. Feeding the same IDs whole, one at a time, or in any
    grouping, through any of these, gives the same segments and calls (and the
    same concatenated deltas).

    Events come in stream order: :class:`~tokstream.ThinkingDelta` /
    :class:`~tokstream.TextDelta` text, a :class:`~tokstream.ReplySegment` for
    each closed segment, :class:`~tokstream.ToolCallOpened` at a call's opening
    tag and :class:`~tokstream.ToolCall` when it closes (after its segment), and
    last the :class:`~tokstream.Reply`.

    Args:
        tokenizer: The model's tokenizer (``tokstream.Tokenizer`` or anything
            with ``added_tokens``, ``detokenizer()`` and ``encode()``). Tag IDs
            and stop IDs are looked up in it, and token text is derived from
            IDs with its incremental detokenizer.
        reply_format: The reply's tags, stop tokens and call decoder, usually
            from the chat format (``context.chat_format.reply_format()``).
        tool_format: Instead of ``reply_format``, the name of a registered one:
            ``"hermes"`` (Hermes / Qwen2.5 / Qwen3 JSON calls), ``"qwen3_coder"``
            (``<function=...>`` markup), ``"deepseek_v31"``, ``"deepseek_v32"``,
            ``"deepseek_v4"``, ``"harmony"`` (gpt-oss), ``"mistral"``,
            ``"mistral_v11"``, ``"llama4_pythonic"``, ... (see
            ``registered_reply_formats()``). With neither, the tokenizer's
            family picks it (``family_reply_format``), else ``"hermes"``.
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
            format's stop tokens (Qwen: ``<|im_end|>``, ``<|endoftext|>``).

    Raises:
        InvalidRequest: Both ``reply_format`` and ``tool_format``, an unknown
            ``tool_format`` or ``thinking``, or a tool definition without a
            name.
    """

    __slots__ = (
        "_asm",
        "_busy",
        "_ended",
        "_ending",
        "_flush_piece",
        "_implicit",
        "_loop_refs",
        "_paused",
        "_pending",
        "_queue",
        "_read",
        "_scanner",
        "_tables",
    )

    def __init__(
        self,
        tokenizer: ParserTokenizer,
        *,
        reply_format: ReplyFormat | None = None,
        tool_format: str | None = None,
        tools: ToolSpecs | None = None,
        thinking: ThinkingMode = "auto",
        match_text: bool = True,
        stop_ids: Iterable[int] | None = None,
    ) -> None:
        if reply_format is None:
            if tool_format is None:
                family = getattr(tokenizer, "family", None)
                tool_format = family_reply_format(family, tokenizer.added_tokens)
            reply_format = get_reply_format(tool_format)
        elif tool_format is not None:
            raise InvalidRequest("tool_format", tool_format, "give reply_format or tool_format")
        tables = compile_tables(
            reply_format,
            tokenizer.added_tokens,
            thinking=thinking,
            match_text=match_text,
            stop_ids=stop_ids,
        )
        self._tables = tables
        self._implicit = reply_format.call_end != "tag"
        detokenizer = tokenizer.detokenizer()
        self._flush_piece: Callable[[], str] = detokenizer.flush
        self._scanner = HoldBackScanner()
        self._asm = ReplyAssembler(
            tables,
            reply_format.decode_call,
            normalise_tools(tools),
            THINK if thinking == "open" else (CALLS if reply_format.initial == "calls" else TEXT),
            json_body=reply_format.call_body == "json",
            route_header=reply_format.route_header,
            json_end=reply_format.call_end != "tag",
            body_tags=frozenset(
                tables.tag_text.index(t) for t in reply_format.body_tags if t in tables.tag_text
            ),
            after_call=CALLS if any(to == "calls" for *_, to in reply_format.tags) else TEXT,
            separators=reply_format.calls_separators,
            decode_calls=reply_format.decode_calls,
            python=reply_format.call_end == "python",
        )
        # What the token loop binds on every call, in one tuple: one load, not six.
        self._loop_refs: _LoopRefs = (
            self._asm,
            self._scanner,
            tables.by_id.get,
            detokenizer.feed,
            tables.triggers,
            self._asm.delta,
        )
        # Received batches not yet parsed; the events of the pull API not yet
        # returned (_queue from index _read).
        self._pending: deque[tuple[Iterator[Item], bool]] = deque()
        self._paused = False
        self._queue: list[ParseEvent] = []
        self._read = 0
        self._ending = False
        self._ended = False
        # Batches pending, events pulled halfway, or the reply ending: feed()
        # then takes the general path (one check, not three).
        self._busy = False

    # -- what has been parsed --------------------------------------------------------------

    @property
    def state(self) -> SegmentKind:
        """The kind of segment being built: ``"text"``, ``"thinking"`` or ``"tool_call"``."""
        return KIND[self._asm.state]

    @property
    def tokens_parsed(self) -> int:
        """How many received tokens have been parsed (events may be pending)."""
        asm = self._asm
        return asm.assigned + len(asm.cur.items) + self._scanner.pending

    @property
    def token_ids(self) -> npt.NDArray[np.int32]:
        """Every ID parsed so far (a fresh int32 array)."""
        asm = self._asm
        rest = np.array(item_ids(asm.cur.items) + self._scanner.held_ids, dtype=np.int32)
        return np.concatenate([asm.closed_ids(), rest])

    @property
    def segments(self) -> tuple[ReplySegment, ...]:
        """The segments closed so far (the open one is not included)."""
        return tuple(self._asm.segments)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls completed so far."""
        return tuple(self._asm.calls)

    # -- the pull API ----------------------------------------------------------------------

    def receive_tokens(self, tokens: Iterable[Token]) -> None:
        """Push stream tokens, in stream order; parse them with :meth:`next_event`.

        Only ``id`` and ``logprob`` are used: text comes from the tokenizer.
        Nothing is parsed or copied here: the parser iterates ``tokens`` as
        :meth:`next_event` parses, so do not change the collection before then.

        A token whose ID is negative or outside int32 (a stream's never is: the
        decoder checks them) makes :meth:`next_event` raise ``InvalidRequest``
        when its segment closes.

        Raises:
            RuntimeError: :meth:`end_of_reply` was already called (a bug in
                the caller, not in the stream).
        """
        if self._ending:
            raise RuntimeError("ResponseParser: tokens received after end_of_reply()")
        self._pending.append((iter(tokens), False))
        self._busy = True

    def receive_ids(
        self,
        ids: Iterable[int] | npt.NDArray[np.integer],
        logprobs: Iterable[float | None] | None = None,
    ) -> None:
        """Push token IDs (and optionally their logprobs), in stream order.

        Args:
            ids: Token IDs (ints or an integer array).
            logprobs: Their log-probabilities, aligned with ``ids``, or ``None``.

        An ID that is negative or outside int32 makes :meth:`next_event`
        raise ``InvalidRequest`` when its segment closes.

        Raises:
            InvalidRequest: ``logprobs`` is not the same length as ``ids``.
            RuntimeError: :meth:`end_of_reply` was already called.
        """
        items, by_id = id_items(ids, logprobs)
        if self._ending:
            raise RuntimeError("ResponseParser: IDs received after end_of_reply()")
        self._pending.append((iter(items), by_id))
        self._busy = True

    def end_of_reply(self) -> None:
        """Say that no more tokens will come (the stream ended, however it ended).

        :meth:`next_event` then reports what is unterminated and, last, the
        :class:`~tokstream.Reply` (see :meth:`finish`).

        Raises:
            RuntimeError: Called twice.
        """
        if self._ending:
            raise RuntimeError("ResponseParser.end_of_reply() was already called")
        self._ending = self._busy = True

    def next_event(self) -> ParseEvent | NeedTokens:
        """Parse on until the next event and return it, or :data:`NEED_TOKENS`.

        Parsing stops right after a token that completes an event, so a caller
        can act on it (start a :class:`~tokstream.ToolCall`'s tool) before any
        later token is parsed.

        Returns:
            The next event; :data:`NEED_TOKENS` when every received token is
            parsed and the reply has not ended. After :meth:`end_of_reply`, the
            last event is the :class:`~tokstream.Reply`; from then on it
            returns :data:`NEED_TOKENS` for good.
        """
        queue = self._queue
        while self._read == len(queue):
            pending = self._pending
            if pending:
                items, by_id = pending[0]
                self._paused = False
                queue = self._parse(items, by_id, True)
                if not self._paused:  # the batch is used up
                    pending.popleft()
            elif self._ending and not self._ended:
                queue = self._end()
            else:
                self._queue, self._read, self._busy = [], 0, self._ending
                return NEED_TOKENS
            self._queue, self._read = queue, 0
        ev = queue[self._read]
        self._read += 1
        return ev

    # -- push and drain ----------------------------------------------------------------------

    def feed(self, tokens: Iterable[Token]) -> list[ParseEvent]:
        """Push stream tokens and return every event they complete.

        The same as :meth:`receive_tokens`, then :meth:`next_event` until
        :data:`NEED_TOKENS`.

        Returns:
            The new events, in order (often empty or one delta).

        Raises:
            RuntimeError: The reply was already ended.
        """
        if self._busy:
            self.receive_tokens(tokens)
            return self._drain()
        return self._parse(tokens, False, False)

    def feed_ids(
        self,
        ids: Iterable[int] | npt.NDArray[np.integer],
        logprobs: Iterable[float | None] | None = None,
    ) -> list[ParseEvent]:
        """Push token IDs (and optionally their logprobs); return the events.

        The same as :meth:`receive_ids`, then :meth:`next_event` until
        :data:`NEED_TOKENS`.

        Raises:
            InvalidRequest: ``logprobs`` is not the same length as ``ids``.
            RuntimeError: The reply was already ended.
        """
        self.receive_ids(ids, logprobs)
        return self._drain()

    def finish(self) -> list[ParseEvent]:
        """End the reply: return the remaining events; the last is the :class:`Reply`.

        The same as :meth:`end_of_reply`, then :meth:`next_event` until the
        :class:`~tokstream.Reply`. Tokens received and not yet parsed are
        parsed first.

        Held-back text that never became a tag is released as text. An open
        tool call is reported with :attr:`ToolCallStatus.UNTERMINATED`; open
        thinking sets ``Reply.thinking_unterminated``. The open segment closes
        (a :class:`~tokstream.ReplySegment` event).

        Incomplete UTF-8 bytes at the very end (a reply cut inside a
        character) become U+FFFD in the text of the segment that holds their
        tokens, so the segments' texts still join to ``tokenizer.decode(ids)``.
        They yield no delta and are not in ``content`` or ``reasoning``: like
        vLLM's streamed text, deltas carry only complete characters.

        Raises:
            RuntimeError: The reply was already ended.
        """
        self.end_of_reply()
        return self._drain()

    # -- the loop ------------------------------------------------------------------------------

    def _drain(self) -> list[ParseEvent]:
        events = self._queue[self._read :]
        for items, by_id in self._pending:
            events += self._parse(items, by_id, False)
        self._pending.clear()
        if self._ending and not self._ended:
            events += self._end()
        self._queue, self._read, self._busy = [], 0, self._ending
        return events

    def _parse(self, items: Iterable[Item], by_id: bool, stop: bool) -> list[ParseEvent]:
        """The token loop. Parse ``items`` (IDs if ``by_id``, else ``Token``-like).

        Returns the events produced. With ``stop``, return right after a token
        that produced one (setting ``_paused``), leaving the rest of ``items``
        (an iterator) for the next call. Otherwise parse them all and flush the
        delta.
        """
        asm, scanner, tag_get, piece_of, triggers, delta = self._loop_refs
        cur = asm.cur
        hold = scanner.held
        trigger = triggers[asm.state]
        # The hot path: a plain token (no tag ID, no trigger, nothing held back)
        # costs one detokenizer step, one dict lookup and three list appends.
        for t in items:
            tid: int = t if by_id else t.id  # type: ignore[assignment, union-attr]
            piece = piece_of(tid)
            code = tag_get(tid)
            if code is None and not hold and trigger not in piece:
                cur.items.append(t)
                cur.pieces.append(piece)
                delta.append(piece)
            else:
                self._slow(t, tid, piece, code)
                cur, hold, trigger = asm.cur, scanner.held, triggers[asm.state]
                if stop and asm.events:
                    self._paused = True
                    events = asm.events
                    asm.events = []
                    return events
        if delta:
            if len(delta) == 1 and asm.state == TEXT and delta[0]:
                # flush_delta() inlined for live streaming: one piece of content.
                text = delta.pop()
                asm.content.append(text)
                ev: ParseEvent = _new(TextDelta)
                _set_text(ev, text)
                asm.events.append(ev)
            else:
                asm.flush_delta()
        events = asm.events
        asm.events = []
        return events

    def _slow(self, item: Item, tid: int, piece: str, code: int | None) -> None:
        asm = self._asm
        scanner = self._scanner
        # Tokens consumed before this one: closed segments, the open one, held ones.
        index = asm.assigned + len(asm.cur.items) + scanner.pending
        if code is not None and (code == STOP or code in self._tables.moves[asm.state]):
            held, toks = scanner.release()
            asm.emit(held)
            asm.assign(toks)
            if code == STOP:
                asm.stop(item, piece)
            else:
                asm.tag(code, [(item, piece, 0)], index)
            return
        # Text, or a tag ID where that tag means nothing (e.g. </think> in content).
        tables = self._tables
        scanner.push(item, piece)
        implicit = self._implicit
        while True:
            state = asm.state
            text, before, found = scanner.next(
                tables.text_tags[state], tables.prefixes[state], tables.triggers[state]
            )
            if text and implicit and state in (TOOL, CALLS):
                took = asm.take(text)
                if took is not None:  # the state changed inside this text
                    cut = scanner.last_start + took
                    # A call's closing bracket's token belongs to the call; the
                    # token that starts content after a section belongs to it.
                    n = sum(1 for t in before if t[2] < cut) if state == TOOL else 0
                    if state != TOOL:
                        n = sum(1 for t in before if t[2] + len(t[1]) <= cut)
                    asm.assign(before[:n])
                    asm.change()
                    rest = before[n:] + (found[1] if found is not None else [])
                    scanner.resume(cut, rest)
                    continue
            else:
                asm.emit(text)
            asm.assign(before)
            if found is None:
                return
            asm.tag(found[0], found[1], index)

    def _end(self) -> list[ParseEvent]:
        asm = self._asm
        held, toks = self._scanner.release()
        while held and self._implicit and asm.state in (TOOL, CALLS):
            took = asm.take(held)
            if took is None:
                held = ""
            else:
                held = held[took:]
                asm.change()
        asm.emit(held)
        asm.assign(toks)
        tail = self._flush_piece()
        if tail and asm.cur.pieces:
            # The cut character's tokens are the last parsed. They are in the
            # open segment unless a closing tag ended on them; that segment is
            # already out, and its text keeps only the complete characters.
            asm.cur.pieces[-1] += tail
        asm.close_all()
        self._ended = True
        events = asm.events
        events.append(asm.reply())
        asm.events = []
        return events
