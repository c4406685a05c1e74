"""Parse events: what :class:`~tokstream.ResponseParser` reports about a reply.

The parser turns a reply's token stream into these nouns, in stream order:

* :class:`ThinkingDelta` / :class:`TextDelta`: reasoning and content text, as soon
  as it is certain (text that could still become a tag is held back, never
  emitted and retracted);
* :class:`ReplySegment`: a segment closed: the exact token IDs (and their text
  and logprobs) of a thinking block, a run of content text, a tool call, or the
  stop token. Segments come in stream order and partition the reply's IDs; a
  context tree grows one leaf per segment;
* :class:`ToolCallOpened`: a tool call's opening tag arrived (the call is not
  parsed yet);
* :class:`ToolCall`: a call is complete (its closing tag arrived), or was cut off
  at the end of the reply, with a :class:`ToolCallStatus`; it follows the
  ``ReplySegment`` of its tokens;
* :class:`Reply`: the whole parsed reply, last.

:data:`NEED_TOKENS` is not an event: ``ResponseParser.next_event()`` returns it
when every token received so far is parsed (as h11's ``NEED_DATA``).

Data only: frozen, slotted dataclasses, no parsing and no I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from ..._exceptions import OutputError

__all__ = [
    "NEED_TOKENS",
    "NeedTokens",
    "ParseEvent",
    "Reply",
    "ReplySegment",
    "SegmentKind",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallOpened",
    "ToolCallStatus",
]

SegmentKind: TypeAlias = Literal["thinking", "text", "tool_call", "framing", "stop"]


def _same_array(a: npt.NDArray[Any] | None, b: npt.NDArray[Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


class ToolCallStatus(enum.StrEnum):
    """How well a tool call parsed. Anything but ``OK`` means malformed output.

    A malformed call is still reported, with its raw text; the caller decides
    whether to run it, answer with an error, or retry.
    """

    OK = "ok"
    """Closed, well-formed, and (when tools were given) a known tool."""
    UNTERMINATED = "unterminated"
    """No closing ``</tool_call>`` before the reply ended or the next call began."""
    INVALID_JSON = "invalid_json"
    """Hermes: the body is not valid JSON."""
    MALFORMED = "malformed"
    """The body parsed but is not a call: no name, non-object arguments, missing
    ``<function=...>`` or ``</function>``, or stray text around the markup."""
    UNKNOWN_TOOL = "unknown_tool"
    """The name is not among the tools given to the parser."""
    MISSING_PARAMETER_END = "missing_parameter_end"
    """Qwen3-Coder: a ``<parameter=...>`` has no structural ``</parameter>``."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """Qwen3-Coder: a value does not convert to the type its schema declares
    (the value is kept as the raw string)."""


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """New reasoning text (inside ``<think>...</think>``, tags excluded)."""

    text: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New content text (outside thinking and tool calls)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallOpened:
    """A tool call's opening tag (``<tool_call>``) arrived; its body follows.

    Not to be confused with ``tokstream.ToolStarted`` (the turn loop started a
    tool's function): a call opens, then closes as a :class:`ToolCall`, and only
    then can its tool start.

    Attributes:
        index: The call's position among this reply's calls (0, 1, ...).
        token_index: Index, in the reply's token IDs, of the token that
            completed the opening tag.
    """

    index: int
    token_index: int


@dataclass(frozen=True, slots=True, eq=False)
class ToolCall:
    """A complete tool call (or an unterminated one, at the end of the reply).

    Attributes:
        index: The call's position among this reply's calls (0, 1, ...).
        name: The function name, or ``None`` if it could not be read.
        arguments: The arguments as a parsed object (``{}`` if there were none,
            ``None`` if the body could not be parsed at all).
        status: :attr:`ToolCallStatus.OK`, or what is wrong with it.
        raw: The exact text between ``<tool_call>`` and ``</tool_call>`` (to the
            end of the reply if unterminated).
        ids: The token IDs of this call's segment, tags included (int32,
            read-only).
        error: A human-readable explanation when ``status`` is not ``OK``.
        start_token: Index, in the reply's token IDs, of the call's first token.
        end_token: Index one past the call's last token.
        call_id: The ID the model wrote for the call, where its format has one
            (Kimi K2's ``functions.NAME:IDX``, Mistral's ``[CALL_ID]`` or
            ``"id"``), else ``None``. Pass it back with the tool's result
            (``Context.add_tool(..., call_id=...)``) for families whose
            framing names the call a result answers.

    Calls that share one body (a pythonic list ``[f(a=1), g()]``) share its
    segment: the same ``ids``, ``start_token`` and ``end_token``; ``raw`` is
    each call's own text.
    """

    index: int
    name: str | None
    arguments: dict[str, Any] | None
    status: ToolCallStatus
    raw: str
    ids: npt.NDArray[np.int32]
    error: str | None = None
    start_token: int = 0
    end_token: int = 0
    call_id: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the call is well-formed (``status is ToolCallStatus.OK``)."""
        return self.status is ToolCallStatus.OK

    def raise_for_status(self) -> None:
        """Raise :class:`~tokstream.OutputError` unless the call is well-formed.

        Raises:
            OutputError: ``status`` is not ``OK``; the message names the call,
                the problem and the start of the raw text.
        """
        if self.status is not ToolCallStatus.OK:
            raw = self.raw if len(self.raw) <= 200 else self.raw[:197] + "..."
            raise OutputError(
                f"tool call #{self.index} ({self.name or 'unnamed'}) is {self.status.value}: "
                f"{self.error}; raw text {raw!r}. Check call.status before running it, or "
                "answer the model with the error so it can retry."
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToolCall):
            return NotImplemented
        return (
            self.index,
            self.name,
            self.arguments,
            self.status,
            self.raw,
            self.error,
            self.start_token,
            self.end_token,
            self.call_id,
        ) == (
            other.index,
            other.name,
            other.arguments,
            other.status,
            other.raw,
            other.error,
            other.start_token,
            other.end_token,
            other.call_id,
        ) and _same_array(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class ReplySegment:
    """One leaf of a reply: a run of tokens of one kind, with their exact IDs.

    The parser emits each segment as an event the moment it closes, in stream
    order; a context tree grows one leaf per segment
    (``ReplyBuilder.add_segment``). The segments of a reply, in order,
    partition its token IDs: concatenating their ``ids`` gives exactly the
    streamed IDs.

    Attributes:
        kind: ``"thinking"`` (a ``<think>`` block, tags included), ``"text"``
            (content), ``"tool_call"`` (``<tool_call>...</tool_call>``, tags
            included), ``"framing"`` (markup the model wrote around calls that
            is neither content nor a call, e.g. a tool-call section's
            ``<|tool_calls_section_end|>``) or ``"stop"`` (the end-of-turn
            token, e.g. ``<|im_end|>``).
        text: The text these IDs produced in the stream, tags included. The
            segments' texts join to the decode of the reply's IDs; a character
            whose UTF-8 bytes span two segments is in the later one, and bytes
            left incomplete at the end of the reply are U+FFFD.
        ids: The token IDs (int32, read-only).
        logprobs: Their sampled log-probabilities (float32, read-only), or
            ``None`` unless every token carried one.
        tool_call: The call's index in the reply, for ``"tool_call"`` segments.
    """

    kind: SegmentKind
    text: str
    ids: npt.NDArray[np.int32]
    logprobs: npt.NDArray[np.float32] | None = None
    tool_call: int | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplySegment):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.text == other.text
            and self.tool_call == other.tool_call
            and _same_array(self.ids, other.ids)
            and _same_array(self.logprobs, other.logprobs)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class Reply:
    """A whole parsed reply: the last event of ``ResponseParser.finish()``.

    Attributes:
        reasoning: All thinking text, tags excluded.
        content: All content text (outside thinking and tool calls), in order.
        tool_calls: Every call, in order, malformed ones included.
        segments: The reply's leaves, in order (see :class:`ReplySegment`).
        token_ids: Every token ID fed, in order (int32, read-only).
        thinking_unterminated: ``True`` if the reply ended inside a thinking
            block (its text is in ``reasoning``).
    """

    reasoning: str
    content: str
    tool_calls: tuple[ToolCall, ...]
    segments: tuple[ReplySegment, ...]
    token_ids: npt.NDArray[np.int32]
    thinking_unterminated: bool = False

    @property
    def ok(self) -> bool:
        """Whether every tool call is well-formed and thinking was closed."""
        return not self.thinking_unterminated and all(c.ok for c in self.tool_calls)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return (
            self.reasoning == other.reasoning
            and self.content == other.content
            and self.tool_calls == other.tool_calls
            and self.segments == other.segments
            and self.thinking_unterminated == other.thinking_unterminated
            and _same_array(self.token_ids, other.token_ids)
        )

    __hash__ = None  # type: ignore[assignment]


ParseEvent: TypeAlias = ThinkingDelta | TextDelta | ReplySegment | ToolCallOpened | ToolCall | Reply


class NeedTokens(enum.Enum):
    """The type of :data:`NEED_TOKENS` (an enum, so ``is`` checks narrow types)."""

    NEED_TOKENS = "NEED_TOKENS"

    def __repr__(self) -> str:
        return "NEED_TOKENS"


NEED_TOKENS: Final = NeedTokens.NEED_TOKENS
"""Returned by ``ResponseParser.next_event()`` when every received token is
parsed: receive more tokens, or end the reply. After the final :class:`Reply`
it is returned for good."""
