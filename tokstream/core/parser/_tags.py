"""A reply format compiled for one tokenizer: the tables the token loop reads.

:func:`compile_tables` turns a :class:`~tokstream.core.parser.ReplyFormat`
(tag rows by state name) into integer-coded lookups, once per parser, so the
per-token path is one dict lookup on the ID plus, only for pieces containing
the trigger character, a scan against a handful of strings and a frozenset of
their proper prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..._exceptions import InvalidRequest
from ._events import SegmentKind
from ._format import ROUTED, STATES, ReplyFormat, State
from ._protocols import ThinkingMode

__all__ = [
    "CALLS",
    "HEAD",
    "KIND",
    "NO_TRIGGER",
    "ROUTE",
    "STOP",
    "TEXT",
    "THINK",
    "TOOL",
    "TagTables",
    "compile_tables",
]

TEXT, THINK, TOOL, CALLS, HEAD = 0, 1, 2, 3, 4
"""State codes: indices into ``STATES`` and :data:`KIND`."""
NO_TRIGGER = "\x00"
"""The trigger of a state with no text tags (a piece holding it just takes the
slow path, where nothing matches)."""
ROUTE = -2
"""The next-state code of a tag that ends a header (the router decides)."""
STOP = -1
"""The tag code of a stop token."""
KIND: tuple[SegmentKind, ...] = ("text", "thinking", "tool_call", "framing", "framing")
"""The segment kind of each state code (a header's until it is routed)."""
_CODE: dict[State, int] = {name: code for code, name in enumerate(STATES)}
_CODE[ROUTED] = ROUTE


@dataclass(frozen=True, slots=True)
class TagTables:
    """The lookups for one parser (format, tokenizer and options).

    Attributes:
        by_id: Token ID -> tag code (a tag that is one added token) or ``STOP``.
        moves: Per state code: tag code -> next state code. A tag code missing
            from its state's dict is text there.
        text_tags: Per state code: ``(tag text, tag code)`` pairs to match in
            text, longest first.
        prefixes: Per state code: the proper prefixes of those tags (held back).
        tag_text: Tag code -> its text (for messages).
        triggers: Per state code: the character its text tags start with
            (:data:`NO_TRIGGER` when it has none; ``""`` when every piece must
            take the slow path).
        call_close: The tag that closes a call, for messages (``None``: none).
    """

    by_id: dict[int, int]
    moves: tuple[dict[int, int], ...]
    text_tags: tuple[tuple[tuple[str, int], ...], ...]
    prefixes: tuple[frozenset[str], ...]
    tag_text: tuple[str, ...]
    triggers: tuple[str, ...]
    call_close: str | None


def compile_tables(
    fmt: ReplyFormat,
    added: dict[str, int],
    *,
    thinking: ThinkingMode,
    match_text: bool,
    stop_ids: Iterable[int] | None,
) -> TagTables:
    """Compile ``fmt`` against the tokenizer's added tokens (name -> ID).

    ``thinking="off"`` drops every row into or out of a thinking block, so its
    tags are plain text. With ``match_text=False``, a tag that is one added
    token is recognised only by that ID.

    Raises:
        InvalidRequest: ``thinking`` is not a known mode, or is ``"open"`` for
            a format that has no thinking block.
    """
    if thinking not in ("auto", "open", "off"):
        raise InvalidRequest("thinking", thinking, "use 'auto', 'open' or 'off'")
    if thinking == "open" and not fmt.has_thinking:
        raise InvalidRequest("thinking", thinking, f"the {fmt.name!r} format has no thinking block")
    rows = [r for r in fmt.tags if thinking != "off" or "thinking" not in (r[0], r[2])]
    tag_text = tuple(dict.fromkeys(tag for _, tag, _ in rows))
    code_of = {tag: code for code, tag in enumerate(tag_text)}
    by_id = {added[tag]: code for tag, code in code_of.items() if tag in added}
    stops = [added[n] for n in fmt.stop_tokens if n in added] if stop_ids is None else stop_ids
    for sid in stops:
        by_id[int(sid)] = STOP
    moves: list[dict[int, int]] = [{} for _ in STATES]
    for state, tag, to in rows:
        moves[_CODE[state]][code_of[tag]] = _CODE[to]
    text_tags: list[tuple[tuple[str, int], ...]] = []
    prefixes: list[frozenset[str]] = []
    triggers: list[str] = []
    for move in moves:
        tags = sorted(
            ((tag_text[c], c) for c in move if match_text or tag_text[c] not in added),
            key=lambda t: -len(t[0]),
        )
        text_tags.append(tuple(tags))
        prefixes.append(frozenset(t[:k] for t, _ in tags for k in range(1, len(t))))
        triggers.append(tags[0][0][0] if tags else NO_TRIGGER)
    if fmt.call_end != "tag":
        # Every piece of a JSON-ended call, and of the section between such
        # calls (where any other text leaves it), takes the slow path.
        triggers[TOOL] = triggers[CALLS] = ""
    return TagTables(
        by_id=by_id,
        moves=tuple(moves),
        text_tags=tuple(text_tags),
        prefixes=tuple(prefixes),
        tag_text=tag_text,
        triggers=tuple(triggers),
        call_close=fmt.closing_tag("tool_call"),
    )
