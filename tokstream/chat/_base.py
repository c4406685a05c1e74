"""The chat-format protocol: how one model family frames messages as text segments.

A :class:`ChatFormat` turns one message at a time into a :class:`Rendering`: a
short list of :class:`Segment` (a leaf kind plus its exact text). The context
tree (``tokstream.context``) tokenizes a message's segments **once**, as one
string, and splits the IDs back into leaves where token boundaries allow, so
the IDs equal what the model's chat template gives when it renders the whole
conversation (for families whose messages start and end at special tokens).

A format never sees the whole conversation. Where a template is not
append-only (it rewrites earlier text when a later message arrives), the format
says so in its docstring. The only rewrite the protocol supports is dropping the
previous message's *closing framing* (e.g. Qwen closes a run of tool results
only after the last one): a message renders that framing as
:attr:`Rendering.close`, and a following message that continues it says so with
:attr:`Rendering.retract`. The context writes a ``close`` only once something
else follows, so it never takes back tokens it has handed out. Model output is
never rewritten.

A format also owns its family's reply structure: :meth:`ChatFormat.reply_format`
returns the :class:`~tokstream.core.parser.ReplyFormat` table (tags per state,
stop tokens, call decoder) that the response parser reads, both while a reply
streams and when :meth:`Context.append_reply` splits a finished one into leaves.
So a family's tags are written down once, next to its framing.

Adding a family means writing one small class with these methods (see
``_qwen.py``); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from ..core.parser import ReplyFormat

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["ChatFormat", "LeafKind", "Rendering", "Role", "Segment"]

LeafKind: TypeAlias = Literal[
    "framing", "system", "tools", "user", "tool", "thinking", "text", "tool_call", "stop"
]
"""What a leaf holds.

``framing`` is template markup (``<|im_start|>user\\n``, ``<|im_end|>\\n``);
``system``, ``tools`` (tool definitions), ``user`` and ``tool`` (a tool result)
are prompt text; ``thinking``, ``text`` and ``tool_call`` are assistant output,
tags included; ``stop`` is the end-of-turn token the model sampled.
"""

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

LEAF_KINDS: frozenset[str] = frozenset(
    ("framing", "system", "tools", "user", "tool", "thinking", "text", "tool_call", "stop")
)
ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of one message's text and the leaf kind it becomes."""

    kind: LeafKind
    text: str


@dataclass(frozen=True, slots=True)
class Rendering:
    """One message as segments.

    Attributes:
        segments: The message's text, in order.
        retract: The previous message's ``close`` to drop (only framing; the
            context checks it matches exactly).
        close: Closing framing after ``segments`` that the next message may
            retract. The context tokenizes it with the message but writes it
            only when a message that does not retract it, or the generation
            prompt, follows.
        split: Tokenize each segment on its own, as a reference that encodes
            the pieces of a message apart does (``llama_models`` encodes an
            assistant's content and each of its calls separately). By default
            a message is tokenized as one text, as a chat template renders it.
    """

    segments: tuple[Segment, ...]
    retract: tuple[Segment, ...] = ()
    close: tuple[Segment, ...] = ()
    split: bool = False


class ChatFormat(Protocol):
    """A chat-template family (ChatML/Qwen, Llama 3 headers, ...), bound to a tokenizer.

    Implementations are small, immutable and know nothing about the context
    tree beyond this protocol.
    """

    @property
    def name(self) -> str:
        """A short identifier stored in saved contexts, e.g. ``"qwen"``."""
        ...

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """End-of-turn IDs to send as ``stop_token_ids``."""
        ...

    def preamble(self) -> Rendering:
        """Render what precedes the first message (e.g. Llama 3's ``<|begin_of_text|>``)."""
        ...

    def system(self, content: str | None, tools: Sequence[Mapping[str, Any]] | None) -> Rendering:
        """Render the first system message, with tool definitions if given."""
        ...

    def message(
        self,
        role: Role,
        content: str,
        *,
        prev_role: Role | None,
        name: str | None = None,
        call_id: str | None = None,
    ) -> Rendering:
        """Render a user, tool-result or later system message.

        ``name`` is a tool result's tool name (harmony renders it; most
        families ignore it). ``call_id`` is the ID of the call it answers
        (``ToolCall.call_id``; Kimi K2 and Mistral up to v11 render it, and
        raise :class:`~tokstream.InvalidRequest` without it).
        """
        ...

    def assistant(
        self,
        content: str,
        *,
        reasoning: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        current_turn: bool,
        prev_role: Role | None = None,
    ) -> Rendering:
        """Render an assistant message given as text (history, not sampled).

        ``current_turn`` is true when a user query precedes it in the context
        (templates such as Qwen3's render reasoning only there); ``prev_role``
        is the role of the message before it (DeepSeek V3.1 opens an
        assistant turn only after a user message).
        """
        ...

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        """Render the assistant generation prompt (``thinking=False`` disables it).

        ``prev_role`` is the role of the last message (DeepSeek V3.1 writes no
        prompt after a tool result: the model goes on from it).

        If the rendering opens a block (e.g. a template that starts every reply
        inside ``<think>``), the reply's parser starts inside it: the context
        runs the parser over the prompt to find the state the reply starts in.
        """
        ...

    def close_reply(self, last_id: int | None) -> Rendering:
        """Render what follows a sampled reply whose last ID is ``last_id``."""
        ...

    def reply_format(self, tool_format: str | None = None) -> ReplyFormat:
        """The family's reply structure, for the response parser.

        Args:
            tool_format: A tool-call convention the family supports (Qwen:
                ``"hermes"``, ``"qwen3_coder"``), or ``None`` for its default.

        Raises:
            InvalidRequest: The family does not support ``tool_format``.
        """
        ...


class FormatFactory(Protocol):
    """Builds a :class:`ChatFormat` for a tokenizer (a format class's constructor)."""

    def __call__(self, tokenizer: Tokenizer) -> ChatFormat: ...
