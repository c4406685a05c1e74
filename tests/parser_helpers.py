"""Shared helpers for the response-parser and runner tests (not a test module)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokstream import Done, Error, Event, Token
from tokstream._tokenizer import Tokenizer
from tokstream.context import Context, ReplyBuilder
from tokstream.core._decoder import StreamDecoder
from tokstream.core.parser import (
    NEED_TOKENS,
    ParseEvent,
    Reply,
    ReplySegment,
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


FEEDS = ("feed_ids", "feed", "pull", "pull_ids", "pull_later")
"""The parser's ways in. ``feed_ids`` / ``feed`` push a group and return its
events. ``pull`` / ``pull_ids`` receive a group (``Token`` events / IDs with
logprobs) and pull events with ``next_event()`` until ``NEED_TOKENS``;
``pull_later`` receives every group first and pulls only at the end."""


def pull(parser: ResponseParser) -> list[ParseEvent]:
    """Every event ``next_event()`` has now, up to ``NEED_TOKENS``."""
    out: list[ParseEvent] = []
    while (ev := parser.next_event()) is not NEED_TOKENS:
        out.append(ev)
    return out


def run(
    tok: Tokenizer,
    ids: Sequence[int],
    groups: Iterable[int] | None = None,
    *,
    via: str = "feed_ids",
    builder: ReplyBuilder | None = None,
    **options: Any,
) -> tuple[list[ParseEvent], Reply]:
    """Feed ``ids`` in groups of the given sizes (default: one by one).

    ``via`` picks one of :data:`FEEDS`. With ``builder``, each segment event is
    added to it as it arrives (as the trio shell grows a context).
    """
    parser = ResponseParser(tok, **options)
    events: list[ParseEvent] = []

    def take(new: list[ParseEvent]) -> None:
        for ev in new:
            if builder is not None and isinstance(ev, ReplySegment):
                builder.add_segment(ev)
        events.extend(new)

    pos = 0
    sizes = list(groups) if groups is not None else [1] * len(ids)
    if sum(sizes) < len(ids):
        sizes.append(len(ids) - sum(sizes))
    for size in sizes:
        chunk = list(ids[pos : pos + size])
        pos += len(chunk)
        if via == "feed_ids":
            take(parser.feed_ids(chunk))
        elif via == "feed":
            take(parser.feed([Token(i) for i in chunk]))
        elif via == "pull":
            parser.receive_tokens(Token(i) for i in chunk)  # any iterable
            take(pull(parser))
        elif via == "pull_ids":
            parser.receive_ids(chunk, [-0.5] * len(chunk))
            take(pull(parser))
        else:
            assert via == "pull_later", via
            parser.receive_ids(chunk)
    if via.startswith("pull"):
        parser.end_of_reply()
        take(pull(parser))
        assert parser.next_event() is NEED_TOKENS  # for good, after the Reply
    else:
        take(parser.finish())
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
    # Each closed segment is an event, in stream order; a call follows its own
    # (calls that share one body, a pythonic list, follow it in order).
    segments = [e for e in events if isinstance(e, ReplySegment)]
    assert segments == list(reply.segments)
    for call in reply.tool_calls:
        assert call.ids.tolist() == list(ids[call.start_token : call.end_token])
        k = events.index(call) - 1
        while isinstance(events[k], ToolCall) and events[k].start_token == call.start_token:
            k -= 1
        before = events[k]
        first = call.index - (events.index(call) - 1 - k)
        assert isinstance(before, ReplySegment) and before.tool_call == first
        assert before.ids.tolist() == call.ids.tolist()
    return reply
