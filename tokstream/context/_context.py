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
* A reply whose sampled stop token is the next message's opening framing
  (GLM ends a turn with ``<|observation|>`` or ``<|user|>``) is not followed by
  that framing a second time: the next message starts after it.

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
:meth:`Context.begin_assistant`: each segment the response parser closes
(thinking, text, a tool call, the stop token) becomes a leaf, then
:meth:`ReplyBuilder.finish` checks that the reply's sampled IDs equal what streamed
and closes the turn with the format's framing (no duplicate ``<|im_end|>``).
:meth:`Context.append_reply` does the same for a finished reply, with the same
parser (in ID-only mode), so a reply appended whole has the leaves it would have
had if it had streamed.

This module does no I/O and never talks to a server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .._events import Done, Error
from .._exceptions import ContextError
from ..chat import chat_format as _detect_format
from ..chat._base import Rendering, Role
from ..core._request import check_session_id
from ..core.parser import ReplySegment
from . import _json
from ._nodes import Message
from ._reply import ReplyBuilder
from ._state import _State
from ._tape import _as_ids, _as_lp

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer
    from ..chat import ChatFormat

__all__ = ["Context"]


class Context:
    """A conversation as a tree of messages and leaves holding exact token IDs.

    Args:
        tokenizer: The model's tokenizer.
        chat_format: A :class:`~tokstream.chat.ChatFormat`, a registered format
            name, or ``None`` to detect it from the tokenizer.
        session_id: This conversation's router key (see :attr:`session_id`);
            a fresh random one when ``None``.

    Raises:
        InvalidRequest: ``chat_format`` names no registered format, or none
            matches the tokenizer, or ``session_id`` is not a valid key.

    Example::

        ctx = Context(tok)
        ctx.add_system("You are terse.", tools=[...])
        ctx.add_user("Weather in Paris?")
        ctx.begin_assistant()
        ... stream ctx.prompt_ids(), get a Done event ...
        ctx.append_reply(done)      # exact IDs, then the turn's closing framing
    """

    __slots__ = ("_reply", "_s", "_session_id")

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_format: ChatFormat | str | None = None,
        *,
        session_id: str | None = None,
    ) -> None:
        if chat_format is None or isinstance(chat_format, str):
            chat_format = _detect_format(tokenizer, chat_format)
        self._session_id = uuid.uuid4().hex if session_id is None else check_session_id(session_id)
        self._s = _State(tokenizer, chat_format)
        self._reply: ReplyBuilder | None = None

    @property
    def session_id(self) -> str:
        """This conversation's session key, sent with every turn's request.

        ``run_turn``/``run_agent`` send it as the request's ``session_id``
        (the ``X-Session-ID`` header), so vllm-router's ``consistent_hash``
        policy keeps every turn on the replica whose prefix cache holds the
        conversation. Saved by :meth:`to_dict` and restored by
        :meth:`from_dict`.
        """
        return self._session_id

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer."""
        return self._s.tok

    @property
    def chat_format(self) -> ChatFormat:
        """The chat format."""
        return self._s.format

    @property
    def messages(self) -> tuple[Message, ...]:
        """The message nodes, in order."""
        return tuple(self._s.messages)

    @property
    def current_reply(self) -> ReplyBuilder | None:
        """The open reply, if :meth:`begin_assistant` was called and not finished."""
        reply = self._reply
        return reply if reply is not None and reply.is_open else None

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The format's end-of-turn IDs (send them as ``stop_token_ids``)."""
        return self._s.format.stop_token_ids

    def __len__(self) -> int:
        return self._s.tape.n

    def __repr__(self) -> str:
        s = self._s
        return f"Context({len(s.messages)} messages, {s.tape.n} tokens, {s.format.name})"

    def prompt_ids(self) -> npt.NDArray[np.int32]:
        """The whole context as one int32 array (a read-only view; O(1)).

        The array never changes afterwards. After a tool result it ends at the
        result: the framing that closes a run of tool results is added by the
        next message or :meth:`begin_assistant`.
        """
        return self._s.tape.view(self._s.tape.ids, 0, self._s.tape.n)

    def generation_mask(self) -> npt.NDArray[np.bool_]:
        """A bool array aligned with :meth:`prompt_ids`, true exactly on sampled IDs."""
        return self._s.tape.view(self._s.tape.mask, 0, self._s.tape.n)

    def logprobs(self) -> npt.NDArray[np.float32]:
        """Float32 logprobs aligned with :meth:`prompt_ids`; NaN where not sampled or unknown."""
        return self._s.tape.view(self._s.tape.lp, 0, self._s.tape.n)

    def text(self) -> str:
        """The concatenation of every leaf's text."""
        return "".join(m.text for m in self._s.messages)

    def add_system(
        self, content: str | None = None, *, tools: Sequence[Mapping[str, Any]] | None = None
    ) -> Message:
        """Add a system message; tool definitions (JSON-schema dicts) go in the first one.

        Raises:
            ContextError: Tools given after the first message, nothing to add,
                or a reply is open.
        """
        if self._s.messages:
            if tools:
                raise ContextError("tool definitions belong in the first system message")
            if content is None:
                raise ContextError("add_system() needs content")
            rendering = self._s.format.message("system", content, prev_role=None)
            return self._add("system", rendering, content=content)
        rendering = self._s.format.system(content, tools)
        if not rendering.segments:
            raise ContextError("add_system() needs content or tools")
        return self._add("system", rendering, content=content)

    def add_user(self, content: str) -> Message:
        """Add a user message."""
        rendering = self._s.format.message("user", content, prev_role=self._s.prev())
        return self._add("user", rendering, content=content)

    def add_tool(
        self, content: str, *, name: str | None = None, call_id: str | None = None
    ) -> Message:
        """Add a tool result.

        ``name``, the tool's name, is kept on the node (harmony renders it);
        ``call_id`` is the answered call's ``ToolCall.call_id`` (Kimi K2 and
        Mistral up to v11 render it and need it).

        Consecutive results share one turn where the format says so (Qwen):
        the turn's closing framing is held until something else follows, so
        adding results never rewrites IDs already handed out.

        Raises:
            InvalidRequest: The format needs ``call_id`` (or ``name``) and it
                is missing.
        """
        rendering = self._s.format.message(
            "tool", content, prev_role=self._s.prev(), name=name, call_id=call_id
        )
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
        rendering = self._s.format.assistant(
            content,
            reasoning=reasoning,
            tool_calls=tool_calls,
            current_turn=self._after_query(),
            prev_role=self._s.prev(),
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
        prompt = self._s.format.generation_prompt(thinking=thinking, prev_role=self._s.prev())
        segments = prompt.segments
        held, begin = self._s.close, self._s.tape.n
        self._s.write_close()
        message = Message("assistant", self._s.tape)
        self._s.append_segments(message, self._s.preamble() + segments)
        self._s.messages.append(message)
        self._reply = ReplyBuilder(self._s, message, begin, held)
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
        thinking / text / tool-call / stop leaves by the response parser in
        ID-only mode (``match_text=False``), with the chat format's reply table,
        started in the state the prompt left it (:meth:`ReplyBuilder.new_parser`):
        the leaves a streamed reply gets. No ID is re-encoded. Uses the open
        reply, or begins one with ``thinking``.

        Args:
            streamed: A ``Done`` or ``Error`` event, or the IDs.
            logprobs: Per-ID logprobs (default: the event's, if any).
            thinking: For a reply begun here, as in :meth:`begin_assistant`.

        Returns:
            The closed assistant message.

        Raises:
            ContextError: The open reply already has sampled leaves, or bad input.
        """
        reply = self.current_reply or self.begin_assistant(thinking=thinking)
        if reply._first is not None:
            raise ContextError("the open reply already has sampled leaves; use reply.finish()")
        if isinstance(streamed, Done | Error):
            ids = _as_ids(streamed.token_ids)
            if logprobs is None and isinstance(streamed, Done):
                logprobs = streamed.logprobs
        else:
            ids = _as_ids(streamed)
        lp = _as_lp(logprobs, len(ids))
        parser = reply.new_parser(match_text=False)
        for ev in parser.feed_ids(ids, lp) + parser.finish():
            if isinstance(ev, ReplySegment):
                reply.add_segment(ev)
        return reply.finish(ids)

    def _after_query(self) -> bool:
        """Whether a user query (not a wrapped tool response) is among the messages."""
        for m in self._s.messages:
            c = m.content
            if m.role == "user" and not (
                c is not None and c.startswith("<tool_response>") and c.endswith("</tool_response>")
            ):
                return True
        return False

    def _add(
        self,
        role: Role,
        rendering: Rendering,
        *,
        name: str | None = None,
        content: str | None = None,
    ) -> Message:
        self._check_no_reply()
        return self._s.add(role, rendering, name=name, content=content)

    def _check_no_reply(self) -> None:
        if self._reply is not None and self._reply.is_open:
            raise ContextError(
                "an assistant reply is open; finish() or discard() it before adding messages"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole tree (see :meth:`from_dict`).

        Raises:
            ContextError: A reply is open (finish or discard it first).
        """
        self._check_no_reply()
        data = _json.dump(self._s.messages, self._s.close, self._s.format.name)
        data["session_id"] = self._session_id
        return data

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
        session_id = data.get("session_id")
        if session_id is not None and not isinstance(session_id, str):
            raise ContextError(f"bad session_id {session_id!r}: a str expected")
        ctx = cls(tokenizer, name if chat_format is None else chat_format, session_id=session_id)
        if ctx._s.format.name != name:
            raise ContextError(
                f"saved with chat format {name!r} but loading with {ctx._s.format.name!r}"
            )
        messages, close = _json.load(data, ctx._s.tape, tokenizer)
        if close and not messages:
            raise ContextError("not a saved context: closing framing without a message")
        ctx._s.messages.extend(messages)
        ctx._s.close = close
        return ctx
