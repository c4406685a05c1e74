"""The open reply: a handle that grows an assistant message leaf by leaf as it streams.

:meth:`Context.begin_assistant` returns a :class:`ReplyBuilder`. Sampled leaves
are appended at the end of the context, in order, so their IDs concatenated are
the reply's sampled IDs; :meth:`ReplyBuilder.finish` checks them against the
stream and writes the format's closing framing. No tokenization of sampled IDs,
no I/O.

:meth:`ReplyBuilder.new_parser` gives the response parser for this reply: the
chat format's reply table, started in the state the prompt left (inside a
thinking block that the generation prompt or a prefill opened). Each
:class:`~tokstream.ReplySegment` it emits becomes one leaf (:meth:`ReplyBuilder.add_segment`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._events import Done, Error
from .._exceptions import ContextError
from ..chat._base import LEAF_KINDS, LeafKind, Segment
from ..core.parser import NEED_TOKENS, ReplySegment, ResponseParser, ToolSpecs
from ._nodes import Leaf, Message
from ._state import _State
from ._tape import _as_ids, _as_lp, _Held

__all__ = ["ReplyBuilder"]


class ReplyBuilder:
    """Handle to grow an open assistant reply, leaf by leaf, while it streams.

    Get one from :meth:`Context.begin_assistant`. The sampled leaves are added
    at the end of the context in order, so their IDs, concatenated, are the
    reply's sampled IDs; :meth:`finish` checks them against the stream.
    """

    __slots__ = ("_begin", "_end", "_first", "_held", "_last", "_open", "_s", "message")

    def __init__(self, state: _State, message: Message, begin: int, held: _Held) -> None:
        self._s = state
        self.message = message
        self._begin = begin
        self._held = held
        self._first: int | None = None
        self._end = 0
        self._last: Leaf | None = None
        self._open = True

    @property
    def is_open(self) -> bool:
        """Whether the reply still accepts tokens (not finished or discarded)."""
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise ContextError("this reply is closed; begin a new one with begin_assistant()")

    def add_prompt(self, text: str, kind: LeafKind = "text") -> Leaf:
        """Add non-sampled text to the reply before sampling starts (a prefill).

        Raises:
            ContextError: Sampled tokens were already added, or the reply is closed.
        """
        self._check_open()
        if self._first is not None:
            raise ContextError("add_prompt() must come before the first sampled leaf")
        return self._s.append_segments(self.message, (Segment(kind, text),))[-1]

    def add_leaf(
        self,
        kind: LeafKind,
        ids: int | npt.ArrayLike,
        text: str | None = None,
        logprobs: float | npt.ArrayLike | None = None,
    ) -> Leaf:
        """Start a new sampled leaf with the given IDs (possibly none yet).

        Args:
            kind: The leaf kind (``"thinking"``, ``"text"``, ``"tool_call"``, ...).
            ids: The first token ID(s), exactly as streamed.
            text: Their text; ``None`` means "decode the leaf's IDs when asked".
            logprobs: One logprob per ID, or ``None``.

        Returns:
            The new leaf (the reply's last leaf from now on).

        Raises:
            ContextError: Bad kind, IDs or logprobs, or the reply is closed.
        """
        self._check_open()
        if kind not in LEAF_KINDS:
            raise ContextError(f"unknown leaf kind {kind!r}; expected one of {sorted(LEAF_KINDS)}")
        tape = self._s.tape
        start = tape.n
        if isinstance(ids, int) and (logprobs is None or isinstance(logprobs, float)):
            if ids < 0:
                raise ContextError(f"token IDs must be non-negative, got {ids}")
            tape.append_one(ids, logprobs)
            has_lp = logprobs is not None
        else:
            arr = _as_ids(ids)
            lp = _as_lp(logprobs, len(arr))
            tape.append(arr, True, lp)
            has_lp = lp is not None
        if self._first is None:
            self._first = start
        leaf = Leaf(tape, self._s.tok, kind, True, start, tape.n, text, has_lp)
        self.message._leaves.append(leaf)
        self._last = leaf
        return leaf

    def add_segment(self, segment: ReplySegment) -> Leaf:
        """Add a parser's closed segment as a leaf (its kind, IDs, text and logprobs).

        Raises:
            ContextError: As :meth:`add_leaf`.
        """
        return self.add_leaf(segment.kind, segment.ids, segment.text, segment.logprobs)

    def new_parser(
        self,
        *,
        tool_format: str | None = None,
        tools: ToolSpecs | None = None,
        match_text: bool = True,
    ) -> ResponseParser:
        """A response parser for this reply, set up from the context.

        Its tags, stop tokens and call decoder are the chat format's
        (:meth:`~tokstream.chat.ChatFormat.reply_format`). It starts in the
        state the prompt leaves the reply in: inside a thinking block when the
        generation prompt or a prefill (:meth:`add_prompt`) opened one and did
        not close it. Grow the reply from its events with :meth:`add_segment`.

        Args:
            tool_format: The tool-call convention, if the chat format has
                several (Qwen: ``"hermes"``, the default, or ``"qwen3_coder"``).
            tools: Tool definitions, as for :class:`~tokstream.ResponseParser`.
            match_text: As for :class:`~tokstream.ResponseParser`.

        Raises:
            ContextError: Sampled leaves were already added, or the reply is
                closed (a parser must see the reply from its first token).
            InvalidRequest: The chat format does not support ``tool_format``,
                or bad ``tools``.
        """
        self._check_open()
        if self._first is not None:
            raise ContextError("new_parser() must come before the first sampled leaf")
        s = self._s
        fmt = s.format.reply_format(tool_format)
        prompt = [leaf.ids for leaf in self.message.leaves]
        opened = False
        if prompt and fmt.has_thinking:
            probe = ResponseParser(s.tok, reply_format=fmt)
            probe.receive_ids(np.concatenate(prompt))
            while probe.next_event() is not NEED_TOKENS:
                pass
            opened = probe.state == "thinking"
        return ResponseParser(
            s.tok,
            reply_format=fmt,
            tools=tools,
            thinking="open" if opened else "auto",
            match_text=match_text,
        )

    def extend_leaf(
        self,
        ids: int | npt.ArrayLike,
        text: str | None = None,
        logprobs: float | npt.ArrayLike | None = None,
    ) -> Leaf:
        """Append sampled IDs to the last leaf (one ``int`` is the fast path).

        Args:
            ids: Token ID(s), exactly as streamed.
            text: Their text (e.g. an incremental detokenizer's delta), or
                ``None`` to derive it from IDs.
            logprobs: One logprob per ID (a ``float`` for a single ID), or ``None``.

        Returns:
            The extended leaf.

        Raises:
            ContextError: No sampled leaf yet, bad input, or the reply is closed.
        """
        leaf = self._last
        if leaf is None or not self._open:
            self._check_open()
            raise ContextError("extend_leaf() needs a sampled leaf; call add_leaf() first")
        tape = self._s.tape
        if isinstance(ids, int) and not isinstance(logprobs, (list, tuple, np.ndarray)):
            if ids < 0:
                raise ContextError(f"token IDs must be non-negative, got {ids}")
            if leaf._pieces is not None or text is not None:
                self._add_text(leaf, text, ids)
            tape.append_one(ids, logprobs)  # type: ignore[arg-type]
            if logprobs is not None:
                leaf._has_lp = True
            leaf._end += 1
            return leaf
        arr = _as_ids(ids)
        lp = _as_lp(logprobs, len(arr))
        if leaf._pieces is not None or text is not None:
            self._add_text(leaf, text, arr)
        tape.append(arr, True, lp)
        leaf._has_lp = leaf._has_lp or lp is not None
        leaf._end = tape.n
        return leaf

    def _add_text(self, leaf: Leaf, text: str | None, ids: int | npt.NDArray[np.int32]) -> None:
        if leaf._pieces is None:
            leaf._pieces = [leaf.text]
        if text is None:
            text = self._s.tok.decode([ids] if isinstance(ids, int) else ids)
        leaf._pieces.append(text)

    @property
    def sampled_ids(self) -> npt.NDArray[np.int32]:
        """The IDs sampled so far (int32, read-only view)."""
        tape = self._s.tape
        end = tape.n if self._open else self._end
        start = end if self._first is None else self._first
        return tape.view(tape.ids, start, end)

    def finish(self, streamed: Done | Error | npt.ArrayLike | None = None) -> Message:
        """Check the reply against the stream and close the turn.

        Args:
            streamed: The stream's ``Done`` (or ``Error``) event, or its token
                IDs. When given, the reply's sampled IDs must equal its
                ``token_ids`` exactly. ``None`` skips the check.

        Returns:
            The closed assistant message, with the format's closing framing
            (for Qwen: ``\\n`` after a sampled ``<|im_end|>``, else
            ``<|im_end|>\\n``).

        Raises:
            ContextError: The IDs differ (the message names the first
                difference), or the reply is already closed. On a mismatch the
                reply stays open, so it can be discarded.
        """
        self._check_open()
        sampled = self.sampled_ids
        if streamed is not None:
            want = _as_ids(streamed.token_ids if isinstance(streamed, Done | Error) else streamed)
            if not np.array_equal(sampled, want):
                k = min(len(sampled), len(want))
                diff = np.flatnonzero(sampled[:k] != want[:k])
                at = int(diff[0]) if diff.size else k
                raise ContextError(
                    f"reply IDs differ from the streamed IDs at position {at}: the reply "
                    f"has {len(sampled)} sampled IDs {sampled[at : at + 5].tolist()}..., the "
                    f"stream has {len(want)} {want[at : at + 5].tolist()}...; every streamed "
                    "ID must be added to a leaf exactly once, in order"
                )
        last = int(sampled[-1]) if len(sampled) else None
        s = self._s
        self._end = s.tape.n
        s.append_segments(self.message, s.format.close_reply(last).segments)
        self._open = False
        return self.message

    def discard(self) -> None:
        """Remove the open reply (its prompt framing included) from the context.

        The context is left as it was before :meth:`Context.begin_assistant`.
        """
        self._check_open()
        s = self._s
        if s.messages and s.messages[-1] is self.message:
            s.messages.pop()
        if self._held:
            leaves = s.messages[-1]._leaves
            del leaves[len(leaves) - len(self._held) :]
            s.close = self._held
        s.tape.n = self._begin
        self._open = False
