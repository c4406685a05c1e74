"""Shared helpers for the response-parser and runner tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokstream import Done, Error, Event, Token
from tokstream._tokenizer import Tokenizer
from tokstream.context import Context
from tokstream.core._decoder import StreamDecoder
from tokstream.core.parser import (
    ParseEvent,
    Reply,
    ResponseParser,
    TextDelta,
    ThinkingDelta,
    ToolCall,
)

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


FEEDS = ("feed_ids", "feed", "feed_until_call")
"""The parser's three ways in (each has its own inlined per-token loop)."""


def run(
    tok: Tokenizer,
    ids: Sequence[int],
    groups: Iterable[int] | None = None,
    *,
    via: str = "feed_ids",
    **options: Any,
) -> tuple[list[ParseEvent], Reply]:
    """Feed ``ids`` in groups of the given sizes (default: one by one).

    ``via`` picks the method: ``feed_ids`` (IDs), ``feed`` (``Token`` events) or
    ``feed_until_call`` (``Token`` events, resumed after each completed call).
    """
    parser = ResponseParser(tok, **options)
    events: list[ParseEvent] = []
    pos = 0
    sizes = list(groups) if groups is not None else [1] * len(ids)
    if sum(sizes) < len(ids):
        sizes.append(len(ids) - sum(sizes))
    for size in sizes:
        chunk = list(ids[pos : pos + size])
        pos += len(chunk)
        if via == "feed_ids":
            events += parser.feed_ids(chunk)
        elif via == "feed":
            events += parser.feed([Token(i) for i in chunk])
        else:
            tokens = [Token(i) for i in chunk]
            at = 0
            while True:
                got, stop = parser.feed_until_call(tokens, at)
                if stop < len(tokens):  # it stops early only right after a call
                    assert any(isinstance(e, ToolCall) for e in got)
                events += got
                at = stop
                if at == len(tokens):
                    break
    events += parser.finish()
    reply = events[-1]
    assert isinstance(reply, Reply)
    return events, reply


def leaves(ctx: Context) -> list[tuple[str, list[int], str]]:
    """The last message's sampled leaves: kind, IDs, text."""
    return [
        (leaf.kind, leaf.ids.tolist(), leaf.text)
        for leaf in ctx.messages[-1].leaves
        if leaf.sampled
    ]


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
    assert "".join(s.text for s in reply.segments) == tok.decode(ids)
    assert deltas(events, TextDelta) == reply.content
    assert deltas(events, ThinkingDelta) == reply.reasoning
    assert calls(events) == list(reply.tool_calls)
    for call in reply.tool_calls:
        assert call.ids.tolist() == list(ids[call.start_token : call.end_token])
    return reply
