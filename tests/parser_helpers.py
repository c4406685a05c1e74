"""Shared helpers for the response-parser and runner tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokstream import Done, Error, Event, Token
from tokstream._chunks import StreamDecoder
from tokstream._parser import (
    ParseEvent,
    Reply,
    ResponseParser,
    TextDelta,
    ThinkingDelta,
    ToolCall,
)
from tokstream._tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"

WEATHER_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "hourly": {"type": "boolean"},
                    "ratio": {"type": "number"},
                    "options": {"type": "object"},
                    "tags": {"type": "array"},
                    "nothing": {"type": "null"},
                    "maybe": {"type": ["integer", "null"]},
                },
            },
        },
    },
    {"type": "function", "function": {"name": "convert", "parameters": {"type": "object"}}},
]


def spelled(tok: Tokenizer, *parts: str) -> list[int]:
    """Encode each part on its own and concatenate: controls where tokens split.

    ``spelled(tok, "<", "tool", "_call", ">")`` spells ``<tool_call>`` with
    ordinary tokens; ``spelled(tok, "<tool_call>")`` gives the special ID.
    """
    out: list[int] = []
    for part in parts:
        out += tok.encode(part).tolist()
    return out


def recorded_events(name: str) -> list[Event]:
    """Decode a recorded SSE body with tokstream's own stream decoder."""
    dec = StreamDecoder()
    events = dec.feed((DATA / name).read_bytes())
    if not events or not isinstance(events[-1], Done | Error):
        events += dec.finish()
    return events


def recorded_tokens(name: str) -> list[Token]:
    return [e for e in recorded_events(name) if isinstance(e, Token)]


def run(
    tok: Tokenizer,
    ids: Sequence[int],
    groups: Iterable[int] | None = None,
    **options: Any,
) -> tuple[list[ParseEvent], Reply]:
    """Feed ``ids`` in groups of the given sizes (default: one by one)."""
    parser = ResponseParser(tok, **options)
    events: list[ParseEvent] = []
    pos = 0
    sizes = list(groups) if groups is not None else [1] * len(ids)
    for size in sizes:
        events += parser.feed_ids(ids[pos : pos + size])
        pos += size
    if pos < len(ids):
        events += parser.feed_ids(ids[pos:])
    events += parser.finish()
    reply = events[-1]
    assert isinstance(reply, Reply)
    return events, reply


def deltas(events: Iterable[ParseEvent], kind: type[TextDelta] | type[ThinkingDelta]) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def calls(events: Iterable[ParseEvent]) -> list[ToolCall]:
    return [e for e in events if isinstance(e, ToolCall)]


def check_invariants(tok: Tokenizer, ids: Sequence[int], events: list[ParseEvent]) -> Reply:
    """What must hold for every reply: exact IDs, exact text, deltas == content."""
    reply = events[-1]
    assert isinstance(reply, Reply)
    seg_ids = [int(i) for s in reply.segments for i in s.ids]
    assert seg_ids == list(ids)
    assert reply.token_ids.tolist() == list(ids)
    decoded = tok.decode(ids)
    if not decoded.endswith("\ufffd"):
        assert "".join(s.text for s in reply.segments) == decoded
    assert deltas(events, TextDelta) == reply.content
    assert deltas(events, ThinkingDelta) == reply.reasoning
    assert calls(events) == list(reply.tool_calls)
    for call in reply.tool_calls:
        assert call.ids.tolist() == list(ids[call.start_token : call.end_token])
    return reply
