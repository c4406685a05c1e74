"""Reply formats: how one model family writes a reply, as a table the parser reads.

A :class:`ReplyFormat` is declarative. It lists, per parser state, the tags
that state recognises and the state each one leads to, the added tokens that
end the reply (stop tokens), and the call decoder that turns a tool call's
body into a name and arguments. :class:`~tokstream.ResponseParser` has one
token loop for every format, so a family is added with a table and, when its
calls are neither Hermes JSON nor Qwen3-Coder markup, a decoder: never with a
fork of the loop.

States are named by the segment kind they build: ``"text"`` (content),
``"thinking"`` and ``"tool_call"``. The rules a table follows (checked when it
is built):

* A tag that leads from ``"thinking"`` or ``"tool_call"`` to ``"text"`` is a
  *closing* tag: it ends its block, belongs to that block's segment, and (for
  a call) has the body parsed.
* A tag that leads to ``"thinking"`` or ``"tool_call"`` is an *opening* tag: it
  ends the open block (an open call it interrupts is ``UNTERMINATED``) and
  belongs to the new block's segment.
* Nothing leads from ``"text"`` to ``"text"``, and every tag that can be
  matched in text starts with the same character (the parser's hold-back
  trigger, ``<`` for every family seen so far).

The tables themselves are owned by the chat formats (``tokstream.chat``:
``QwenFormat.reply_format()``), which know their family; this package never
imports them. Formats that name a tool-call convention (``"hermes"``,
``"qwen3_coder"``) are registered under that name, which is what
``ResponseParser(tool_format=...)`` looks up.

Deliberately not here yet (issue 11 adds them when a family needs them):
states beyond these three (harmony's channel headers), and calls that end
without a closing tag (Llama 3 JSON, Mistral).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ..._exceptions import InvalidRequest
from ._events import ToolCallStatus
from ._tools import ToolSchemas

__all__ = [
    "CallDecoder",
    "DecodedCall",
    "ReplyFormat",
    "State",
    "get_reply_format",
    "register_reply_format",
    "registered_reply_formats",
]

State: TypeAlias = Literal["text", "thinking", "tool_call"]
"""A parser state, named by the kind of segment it builds."""

STATES: tuple[State, State, State] = ("text", "thinking", "tool_call")

DecodedCall: TypeAlias = tuple[str | None, dict[str, Any] | None, ToolCallStatus, str | None]
"""What a call decoder returns: ``(name, arguments, status, error)``."""

CallDecoder: TypeAlias = Callable[[str, ToolSchemas | None], DecodedCall]
"""Parses one complete call body (the text between the call's tags) once.

It gets the body and the tool schemas (``None`` when no tools were given), and
returns ``(name, arguments, status, error)``: ``arguments`` is ``None`` when the
body could not be parsed at all, and ``error`` explains any status but ``OK``.
It never raises for malformed model output."""


@dataclass(frozen=True, slots=True)
class ReplyFormat:
    """A model family's reply structure: tags per state, stop tokens, call decoder.

    Example (the Qwen / Hermes table, as ``tokstream.chat`` defines it)::

        ReplyFormat(
            name="hermes",
            tags=(
                # state       tag             leads to
                ("text",      "<think>",      "thinking"),
                ("text",      "<tool_call>",  "tool_call"),
                ("thinking",  "</think>",     "text"),
                ("thinking",  "<tool_call>",  "tool_call"),
                ("tool_call", "</tool_call>", "text"),
                ("tool_call", "<tool_call>",  "tool_call"),
            ),
            stop_tokens=("<|im_end|>", "<|endoftext|>"),
            decode_call=decode_hermes,
        )

    Attributes:
        name: A short identifier (``"hermes"``, ``"qwen3_coder"``, ``"llama3"``).
        tags: ``(state, tag text, next state)`` rows. A tag the tokenizer has as
            one added token is recognised by its ID; any tag is also recognised
            when spelled by ordinary tokens (unless the parser has
            ``match_text=False``). A tag anywhere its state has no row is text.
        stop_tokens: Added-token names that end the reply as a ``stop`` segment
            in any state (names the tokenizer lacks are skipped).
        decode_call: Turns a call body into name and arguments; required when a
            row leads to ``"tool_call"``.

    Raises:
        InvalidRequest: The table breaks a rule in the module docstring.
    """

    name: str
    tags: tuple[tuple[State, str, State], ...]
    stop_tokens: tuple[str, ...]
    decode_call: CallDecoder | None = None

    def __post_init__(self) -> None:
        firsts = set()
        for row in self.tags:
            if len(row) != 3 or row[0] not in STATES or row[2] not in STATES:
                raise InvalidRequest(
                    "tags", row, f"rows are (state, tag, next state), states one of {STATES}"
                )
            state, tag, to = row
            if not tag:
                raise InvalidRequest("tags", row, "a tag cannot be empty")
            if state == to == "text":
                raise InvalidRequest("tags", row, "no tag leads from text to text")
            firsts.add(tag[0])
        if len(firsts) > 1:
            raise InvalidRequest(
                "tags", sorted(firsts), "every tag must start with the same character"
            )
        if self.decode_call is None and any(to == "tool_call" for _, _, to in self.tags):
            raise InvalidRequest("decode_call", None, "a format with tool calls needs a decoder")

    @property
    def has_thinking(self) -> bool:
        """Whether a tag leads into a thinking block."""
        return any(to == "thinking" for _, _, to in self.tags)

    def closing_tag(self, state: State) -> str | None:
        """The tag that closes ``state``'s block (for messages), or ``None``."""
        return next((tag for s, tag, to in self.tags if s == state and to == "text"), None)


_REGISTERED: dict[str, ReplyFormat] = {}


def register_reply_format(fmt: ReplyFormat) -> None:
    """Make ``fmt`` available by name to ``ResponseParser(tool_format=fmt.name)``.

    ``tokstream.chat`` registers Qwen's ``"hermes"`` and ``"qwen3_coder"`` when it
    is imported (which ``import tokstream`` does). Registering a name again
    replaces the earlier format.
    """
    _REGISTERED[fmt.name] = fmt


def registered_reply_formats() -> tuple[str, ...]:
    """The names :func:`get_reply_format` knows, sorted."""
    return tuple(sorted(_REGISTERED))


def get_reply_format(name: str) -> ReplyFormat:
    """Return the registered format called ``name``.

    Raises:
        InvalidRequest: No format of that name is registered.
    """
    fmt = _REGISTERED.get(name)
    if fmt is None:
        raise InvalidRequest(
            "tool_format", name, f"registered reply formats are {list(registered_reply_formats())}"
        )
    return fmt
