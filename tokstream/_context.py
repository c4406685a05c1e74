"""The context tree: a conversation kept as exact token IDs, leaf by leaf.

A :class:`Context` is a list of :class:`Message` nodes (one per chat message,
with its role); each message is a list of :class:`Leaf` objects (template
framing, system/user/tool text, tool definitions, thinking, assistant text, tool
calls, the sampled stop token). Every leaf holds its ``text``, its ``ids``
(int32) and, for sampled leaves, per-token ``logprobs``.

* The next prompt, :meth:`Context.prompt_ids`, is the concatenation of every
  leaf's IDs. Prompt messages are rendered by a :mod:`tokstream.chat` format and
  tokenized **once**, when added. Model output is stored as the exact IDs that
  streamed, never re-encoded, including the stop token the server returned.
* :meth:`Context.generation_mask` is true exactly on sampled IDs;
  :meth:`Context.logprobs` is aligned with it (NaN where unknown).
* Save and resume exactly with :meth:`Context.to_json` / :meth:`Context.from_json`.

Theory of operation: all IDs live in one growth buffer (three parallel numpy
arrays: ids, mask, logprobs, doubling capacity). A leaf is a ``[start, end)``
span of it, so appending costs O(new tokens) and :meth:`prompt_ids` is an O(1)
read-only view. Views handed out never change, so the buffer is append-only:
each :meth:`prompt_ids` is a prefix of every later one. Where a template is not
append-only at the tail (Qwen closes a run of tool results only after the last
one), the format marks the framing as a message's ``close``: it is tokenized
with the message but *held*, and written only when a message that does not
retract it, or the generation prompt, follows. Until then :meth:`prompt_ids`
ends before it (a prompt is only sent after :meth:`begin_assistant`). The one
exception is :meth:`ReplyBuilder.discard`, which takes back the open reply;
writing different values over positions already handed out then copies the
buffer once, so earlier views stay unchanged.

A reply is grown through a :class:`ReplyBuilder` handle from
:meth:`Context.begin_assistant`: the response parser adds a leaf per
thinking/text/tool-call run and extends it token by token, then
:meth:`ReplyBuilder.finish` checks that the reply's sampled IDs equal what streamed
and closes the turn with the format's framing (no duplicate ``<|im_end|>``).

This module does no I/O and never talks to a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _context_json as _json
from ._context_nodes import (
    ContextError,
    Leaf,
    Message,
    ReplyBuilder,
    _as_ids,
    _as_lp,
    _Held,
    _Tape,
)
from ._events import Done, Error
from .chat import chat_format as _detect_format
from .chat._base import LeafKind, Rendering, Role, Segment

if TYPE_CHECKING:
    from ._tokenizer import Tokenizer
    from .chat import ChatFormat

__all__ = ["Context", "ContextError", "Leaf", "Message", "ReplyBuilder"]


class Context:
    """A conversation as a tree of messages and leaves holding exact token IDs.

    Args:
        tokenizer: The model's tokenizer.
        chat_format: A :class:`~tokstream.chat.ChatFormat`, a registered format
            name, or ``None`` to detect it from the tokenizer.

    Example::

        ctx = Context(tok)
        ctx.add_system("You are terse.", tools=[...])
        ctx.add_user("Weather in Paris?")
        ctx.begin_assistant()
        ... stream ctx.prompt_ids(), get a Done event ...
        ctx.append_reply(done)      # exact IDs, then the turn's closing framing
    """

    __slots__ = ("_close", "_format", "_messages", "_reply", "_tape", "_tok")

    def __init__(self, tokenizer: Tokenizer, chat_format: ChatFormat | str | None = None) -> None:
        self._tok = tokenizer
        if chat_format is None or isinstance(chat_format, str):
            chat_format = _detect_format(tokenizer, chat_format)
        self._format: ChatFormat = chat_format
        self._tape = _Tape()
        self._messages: list[Message] = []
        self._reply: ReplyBuilder | None = None
        self._close: _Held = ()  # the last message's held closing framing

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer."""
        return self._tok

    @property
    def chat_format(self) -> ChatFormat:
        """The chat format."""
        return self._format

    @property
    def messages(self) -> tuple[Message, ...]:
        """The message nodes, in order."""
        return tuple(self._messages)

    @property
    def open_reply(self) -> ReplyBuilder | None:
        """The open reply, if :meth:`begin_assistant` was called and not finished."""
        return self._reply

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The format's end-of-turn IDs (send them as ``stop_token_ids``)."""
        return self._format.stop_token_ids

    def __len__(self) -> int:
        return self._tape.n

    def __repr__(self) -> str:
        return (
            f"Context({len(self._messages)} messages, {self._tape.n} tokens, {self._format.name})"
        )

    def prompt_ids(self) -> npt.NDArray[np.int32]:
        """The whole context as one int32 array (a read-only view; O(1)).

        The array never changes afterwards. After a tool result it ends at the
        result: the framing that closes a run of tool results is added by the
        next message or :meth:`begin_assistant`.
        """
        return self._tape.view(self._tape.ids, 0, self._tape.n)

    def generation_mask(self) -> npt.NDArray[np.bool_]:
        """A bool array aligned with :meth:`prompt_ids`, true exactly on sampled IDs."""
        return self._tape.view(self._tape.mask, 0, self._tape.n)

    def logprobs(self) -> npt.NDArray[np.float32]:
        """Float32 logprobs aligned with :meth:`prompt_ids`; NaN where not sampled or unknown."""
        return self._tape.view(self._tape.lp, 0, self._tape.n)

    def text(self) -> str:
        """The concatenation of every leaf's text."""
        return "".join(m.text for m in self._messages)

    def add_system(
        self, content: str | None = None, *, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> Message:
        """Add a system message; tool definitions (JSON-schema dicts) go in the first one.

        Raises:
            ContextError: Tools given after the first message, nothing to add,
                or a reply is open.
        """
        if self._messages:
            if tools:
                raise ContextError("tool definitions belong in the first system message")
            if content is None:
                raise ContextError("add_system() needs content")
            rendering = self._format.message("system", content, prev_role=None)
            return self._add("system", rendering, content=content)
        rendering = self._format.system(content, tools)
        if not rendering.segments:
            raise ContextError("add_system() needs content or tools")
        return self._add("system", rendering, content=content)

    def add_user(self, content: str) -> Message:
        """Add a user message."""
        rendering = self._format.message("user", content, prev_role=self._prev())
        return self._add("user", rendering, content=content)

    def add_tool(self, content: str, *, name: str | None = None) -> Message:
        """Add a tool result (``name`` is kept on the node for reference).

        Consecutive results share one turn where the format says so (Qwen):
        the turn's closing framing is held until something else follows, so
        adding results never rewrites IDs already handed out.
        """
        rendering = self._format.message("tool", content, prev_role=self._prev())
        return self._add("tool", rendering, name=name, content=content)

    def add_assistant(
        self,
        content: str = "",
        *,
        reasoning: str | None = None,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
    ) -> Message:
        """Add an assistant message given as text (history or few-shot; not sampled).

        Its IDs are the format's rendering, encoded; they count as prompt, not
        generation. Use :meth:`begin_assistant` / :meth:`append_reply` for
        model output.
        """
        rendering = self._format.assistant(
            content, reasoning=reasoning, tool_calls=tool_calls, current_turn=self._after_query()
        )
        return self._add("assistant", rendering, content=content)

    def begin_assistant(self, *, thinking: bool | None = None) -> ReplyBuilder:
        """Add the generation prompt and return the handle that grows the reply.

        Send :meth:`prompt_ids` after this call. ``thinking=False`` uses the
        format's thinking-off prompt (Qwen3: an empty think block).

        Raises:
            ContextError: A reply is already open.
        """
        self._check_no_reply()
        segments = self._format.generation_prompt(thinking=thinking).segments
        held, begin = self._close, self._tape.n
        self._write_close()
        message = Message("assistant", self._tape)
        self._append_segments(message, self._preamble() + segments)
        self._messages.append(message)
        self._reply = ReplyBuilder(self, message, begin, held)
        return self._reply

    def append_reply(
        self,
        streamed: Done | Error | npt.ArrayLike,
        *,
        logprobs: npt.ArrayLike | None = None,
        thinking: bool | None = None,
    ) -> Message:
        """Append a whole reply from a finished stream, verbatim, and close the turn.

        The IDs (including the stop token the server returned) are split into
        thinking / text / tool-call / stop leaves at the format's tag IDs; no ID
        is re-encoded. Uses the open reply, or begins one with ``thinking``.

        Args:
            streamed: A ``Done`` or ``Error`` event, or the IDs.
            logprobs: Per-ID logprobs (default: the event's, if any).
            thinking: For a reply begun here, as in :meth:`begin_assistant`.

        Returns:
            The closed assistant message.

        Raises:
            ContextError: The open reply already has sampled leaves, or bad input.
        """
        reply = self._reply or self.begin_assistant(thinking=thinking)
        if reply._first is not None:
            raise ContextError("the open reply already has sampled leaves; use reply.finish()")
        if isinstance(streamed, Done | Error):
            ids = _as_ids(streamed.token_ids)
            if logprobs is None and isinstance(streamed, Done):
                logprobs = streamed.logprobs
        else:
            ids = _as_ids(streamed)
        lp = _as_lp(logprobs, len(ids))
        for kind, start, end in self._format.split_reply(ids):
            reply.add_leaf(kind, ids[start:end], None, None if lp is None else lp[start:end])
        return reply.finish(ids)

    def _after_query(self) -> bool:
        """Whether a user query (not a wrapped tool response) is among the messages."""
        for m in self._messages:
            c = m.content
            if m.role == "user" and not (
                c is not None and c.startswith("<tool_response>") and c.endswith("</tool_response>")
            ):
                return True
        return False

    def _preamble(self) -> tuple[Segment, ...]:
        return () if self._messages else self._format.preamble().segments

    def _prev(self) -> Role | None:
        return self._messages[-1].role if self._messages else None

    def _check_no_reply(self) -> None:
        if self._reply is not None:
            raise ContextError(
                "an assistant reply is open; finish() or discard() it before adding messages"
            )

    def _add(
        self,
        role: Role,
        rendering: Rendering,
        *,
        name: str | None = None,
        content: str | None = None,
    ) -> Message:
        self._check_no_reply()
        if rendering.retract:
            self._retract(rendering.retract)
        else:
            self._write_close()
        message = Message(role, self._tape, name, content)
        body = [s for s in self._preamble() + rendering.segments if s.text]
        close = [s for s in rendering.close if s.text]
        held: list[tuple[LeafKind, str, npt.NDArray[np.int32]]] = []
        for first_seg, kind, text, ids in self._encode(body + close):
            if first_seg < len(body):
                self._write(message, kind, text, ids)
            else:  # a clean boundary before the close: hold it back
                held.append((kind, text, ids))
        self._close = tuple(held)
        self._messages.append(message)
        return message

    def _write_close(self) -> None:
        """Write the held closing framing of the last message."""
        if self._close:
            message = self._messages[-1]
            for kind, text, ids in self._close:
                self._write(message, kind, text, ids)
            self._close = ()

    def _retract(self, segments: tuple[Segment, ...]) -> None:
        """Drop the last message's closing framing (held, or written: then copy-on-write)."""
        held = "".join(text for _, text, _ in self._close)
        want = "".join(s.text for s in segments)
        if held and held == want and all(s.kind == "framing" for s in segments):
            self._close = ()
            return
        # Written already (a close that shares a token with its message, or a
        # context saved without held framing): take it back from the buffer.
        self._write_close()
        leaves = self._messages[-1]._leaves if self._messages else []
        tail = leaves[len(leaves) - len(segments) :]
        if len(tail) != len(segments) or any(
            leaf.sampled or leaf.kind != "framing" or leaf.text != seg.text
            for leaf, seg in zip(tail, segments, strict=True)
        ):
            raise ContextError(
                f"cannot retract {segments!r}: the previous message does not end with that framing"
            )
        self._tape.n = tail[0]._start
        del leaves[len(leaves) - len(segments) :]

    def _append_segments(self, message: Message, segments: Sequence[Segment]) -> list[Leaf]:
        """Tokenize the segments once and write them to ``message`` as leaves."""
        groups = self._encode([s for s in segments if s.text])
        return [self._write(message, kind, text, ids) for _, kind, text, ids in groups]

    def _write(
        self, message: Message, kind: LeafKind, text: str, ids: npt.NDArray[np.int32]
    ) -> Leaf:
        tape = self._tape
        start = tape.n
        tape.append(ids, False, None)
        leaf = Leaf(tape, self._tok, kind, False, start, tape.n, text, False)
        message._leaves.append(leaf)
        return leaf

    def _encode(
        self, segs: Sequence[Segment]
    ) -> list[tuple[int, LeafKind, str, npt.NDArray[np.int32]]]:
        """Encode the segments as one string and split the IDs back at clean boundaries.

        A boundary is clean when no token spans it; otherwise the two segments
        share one leaf (kind: the first non-framing one). Returns ``(index of
        the leaf's first segment, kind, text, ids)`` per leaf.
        """
        if not segs:
            return []
        full = "".join(s.text for s in segs)
        ids, offsets = self._tok.encode_with_offsets(full)
        out: list[tuple[int, LeafKind, str, npt.NDArray[np.int32]]] = []
        i = first = pos = max_end = first_seg = 0
        kind: LeafKind | None = None
        texts: list[str] = []
        for j, seg in enumerate(segs):
            pos += len(seg.text)
            texts.append(seg.text)
            if kind is None or kind == "framing":
                kind = seg.kind
            while i < len(ids) and offsets[i][0] < pos:
                max_end = max(max_end, offsets[i][1])
                i += 1
            if (max_end <= pos or j == len(segs) - 1) and i > first:
                out.append((first_seg, kind, "".join(texts), ids[first:i]))
                first, kind, texts, first_seg = i, None, [], j + 1
        if first < len(ids):
            raise AssertionError("segment split lost IDs")  # pragma: no cover
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole tree (see :meth:`from_dict`).

        Raises:
            ContextError: A reply is open (finish or discard it first).
        """
        self._check_no_reply()
        return _json.dump(self._messages, self._close, self._format.name)

    def to_json(self) -> str:
        """Serialise to JSON; :meth:`from_json` restores it exactly."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(
        cls, data: str | bytes, tokenizer: Tokenizer, chat_format: ChatFormat | str | None = None
    ) -> Context:
        """Restore a context saved with :meth:`to_json` (IDs are not re-encoded).

        Raises:
            ContextError: The JSON is not a saved context, or its chat format
                differs from ``chat_format``.
        """
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ContextError(f"not a saved context: invalid JSON ({exc})") from exc
        return cls.from_dict(obj, tokenizer, chat_format)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        tokenizer: Tokenizer,
        chat_format: ChatFormat | str | None = None,
    ) -> Context:
        """Restore a context from :meth:`to_dict` output.

        Raises:
            ContextError: The data is malformed or its chat format differs.
        """
        name = _json.format_name(data)
        ctx = cls(tokenizer, name if chat_format is None else chat_format)
        if ctx._format.name != name:
            raise ContextError(
                f"saved with chat format {name!r} but loading with {ctx._format.name!r}"
            )
        messages, close = _json.load(data, ctx._tape, tokenizer)
        if close and not messages:
            raise ContextError("not a saved context: closing framing without a message")
        ctx._messages.extend(messages)
        ctx._close = close
        return ctx
