"""The parser's pull API, segment events, and reply formats as tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokstream import InvalidRequest, Token
from tokstream._tokenizer import Tokenizer
from tokstream.chat import HERMES, LLAMA3, QWEN3_CODER, QwenFormat
from tokstream.core.parser import (
    NEED_TOKENS,
    DecodedCall,
    ParseEvent,
    Reply,
    ReplyFormat,
    ReplySegment,
    ResponseParser,
    TextDelta,
    ToolCall,
    ToolCallOpened,
    ToolCallStatus,
    decode_hermes,
    get_reply_format,
    registered_reply_formats,
)
from tokstream.core.parser._tools import ToolSchemas

from .parser_helpers import check_invariants, pull, run, spelled

TOOL_CALL_END, THINK_END, IM_END = 151658, 151668, 151645


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def hermes(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


# -- the pull API --------------------------------------------------------------------------------


def test_next_event_stops_right_after_a_call(tok: Tokenizer) -> None:
    # One batch holds a call and the tokens after it: a pull consumer gets the
    # call before any of those tokens is parsed (what feed_until_call did).
    ids = tok.encode(hermes("a", {}) + " tail" * 20 + hermes("b", {}) + " end").tolist()
    parser = ResponseParser(tok)
    parser.receive_tokens([Token(i) for i in ids])
    assert parser.tokens_parsed == 0  # receiving parses nothing
    seen: list[tuple[str, int]] = []
    while (ev := parser.next_event()) is not NEED_TOKENS:
        seen.append((type(ev).__name__, parser.tokens_parsed))
    ends = [k + 1 for k, i in enumerate(ids) if i == TOOL_CALL_END]
    calls = [n for name, n in seen if name == "ToolCall"]
    assert calls == ends and ends[0] < ends[1] < len(ids)
    assert parser.tokens_parsed == len(ids)
    # Everything is parsed and delivered; nothing more until the reply ends.
    assert parser.next_event() is NEED_TOKENS
    parser.end_of_reply()
    rest = pull(parser)
    assert isinstance(rest[-1], Reply) and [type(e) for e in rest[:-1]] == [ReplySegment]
    assert parser.next_event() is NEED_TOKENS  # for good


def test_pull_and_feed_agree_and_mix(tok: Tokenizer) -> None:
    ids = tok.encode("<think>\nx\n</think>\n\nHi " + hermes("f", {"a": 1}) + " ok<|im_end|>")
    whole = ResponseParser(tok)
    expected = whole.feed_ids(ids) + whole.finish()
    mixed = ResponseParser(tok)
    got: list[ParseEvent] = []
    third = len(ids) // 3
    mixed.receive_ids(ids[:third])
    got.append(mixed.next_event())  # pull a little, then push and drain the rest
    got += mixed.feed([Token(int(i)) for i in ids[third : 2 * third]])
    mixed.receive_ids(ids[2 * third :])
    got += mixed.finish()
    assert got == expected
    check_invariants(tok, ids.tolist(), got)


def test_receive_after_the_end_is_a_caller_bug(tok: Tokenizer) -> None:
    parser = ResponseParser(tok)
    parser.end_of_reply()
    with pytest.raises(RuntimeError, match="after end_of_reply"):
        parser.receive_tokens([Token(1)])
    with pytest.raises(RuntimeError, match="after end_of_reply"):
        parser.receive_ids([1])
    with pytest.raises(RuntimeError, match="already"):
        parser.end_of_reply()
    [reply] = pull(parser)
    assert isinstance(reply, Reply) and reply.segments == ()


def test_state_and_token_ids_while_held_back(tok: Tokenizer) -> None:
    parser = ResponseParser(tok)
    ids = spelled(tok, "Hi ", "<", "tool")  # "<tool" could still become <tool_call>
    events = parser.feed_ids(ids)
    assert parser.state == "text"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hi "
    assert parser.token_ids.tolist() == ids and parser.tokens_parsed == len(ids)
    parser.feed_ids(spelled(tok, "_call", ">"))
    assert parser.state == "tool_call"
    assert [type(e) for e in parser.finish()][-3:] == [ReplySegment, ToolCall, Reply]


# -- segments are events ---------------------------------------------------------------------------


def test_segments_are_events_in_stream_order(tok: Tokenizer) -> None:
    ids = tok.encode(
        "<think>\nplan\n</think>\n\nSure " + hermes("f", {}) + " done<|im_end|>"
    ).tolist()
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    order = [
        (type(e).__name__, e.kind if isinstance(e, ReplySegment) else "")
        for e in events
        if not isinstance(e, TextDelta) and type(e).__name__ != "ThinkingDelta"
    ]
    assert order == [
        ("ReplySegment", "thinking"),
        ("ReplySegment", "text"),
        ("ToolCallOpened", ""),
        ("ReplySegment", "tool_call"),
        ("ToolCall", ""),
        ("ReplySegment", "text"),
        ("ReplySegment", "stop"),
        ("Reply", ""),
    ]
    # A segment's event comes after the text deltas of its tokens.
    k = next(i for i, e in enumerate(events) if isinstance(e, ReplySegment))
    assert type(events[k - 1]).__name__ == "ThinkingDelta"
    assert reply.segments[2].tool_call == 0


def test_tool_call_opened_is_not_tool_started(tok: Tokenizer) -> None:
    import tokstream

    assert tokstream.ToolCallOpened is ToolCallOpened
    assert not hasattr(tokstream, "ToolCallStarted")
    ids = tok.encode("x" + hermes("f", {})).tolist()
    events, _ = run(tok, ids)
    [opened] = [e for e in events if isinstance(e, ToolCallOpened)]
    assert (opened.index, opened.token_index) == (0, 1)


# -- reply formats: tables owned by the chat formats ----------------------------------------------


def test_registered_formats_are_the_chat_formats_tables(tok: Tokenizer) -> None:
    assert {"hermes", "qwen3_coder"} <= set(registered_reply_formats())
    assert get_reply_format("hermes") is HERMES is QwenFormat(tok).reply_format()
    assert get_reply_format("qwen3_coder") is QWEN3_CODER
    assert QwenFormat(tok).reply_format("qwen3_coder") is QWEN3_CODER
    with pytest.raises(InvalidRequest, match="supports") as info:
        QwenFormat(tok).reply_format("mistral")
    assert info.value.field == "tool_format"


def _decode_kv(body: str, tools: ToolSchemas | None) -> DecodedCall:
    name, _, rest = body.strip().partition(" ")
    args = dict(kv.split("=", 1) for kv in rest.split()) if rest else {}
    if not name:
        return None, None, ToolCallStatus.MALFORMED, "no name"
    return name, args, ToolCallStatus.OK, None


def test_a_new_family_is_a_table_and_a_decoder(tok: Tokenizer) -> None:
    # A made-up family: [THINK]...[/THINK] reasoning, [CALL]name k=v[/CALL]
    # calls, spelled by ordinary tokens (so matched in text, with hold-back on
    # "["), and "<|im_end|>" as its stop token. No change to the loop.
    family = ReplyFormat(
        name="bracket",
        tags=(
            ("text", "[THINK]", "thinking"),
            ("text", "[CALL]", "tool_call"),
            ("thinking", "[/THINK]", "text"),
            ("tool_call", "[/CALL]", "text"),
        ),
        stop_tokens=("<|im_end|>",),
        decode_call=_decode_kv,
    )
    parts = ("[TH", "INK]", "hmm", "[/", "THINK]", "ok [", "CALL]add a=1 b=2[/CALL]", "!")
    ids = [*spelled(tok, *parts), IM_END]
    for groups in (None, [len(ids)], [2, 3, 1]):
        events, reply = run(tok, ids, groups, reply_format=family)
        check_invariants(tok, ids, events)
        assert (reply.reasoning, reply.content) == ("hmm", "ok !")
        [call] = reply.tool_calls
        assert (call.name, call.arguments, call.status) == ("add", {"a": "1", "b": "2"}, "ok")
        assert [s.kind for s in reply.segments] == ["thinking", "text", "tool_call", "text", "stop"]
    # Its tags mean nothing to the Qwen table, and Qwen's mean nothing to it.
    assert run(tok, ids)[1].content == tok.decode(ids[:-1])
    qwen = tok.encode("<think>x</think>").tolist()
    assert run(tok, qwen, reply_format=family)[1].content == "<think>x</think>"


def test_unterminated_call_names_the_formats_closing_tag(tok: Tokenizer) -> None:
    family = ReplyFormat(
        "bracket",
        (("text", "[CALL]", "tool_call"), ("tool_call", "[/CALL]", "text")),
        ("<|im_end|>",),
        _decode_kv,
    )
    _, reply = run(tok, spelled(tok, "[CALL]f x=1"), reply_format=family)
    [call] = reply.tool_calls
    assert call.status is ToolCallStatus.UNTERMINATED
    assert call.error == "no [/CALL] before the end of the reply"
    assert call.arguments == {"x": "1"}


def test_llama3_table_has_no_tags_and_its_own_stops(tok: Tokenizer) -> None:
    # The tiny Qwen vocabulary has none of Llama's stop tokens: give one by ID.
    ids = tok.encode("Hi <think>x</think> " + hermes("f", {})).tolist()
    _, reply = run(tok, [*ids, 9707], reply_format=LLAMA3, stop_ids=[9707])
    assert reply.content == tok.decode(ids) and reply.tool_calls == ()
    assert [s.kind for s in reply.segments] == ["text", "stop"]
    with pytest.raises(InvalidRequest, match="no thinking block"):
        ResponseParser(tok, reply_format=LLAMA3, thinking="open")


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ((("text", "<a>", "nowhere"),), "states"),
        ((("text", "", "thinking"),), "empty"),
        # Within one state every text tag starts with one character (its trigger).
        ((("text", "<a>", "thinking"), ("text", "[b]", "tool_call")), "same character"),
        ((("text", "<a>", "tool_call"),), "decoder"),
        # A header ends only by routing, and only a header routes.
        ((("header", "<a>", "text"),), "routed"),
        ((("text", "<a>", "routed"),), "routed"),
        ((("text", "<a>", "header"), ("header", "<b>", "routed")), "decoder"),
    ],
)
def test_reply_format_tables_are_checked(tags: Any, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        ReplyFormat("bad", tags, ())
    # Different triggers in different states are fine (Mistral's "[" next to "<").
    ReplyFormat("ok", (("text", "<a>", "thinking"), ("thinking", "[b]", "text")), ())
    with pytest.raises(InvalidRequest, match="router"):
        ReplyFormat(
            "bad", (("text", "<a>", "header"), ("header", "<b>", "routed")), (), decode_hermes
        )
