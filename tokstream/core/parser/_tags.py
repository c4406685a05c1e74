"""The parser's tag tables: which tag each state recognises, by ID and by text.

Built once per parser from the tokenizer's added tokens, so the per-token path
is a dict lookup on the ID plus, only for pieces containing ``<``, a scan
against a handful of strings and a frozenset of their proper prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TagTables", "build_tag_tables"]

TEXT, THINK, TOOL = 0, 1, 2
THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE, STOP = range(5)
TAG_TEXT = {
    THINK_OPEN: "<think>",
    THINK_CLOSE: "</think>",
    CALL_OPEN: "<tool_call>",
    CALL_CLOSE: "</tool_call>",
}
STOP_NAMES = ("<|im_end|>", "<|endoftext|>")
_BY_STATE = {
    TEXT: (THINK_OPEN, CALL_OPEN),
    THINK: (THINK_CLOSE, CALL_OPEN),
    TOOL: (CALL_CLOSE, CALL_OPEN),
}


@dataclass(frozen=True, slots=True)
class TagTables:
    """Lookup tables for one parser configuration.

    Attributes:
        by_id: Token ID -> tag code (tags that are one added token, stop IDs).
        text_tags: State -> ``(tag text, code)`` pairs matched in text.
        prefixes: State -> proper prefixes of those tags (held back).
        state_codes: State -> tag codes meaningful in that state.
    """

    by_id: dict[int, int]
    text_tags: dict[int, tuple[tuple[str, int], ...]]
    prefixes: dict[int, frozenset[str]]
    state_codes: dict[int, frozenset[int]]


def build_tag_tables(
    added: dict[str, int], *, thinking_tags: bool, match_text: bool, stop_ids: Iterable[int] | None
) -> TagTables:
    """Build the tables from the tokenizer's added tokens (name -> ID)."""
    codes = dict(TAG_TEXT)
    if not thinking_tags:
        del codes[THINK_OPEN], codes[THINK_CLOSE]
    by_id = {added[text]: code for code, text in codes.items() if text in added}
    stops = [added[n] for n in STOP_NAMES if n in added] if stop_ids is None else stop_ids
    for sid in stops:
        by_id[int(sid)] = STOP
    text_tags: dict[int, tuple[tuple[str, int], ...]] = {}
    prefixes: dict[int, frozenset[str]] = {}
    state_codes: dict[int, frozenset[int]] = {}
    for state, wanted in _BY_STATE.items():
        state_codes[state] = frozenset(c for c in wanted if c in codes)
        tags = tuple(
            (codes[c], c) for c in wanted if c in codes and (match_text or codes[c] not in added)
        )
        text_tags[state] = tags
        prefixes[state] = frozenset(t[:k] for t, _ in tags for k in range(1, len(t)))
    return TagTables(by_id, text_tags, prefixes, state_codes)
