"""Reply formats: how one model family writes a reply, as a table the parser reads.

A :class:`ReplyFormat` is declarative. It lists, per parser state, the tags
that state recognises and the state each one leads to, the added tokens that
end the reply (stop tokens), and the call decoder that turns a tool call's
body into a name and arguments. :class:`~tokstream.ResponseParser` has one
token loop for every format, so a family is added with a table and, when its
calls are neither Hermes JSON nor Qwen3-Coder markup, a decoder: never with a
fork of the loop.

States are named by what they build: ``"text"`` (content), ``"thinking"``,
``"tool_call"`` (one call), ``"calls"`` (a tool-call *section* between its
calls: DeepSeek's ``<｜tool▁calls▁begin｜>``, Kimi's
``<|tool_calls_section_begin|>``, MiniMax's ``<minimax:tool_call>``) and
``"header"`` (a message header whose meaning is known only when it ends:
harmony's ``<|start|>assistant<|channel|>analysis<|message|>``). Their
segments are ``text``, ``thinking``, ``tool_call``, ``framing`` (section
markup) and, for a header, the kind of the block it opens. The rules a table
follows (checked when it is built):

* A *closing* tag leads out of a block to the state that contains it:
  ``thinking``/``tool_call``/``calls`` to ``text``, or ``tool_call`` to
  ``calls``. It belongs to the block it closes and (for a call) has the body
  decoded.
* An *opening* tag leads into ``thinking``, ``tool_call``, ``calls`` or
  ``header`` from another state. It ends the open block (an open call it
  interrupts is ``UNTERMINATED``) and belongs to the new block's segment.
  ``tool_call`` to ``tool_call`` is opening too: it cuts the open call.
* An *absorbed* tag leads from ``text``, ``thinking`` or ``calls`` to itself:
  markup that changes nothing (a redundant ``<think>`` inside a thinking
  block the prompt opened; harmony's ``<|end|>`` after a final message). It
  stays in the open segment and is not text.
* A tag out of ``header`` leads to :data:`ROUTED`: the format's
  ``route_header`` reads the header's text (tags included) and picks the
  state, and a call's name when the header names it. The header's tokens
  become the start of that block's segment.
* Within one state, every tag that can be matched in text starts with the
  same character: that state's hold-back trigger (``<`` for most families,
  ``[`` for Mistral's).

Calls whose body is JSON (``call_body="json"``) treat any tag inside an open
JSON string as text of the body: ``{"code": "</tool_call>"}`` does not close
the call. Markup bodies (Qwen3-Coder, GLM, MiniMax, DSML) take their call's
closing tag as structure wherever it is; their decoders decide which
parameter-level end tags are structure (see each decoder).

The tables themselves are owned by the chat formats (``tokstream.chat``:
``QwenFormat.reply_format()``), which know their family; this package never
imports them. Formats that name a tool-call convention (``"hermes"``,
``"qwen3_coder"``, ``"deepseek_v31"``, ...) are registered under that name,
which is what ``ResponseParser(tool_format=...)`` looks up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias

from ..._exceptions import InvalidRequest
from ._events import ToolCallStatus
from ._tools import ToolSchemas

__all__ = [
    "FAMILY_REPLY_FORMATS",
    "FAMILY_REPLY_VARIANTS",
    "ROUTED",
    "CallDecoder",
    "CallListDecoder",
    "DecodedCall",
    "HeaderRouter",
    "ReplyFormat",
    "State",
    "family_reply_format",
    "get_reply_format",
    "register_reply_format",
    "registered_reply_formats",
]

State: TypeAlias = Literal["text", "thinking", "tool_call", "calls", "header", "routed"]
"""A parser state, named by what it builds (``"routed"``: see :data:`ROUTED`)."""

STATES: tuple[State, ...] = ("text", "thinking", "tool_call", "calls", "header")
"""The real states, in state-code order."""

ROUTED: State = "routed"
"""The next state of a tag that ends a ``"header"``: ``route_header`` decides."""

_BLOCKS = ("thinking", "tool_call", "calls")


class DecodedCall(NamedTuple):
    """What a call decoder returns for one call.

    A decoder may also return a plain ``(name, arguments, status, error)``
    tuple: the parser reads ``call_id`` and ``raw`` only when they are there.

    Attributes:
        name: The function name, or ``None`` when it could not be read.
        arguments: The arguments, or ``None`` when the body could not be parsed.
        status: ``OK`` or what is wrong with the call.
        error: Why, for any status but ``OK``.
        call_id: The ID the model wrote for the call (Kimi's
            ``functions.NAME:IDX``, Mistral's ``[CALL_ID]`` or ``"id"``), else
            ``None``.
        raw: For a body that holds several calls: this call's own text.
            ``None``: the call's text is the whole body.
    """

    name: str | None
    arguments: dict[str, Any] | None
    status: ToolCallStatus
    error: str | None
    call_id: str | None = None
    raw: str | None = None


CallDecoder: TypeAlias = Callable[[str, ToolSchemas | None], DecodedCall]
"""Parses one complete call body (the text between the call's tags) once.

It gets the body and the tool schemas (``None`` when no tools were given), and
returns a :class:`DecodedCall` (``arguments`` is ``None`` when the body could not
be parsed at all, and ``error`` explains any status but ``OK``). It never
raises for malformed model output."""

CallListDecoder: TypeAlias = Callable[[str, ToolSchemas | None], Sequence[DecodedCall]]
"""Parses a body that holds several calls (a pythonic list ``[f(a=1), g()]``)
once, when the body closes: one :class:`DecodedCall` per call, each with its
own ``raw`` text. An empty result is reported as one ``MALFORMED`` call. It
never raises for malformed model output."""

HeaderRouter: TypeAlias = Callable[
    [str], tuple[State, str | None] | tuple[State, str | None, str | None]
]
"""Reads a header's text (tags included) and returns the state its message
goes to (``"text"``, ``"thinking"`` or ``"tool_call"``), for a call the name
the header gives it (``None``: the decoder reads the name) and, optionally,
the call ID the header gives it. It is also called on a header cut off by the
end of the reply. It never raises."""


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
                ("thinking",  "<think>",      "thinking"),   # absorbed
                ("thinking",  "</think>",     "text"),
                ("thinking",  "<tool_call>",  "tool_call"),
                ("tool_call", "</tool_call>", "text"),
                ("tool_call", "<tool_call>",  "tool_call"),
            ),
            stop_tokens=("<|im_end|>", "<|endoftext|>"),
            decode_call=decode_hermes,
            call_body="json",
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
            row leads to ``"tool_call"`` or a header can route to one (unless
            ``decode_calls`` is given).
        decode_calls: Instead of ``decode_call``, for a format whose call body
            holds several calls (:data:`CallListDecoder`): they are handed
            out together, in order, when the body closes, each with the
            body's segment (IDs and token range).
        call_body: ``"json"`` when a call's body is JSON (a tag inside an open
            JSON string is then text), ``"markup"`` otherwise.
        route_header: Required when a row leads to ``"header"``
            (:data:`HeaderRouter`).
        call_end: ``"tag"``: a call ends at a closing tag. ``"json"``: a call
            ends where its JSON value balances (Llama 3.1: no closing tag);
            the token holding the closing bracket belongs to the call, and the
            reply goes on in ``"calls"`` if the table has that state, else in
            ``"text"``. No row may lead out of ``"tool_call"`` then.
            ``"python"``: the same, with Python string literals (``'...'`` as
            well as ``"..."``): a pythonic call list.
        body_tags: Opening tags that are also the start of the call's body
            (Llama's ``{``): the tag's text is the body's first text.
        initial: The state a reply starts in when the prompt opened no
            thinking block: ``"text"``, or ``"calls"`` for a family whose
            calls may only open a reply (Llama 3.1).
        calls_separators: With ``call_end="json"``: characters allowed between
            calls in ``"calls"`` besides whitespace (Llama: ``;``). Any other
            text there leaves the section: it is content, in ``"text"``.

    Raises:
        InvalidRequest: The table breaks a rule in the module docstring.
    """

    name: str
    tags: tuple[tuple[State, str, State], ...]
    stop_tokens: tuple[str, ...]
    decode_call: CallDecoder | None = None
    call_body: Literal["json", "markup"] = "markup"
    route_header: HeaderRouter | None = None
    call_end: Literal["tag", "json", "python"] = "tag"
    body_tags: frozenset[str] = frozenset()
    initial: State = "text"
    calls_separators: str = ""
    decode_calls: CallListDecoder | None = None

    def __post_init__(self) -> None:
        firsts: dict[str, set[str]] = {}
        for row in self.tags:
            if (
                len(row) != 3
                or row[0] not in STATES
                or row[2] not in (*STATES, ROUTED)
                or (row[0] == "header") != (row[2] == ROUTED)
            ):
                raise InvalidRequest(
                    "tags",
                    row,
                    f"rows are (state, tag, next state), states one of {STATES}; "
                    f"a tag leads out of 'header' exactly when it leads to {ROUTED!r}",
                )
            state, tag, to = row
            if not tag:
                raise InvalidRequest("tags", row, "a tag cannot be empty")
            if to == "header" and state == "header":
                raise InvalidRequest("tags", row, "a header cannot open a header")
            firsts.setdefault(state, set()).add(tag[0])
        for where, chars in firsts.items():
            # A section of JSON-ended calls scans every character (no trigger).
            if len(chars) > 1 and not (where == "calls" and self.call_end != "tag"):
                raise InvalidRequest(
                    "tags",
                    sorted(chars),
                    f"every tag of state {where!r} must start with the same character",
                )
        if self.call_end not in ("tag", "json", "python"):
            raise InvalidRequest("call_end", self.call_end, "use 'tag', 'json' or 'python'")
        if self.call_end != "tag" and any(row[0] == "tool_call" for row in self.tags):
            raise InvalidRequest("tags", "tool_call", "a call ending by balance has no closing tag")
        if self.initial not in ("text", "calls"):
            raise InvalidRequest("initial", self.initial, "a reply starts in 'text' or 'calls'")
        if self.call_body not in ("json", "markup"):
            raise InvalidRequest("call_body", self.call_body, "use 'json' or 'markup'")
        targets = {to for _, _, to in self.tags}
        if self.decode_call is not None and self.decode_calls is not None:
            raise InvalidRequest("decode_calls", None, "give decode_call or decode_calls")
        if (self.decode_call or self.decode_calls) is None and (
            "tool_call" in targets or "header" in targets
        ):
            raise InvalidRequest("decode_call", None, "a format with tool calls needs a decoder")
        if self.route_header is None and "header" in targets:
            raise InvalidRequest("route_header", None, "a format with headers needs a router")

    @property
    def has_thinking(self) -> bool:
        """Whether a tag (or a header) can lead into a thinking block."""
        return any(to in ("thinking", "header") for _, _, to in self.tags)

    def closing_tag(self, state: State) -> str | None:
        """The tag that closes ``state``'s block (for messages), or ``None``."""
        outer = ("text", "calls") if state == "tool_call" else ("text",)
        return next((tag for s, tag, to in self.tags if s == state and to in outer), None)


FAMILY_REPLY_FORMATS: dict[str, str] = {
    "qwen": "hermes",
    "deepseek-v3.1": "deepseek_v31",
    "deepseek-v3.2": "deepseek_v32",
    "gpt-oss": "harmony",
    "kimi-k2": "kimi_k2",
    "glm-4.5": "glm45",
    "minimax-m2": "minimax_m2",
    "llama3": "llama3_json",
    "llama4": "llama4_pythonic",
    "mistral": "mistral",
}
"""The registered reply format of each tokenizer family (``Tokenizer.family``):
what :class:`~tokstream.ResponseParser` uses when given neither a format nor a
name (see :data:`FAMILY_REPLY_VARIANTS`). Families not listed default to
``"hermes"``."""

FAMILY_REPLY_VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "mistral": (("[ARGS]", "mistral_v11"),),
}
"""Per family, ``(added token, format)`` pairs tried in order before
:data:`FAMILY_REPLY_FORMATS`: a tokenizer that has the token writes its calls
in that format (a Tekken v11+ tokenizer has ``[ARGS]``)."""


def family_reply_format(family: str | None, added_tokens: dict[str, int]) -> str:
    """The reply format name for a tokenizer of ``family`` with these added tokens."""
    for token, name in FAMILY_REPLY_VARIANTS.get(family or "", ()):
        if token in added_tokens:
            return name
    return FAMILY_REPLY_FORMATS.get(family or "", "hermes")


_REGISTERED: dict[str, ReplyFormat] = {}
_BUILTINS: list[bool] = []  # non-empty once the chat formats were asked to register


def _load_builtin_formats() -> None:
    """Import ``tokstream.chat`` once: its formats register the built-in tables.

    ``import tokstream`` loads it only on first use (an idle client never needs
    it), so the first lookup here does. Named by string: the chat formats sit a
    layer above the core, and only their registrations are wanted here.
    """
    if not _BUILTINS:
        _BUILTINS.append(True)
        importlib.import_module("tokstream.chat")


def register_reply_format(fmt: ReplyFormat) -> None:
    """Make ``fmt`` available by name to ``ResponseParser(tool_format=fmt.name)``.

    ``tokstream.chat`` registers Qwen's ``"hermes"`` and ``"qwen3_coder"`` when it
    is imported (which the first lookup of a format does). Registering a name again
    replaces the earlier format.
    """
    _REGISTERED[fmt.name] = fmt


def registered_reply_formats() -> tuple[str, ...]:
    """The names :func:`get_reply_format` knows, sorted."""
    _load_builtin_formats()
    return tuple(sorted(_REGISTERED))


def get_reply_format(name: str) -> ReplyFormat:
    """Return the registered format called ``name``.

    Raises:
        InvalidRequest: No format of that name is registered.
    """
    fmt = _REGISTERED.get(name)
    if fmt is None:
        _load_builtin_formats()
        fmt = _REGISTERED.get(name)
    if fmt is None:
        raise InvalidRequest(
            "tool_format", name, f"registered reply formats are {list(registered_reply_formats())}"
        )
    return fmt
