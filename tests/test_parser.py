"""The sans-IO response parser: recordings, edge cases, and feeding equivalence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokstream import InvalidRequest, OutputError, Token
from tokstream._tokenizer import Tokenizer
from tokstream.context import Context
from tokstream.core.parser import (
    Reply,
    ReplyFormat,
    ReplySegment,
    ResponseParser,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallOpened,
    ToolCallStatus,
    parse_output,
)

from .parser_helpers import (
    FEEDS,
    WEATHER_TOOLS,
    calls,
    check_invariants,
    deltas,
    leaves,
    recorded_tokens,
    run,
    spelled,
)

TOOL_CALL, TOOL_CALL_END, THINK, THINK_END, IM_END = 151657, 151658, 151667, 151668, 151645


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def hermes(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


# -- recorded vLLM streams ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "reasoning", "content"),
    [
        ("forced_hermes.sse", "hermes", "\nplan\n", "\nHello "),
        ("so_hermes.sse", "hermes", "\nplan\n", "\nHello "),
        ("forced_coder.sse", "qwen3_coder", "", ""),
        ("so_coder.sse", "qwen3_coder", "", ""),
    ],
)
def test_recorded_streams(
    tok: Tokenizer, name: str, fmt: str, reasoning: str, content: str
) -> None:
    tokens = recorded_tokens(name)
    ids = [t.id for t in tokens]
    parser = ResponseParser(tok, tool_format=fmt, tools=WEATHER_TOOLS)  # type: ignore[arg-type]
    events = []
    for t in tokens:
        events += parser.feed([t])
    events += parser.finish()
    reply = check_invariants(tok, ids, events)
    assert reply.reasoning == reasoning
    assert reply.content == content
    [call] = reply.tool_calls
    assert (call.name, call.arguments, call.status) == ("get_weather", {"city": "Paris"}, "ok")
    assert [s.kind for s in reply.segments][-2:] == ["tool_call", "stop"]
    assert reply.segments[-1].ids.tolist() == [IM_END]
    assert reply.segments[-2].text.startswith(("<tool_call>", " <tool_call>"))
    assert reply.segments[-2].text.endswith("</tool_call>")
    # The call is reported when its closing tag arrives, before the stop token.
    assert isinstance(events[-1], Reply)
    assert events.index(call) < len(events) - 1
    started = [e for e in events if isinstance(e, ToolCallOpened)]
    assert len(started) == 1 and started[0].index == 0


@pytest.mark.parametrize(
    ("name", "status"),
    [
        # </tool_call> is the stop token ID: the call still closes on it.
        ("stop_token_id_tool_call_end.sse", ToolCallStatus.OK),
        # "</tool_call>" is a stop string: vLLM cuts it (and lags text) but streams
        # its ID, and the parser reads IDs, not text.
        ("stop_string_tool_call_end.sse", ToolCallStatus.OK),
        ("stop_string_include.sse", ToolCallStatus.OK),
        # The stop string "get_weather" ends the stream inside the call.
        ("stop_string_midtoken.sse", ToolCallStatus.UNTERMINATED),
    ],
)
def test_recorded_stop_tokens_and_strings(
    tok: Tokenizer, name: str, status: ToolCallStatus
) -> None:
    tokens = recorded_tokens(name)
    ids = [t.id for t in tokens]
    parser = ResponseParser(tok)
    events = parser.feed(tokens) + parser.finish()
    reply = check_invariants(tok, ids, events)
    [call] = reply.tool_calls
    assert call.status is status
    if status is ToolCallStatus.OK:
        assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert [s.kind for s in reply.segments] == ["thinking", "text", "tool_call"]


def test_recorded_utf8_hold_back(tok: Tokenizer) -> None:
    for name in ("forced_utf8.sse", "so_utf8.sse"):
        tokens = recorded_tokens(name)
        ids = [t.id for t in tokens]
        events, reply = run(tok, ids)
        check_invariants(tok, ids, events)
        assert reply.content == "Hi 🫠 龘 🦜 日本語 é!"
        assert not any("\ufffd" in e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("via", FEEDS)
def test_reply_cut_inside_a_character(tok: Tokenizer, via: str) -> None:
    # "Hi 🫠" is [13048, 11162, 104, 254]: cut after 104, the emoji's bytes are
    # incomplete. The segment's text is still the decode of its IDs (U+FFFD at
    # the cut), while deltas and content carry only complete characters.
    ids = [13048, 11162, 104]
    assert tok.decode(ids) == "Hi \ufffd"
    events, reply = run(tok, ids, via=via)
    check_invariants(tok, ids, events)
    assert [(s.kind, s.text) for s in reply.segments] == [("text", "Hi \ufffd")]
    assert reply.content == "Hi " == deltas(events, TextDelta)
    # Inside a call: the call's segment keeps it, its raw body does not.
    ids = [*spelled(tok, "<tool_call>", '{"name": "f"} '), 11162, 104]
    events, reply = run(tok, ids, via=via)
    check_invariants(tok, ids, events)
    [call] = reply.tool_calls
    assert reply.segments[-1].text.endswith(" \ufffd") and call.raw == '{"name": "f"}  '


def test_forced_hermes_segments_are_exact(tok: Tokenizer) -> None:
    ids = [t.id for t in recorded_tokens("forced_hermes.sse")]
    _, reply = run(tok, ids)
    kinds = [(s.kind, s.ids.tolist()) for s in reply.segments]
    assert kinds[0] == ("thinking", [THINK, 198, 10393, 198, THINK_END])
    assert kinds[1] == ("text", [198, 9707, 220])
    assert kinds[2][0] == "tool_call" and kinds[2][1][0] == TOOL_CALL
    assert kinds[2][1][-1] == TOOL_CALL_END
    assert kinds[3] == ("stop", [IM_END])
    call = reply.tool_calls[0]
    assert (call.start_token, call.end_token) == (8, 27)
    assert call.raw == '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'


def test_multi_token_chunks_from_recording(tok: Tokenizer) -> None:
    # coalesced_chunks.sse has chunks of 2, 4 and more IDs: only the last token of
    # a chunk carries text. The parser derives text from IDs, so it is unaffected.
    tokens = recorded_tokens("coalesced_chunks.sse")
    assert any(t.text == "" for t in tokens[:-1])
    ids = [t.id for t in tokens]
    parser = ResponseParser(tok)
    events = parser.feed(tokens) + parser.finish()
    reply = check_invariants(tok, ids, events)
    one_by_one = ResponseParser(tok)
    for t in tokens:
        one_by_one.feed([t])
    assert reply == one_by_one.finish()[-1]


def test_token_text_is_ignored(tok: Tokenizer) -> None:
    # Lagging or empty per-token text (stop strings, chunking) must not matter.
    ids = spelled(tok, "Hi ", "<tool_call>", hermes("f", {"a": 1})[11:])
    lying = [Token(i, "garbage<tool_call>" if k == 0 else "") for k, i in enumerate(ids)]
    parser = ResponseParser(tok)
    events = parser.feed(lying) + parser.finish()
    reply = check_invariants(tok, ids, events)
    assert reply.content == "Hi "
    assert reply.tool_calls[0].arguments == {"a": 1}


# -- edge cases ----------------------------------------------------------------------------


def test_several_calls_text_around_and_between(tok: Tokenizer) -> None:
    text = (
        "Before. "
        + hermes("get_weather", {"city": "Paris"})
        + "\nbetween\n"
        + hermes("convert", {"value": 1})
        + hermes("get_weather", {"city": "Tokyo"})
        + " after<|im_end|>"
    )
    ids = tok.encode(text).tolist()
    events, reply = run(tok, ids, tools=WEATHER_TOOLS)
    check_invariants(tok, ids, events)
    assert [c.name for c in reply.tool_calls] == ["get_weather", "convert", "get_weather"]
    assert [c.index for c in reply.tool_calls] == [0, 1, 2]
    assert all(c.ok for c in reply.tool_calls)
    reply.tool_calls[0].raise_for_status()
    assert reply.content == "Before. \nbetween\n after"
    assert [s.kind for s in reply.segments] == [
        "text",
        "tool_call",
        "text",
        "tool_call",
        "tool_call",
        "text",
        "stop",
    ]
    # Events come in stream order: text, call 0, text, call 1, call 2, text.
    order = [
        type(e).__name__ for e in events if isinstance(e, TextDelta | ToolCall | ToolCallOpened)
    ]
    assert order.index("ToolCall") < len(order) - 1 - order[::-1].index("TextDelta")
    first_call = order.index("ToolCall")
    assert "TextDelta" in order[first_call:]


def test_nested_json_and_escapes(tok: Tokenizer) -> None:
    args = {
        "q": 'line1\nline2\t"quoted" \\ back </tool_call-ish> <',
        "nested": {"a": [1, {"b": None, "c": [True, False]}], "e": 1.5e-3},
        "unicode": "héllo 🫠 世界",
    }
    ids = tok.encode(hermes("convert", args)).tolist()
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert reply.tool_calls[0].arguments == args
    assert reply.tool_calls[0].ok


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ('{"name": "convert", "arguments": {"a": 1}', ToolCallStatus.INVALID_JSON, None),
        ("not json at all", ToolCallStatus.INVALID_JSON, None),
        ('["convert"]', ToolCallStatus.MALFORMED, None),
        ('{"arguments": {}}', ToolCallStatus.MALFORMED, None),
        ('{"name": "convert", "arguments": [1]}', ToolCallStatus.MALFORMED, "convert"),
        ('{"name": "nope", "arguments": {}}', ToolCallStatus.UNKNOWN_TOOL, "nope"),
    ],
)
def test_malformed_hermes_is_reported_not_dropped(
    tok: Tokenizer, body: str, status: ToolCallStatus, name: str | None
) -> None:
    text = f"a<tool_call>\n{body}\n</tool_call>b"
    ids = tok.encode(text).tolist()
    events, reply = run(tok, ids, tools=WEATHER_TOOLS)
    check_invariants(tok, ids, events)
    [call] = reply.tool_calls
    assert call.status == status
    assert not call.ok and call.error
    assert call.name == name
    assert call.raw == f"\n{body}\n"
    assert reply.content == "ab"
    with pytest.raises(OutputError, match=status.value):
        call.raise_for_status()


def test_unclosed_call_at_end(tok: Tokenizer) -> None:
    ids = spelled(tok, "x", '<tool_call>\n{"name": "convert", "arguments": {"a": 1}}\n')
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    [call] = reply.tool_calls
    assert call.status is ToolCallStatus.UNTERMINATED
    assert (call.name, call.arguments) == ("convert", {"a": 1})
    assert "end" in (call.error or "")
    # It is reported by finish(), not before.
    assert call not in run(tok, ids)[0][:-2]


def test_unclosed_call_cut_by_next_call_and_by_stop(tok: Tokenizer) -> None:
    ids = spelled(tok, '<tool_call>\n{"name": "a"', '<tool_call>\n{"name": "b"}\n</tool_call>')
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert [(c.name, c.status) for c in reply.tool_calls] == [
        (None, ToolCallStatus.UNTERMINATED),
        ("b", ToolCallStatus.OK),
    ]
    assert "next <tool_call>" in (reply.tool_calls[0].error or "")
    ids = spelled(tok, '<tool_call>\n{"name": "a"}', "<|im_end|>")
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert reply.tool_calls[0].status is ToolCallStatus.UNTERMINATED
    assert [s.kind for s in reply.segments] == ["tool_call", "stop"]


def test_thinking_with_no_close(tok: Tokenizer) -> None:
    ids = spelled(tok, "<think>", "\nstill thinking about <b>")
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert reply.thinking_unterminated and not reply.ok
    assert reply.reasoning == "\nstill thinking about <b>"
    assert reply.content == ""
    assert [s.kind for s in reply.segments] == ["thinking"]


def test_thinking_opened_by_prompt(tok: Tokenizer) -> None:
    ids = spelled(tok, "\nplan it\n", "</think>", "\n\nanswer")
    events, reply = run(tok, ids, thinking="open")
    check_invariants(tok, ids, events)
    assert (reply.reasoning, reply.content) == ("\nplan it\n", "\n\nanswer")
    assert [s.kind for s in reply.segments] == ["thinking", "text"]
    assert reply.segments[0].ids.tolist()[-1] == THINK_END
    # Without the option, the same IDs are content (the </think> is plain text).
    _, auto = run(tok, ids)
    assert auto.reasoning == "" and auto.content == tok.decode(ids)


def test_tool_call_ends_thinking_implicitly(tok: Tokenizer) -> None:
    ids = spelled(tok, "<think>", "\nI will call", hermes("convert", {}), "done")
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert reply.reasoning == "\nI will call"
    assert not reply.thinking_unterminated
    assert reply.tool_calls[0].ok and reply.content == "done"
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ThinkingDelta") < kinds.index("ToolCallOpened")


def test_thinking_off_keeps_tags_as_text(tok: Tokenizer) -> None:
    ids = spelled(tok, "<think>", "x", "</think>", "y")
    _, reply = run(tok, ids, thinking="off")
    assert reply.reasoning == "" and reply.content == "<think>x</think>y"


@pytest.mark.parametrize(
    "parts",
    [
        (
            "a ",
            "<",
            "tool",
            "_call",
            ">",
            '\n{"name": "f", "arguments": {}}\n',
            "</",
            "tool_call",
            ">",
        ),
        ("a <", "tool_", "call>\n", '{"name": "f"}', "\n</tool_c", "all>\n", "z"),
        ("a", " <tool_call>\n", '{"name": "f"}', "</", "tool_call>"),
        (
            "<th",
            "ink>",
            "r",
            "</th",
            "ink>",
            "a",
            "<",
            "tool_call",
            ">{",
            '"name":"f"}</',
            "tool_call>",
        ),
    ],
)
def test_tags_split_across_ordinary_tokens(tok: Tokenizer, parts: tuple[str, ...]) -> None:
    ids = spelled(tok, *parts)
    assert TOOL_CALL not in ids or TOOL_CALL_END not in ids
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    [call] = reply.tool_calls
    assert call.ok and call.name == "f"
    # Held-back text is never emitted then retracted: no delta contains a "<".
    assert not any("<" in e.text for e in events if isinstance(e, TextDelta | ThinkingDelta))


def test_text_tags_off_trusts_only_ids(tok: Tokenizer) -> None:
    ids = spelled(tok, "a <", "tool_call", ">", '{"name": "f"}', "</tool_call>")
    _, reply = run(tok, ids, match_text=False)
    assert reply.tool_calls == ()
    assert reply.content == tok.decode(ids)


def test_near_miss_tags_are_text(tok: Tokenizer) -> None:
    text = "if a < b and b <tool or <tool_cal> or </tool_call> <thinking> <"
    ids = spelled(tok, *text.split(" "))
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    assert reply.tool_calls == () and reply.reasoning == ""
    assert reply.content == "".join(text.split(" "))


def test_boundary_inside_a_token_rule(tok: Tokenizer) -> None:
    # " <" carries content (" ") and the tag's "<": the token goes to the call's
    # segment; the " " is still reported as content.
    ids = spelled(
        tok, "Hello", " <", "tool_call", ">", '{"name": "f"}', "</tool_call", ">\n\n", "bye"
    )
    events, reply = run(tok, ids)
    check_invariants(tok, ids, events)
    seg = {s.kind: s for s in reply.segments if s.kind != "text"}
    assert seg["tool_call"].text == ' <tool_call>{"name": "f"}</tool_call>\n\n'
    assert reply.content == "Hello \n\nbye"
    assert [s.text for s in reply.segments if s.kind == "text"] == ["Hello", "bye"]


def test_logprobs_follow_their_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("hi" + hermes("f", {}) + "<|im_end|>").tolist()
    lps = [-0.5 * k for k in range(len(ids))]
    parser = ResponseParser(tok)
    parser.feed([Token(i, "", lp) for i, lp in zip(ids, lps, strict=True)])
    reply = parser.finish()[-1]
    assert isinstance(reply, Reply)
    got = np.concatenate([s.logprobs for s in reply.segments if s.logprobs is not None])
    assert got.tolist() == pytest.approx(lps)


def test_feed_after_finish_raises(tok: Tokenizer) -> None:
    parser = ResponseParser(tok)
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed_ids([1])
    with pytest.raises(RuntimeError):
        parser.finish()


def test_bad_options(tok: Tokenizer) -> None:
    # InvalidRequest names the field; it is also a ValueError, as before.
    with pytest.raises(InvalidRequest, match="tool_format") as info:
        ResponseParser(tok, tool_format="xml")
    assert info.value.field == "tool_format" and isinstance(info.value, ValueError)
    assert "hermes" in str(info.value) and "qwen3_coder" in str(info.value)
    with pytest.raises(InvalidRequest, match="thinking"):
        ResponseParser(tok, thinking="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="name") as info:
        ResponseParser(tok, tools=[{"function": {}}])
    assert info.value.field == "tools"
    with pytest.raises(InvalidRequest, match="logprobs") as info:
        ResponseParser(tok).feed_ids([1, 2], [0.0])
    assert info.value.field == "logprobs"
    with pytest.raises(InvalidRequest, match="tool_format"):
        ResponseParser(tok, reply_format=ReplyFormat("x", (), ()), tool_format="hermes")


# -- the context tree -----------------------------------------------------------------------


def test_grows_the_context_tree_leaf_by_leaf(tok: Tokenizer) -> None:
    ctx = Context(tok)
    ctx.add_user("Weather in Paris?")
    reply = ctx.begin_assistant()
    before = len(ctx)
    ids = tok.encode(
        "<think>\nok\n</think>\n\nSure." + hermes("get_weather", {"city": "Paris"}) + "<|im_end|>"
    ).tolist()
    seen: list[int] = []
    parser = reply.new_parser()
    for i in ids:
        for ev in parser.feed_ids([i]):
            if isinstance(ev, ReplySegment):  # a segment event: one more leaf
                reply.add_segment(ev)
                seen.append(len(ctx))
    result = parser.finish()[-1]
    assert isinstance(result, Reply)
    # Each leaf was in the tree when its segment completed, before the next.
    assert seen == [
        before + len(s.ids) + sum(len(p.ids) for p in result.segments[:k])
        for k, s in enumerate(result.segments)
    ]
    message = reply.finish(ids)
    sampled = [leaf for leaf in message.leaves if leaf.sampled]
    assert [leaf.kind for leaf in sampled] == ["thinking", "text", "tool_call", "stop"]
    assert [leaf.ids.tolist() for leaf in sampled] == [s.ids.tolist() for s in result.segments]
    assert [leaf.text for leaf in sampled] == [s.text for s in result.segments]
    mask = ctx.generation_mask()
    assert ctx.prompt_ids()[mask].tolist() == ids


# -- parse_output -----------------------------------------------------------------------------


def test_parse_output_text_and_ids_agree(tok: Tokenizer) -> None:
    text = "<think>\nhm\n</think>\n\nOK " + hermes("get_weather", {"city": "Oslo"}) + "<|im_end|>"
    from_text = parse_output(text, tokenizer=tok, tools=WEATHER_TOOLS)
    from_ids = parse_output(tok.encode(text), tokenizer=tok, tools=WEATHER_TOOLS)
    assert from_text == from_ids
    assert from_text.reasoning == "\nhm\n"
    assert from_text.content == "\n\nOK "
    [call] = from_text.tool_calls
    assert (call.name, call.arguments, call.status) == ("get_weather", {"city": "Oslo"}, "ok")
    assert call.raw == '\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'


def test_parse_output_qwen3_coder(tok: Tokenizer) -> None:
    text = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    reply = parse_output(text, tokenizer=tok, tool_format="qwen3_coder", tools=WEATHER_TOOLS)
    assert reply.tool_calls[0].arguments == {"city": "Paris", "days": 3}
    untyped = parse_output(text, tokenizer=tok, tool_format="qwen3_coder")
    assert untyped.tool_calls[0].arguments == {"city": "Paris", "days": "3"}


# -- equivalence: whole, token by token, random groupings ------------------------------------

_FRAGMENTS = [
    "Hello there. ",
    "a < b <= c ",
    "<think>\nreason <x>\n</think>\n\n",
    hermes("get_weather", {"city": "Paris", "n": [1, {"x": "y\n"}]}),
    hermes("convert", {"s": 'quote " and \\ and </tool'}),
    '<tool_call>\n{"name": bad json}\n</tool_call>',
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nLyon\n</parameter>\n</function>\n</tool_call>",
    "\n",
    "🫠 é 世界 ",
    "</think>",
    "<tool",
    "<|im_end|>",
]


@st.composite
def _outputs(draw: st.DrawFn) -> tuple[str, list[int]]:
    frags = draw(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=6))
    text = "".join(frags)
    # Re-split the text at random character positions so tags are sometimes
    # one special ID and sometimes spelled by ordinary tokens.
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=8)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, [p for p in parts if p]


@pytest.mark.parametrize("via", FEEDS)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=_outputs(),
    groups=st.lists(st.integers(1, 7), max_size=40),
    fmt=st.sampled_from(["hermes", "qwen3_coder"]),
    thinking=st.sampled_from(["auto", "open", "off"]),
    match_text=st.booleans(),
)
def test_equivalence_whole_one_by_one_random_groups(
    tok: Tokenizer,
    via: str,
    data: tuple[str, list[str]],
    groups: list[int],
    fmt: str,
    thinking: str,
    match_text: bool,
) -> None:
    _, parts = data
    ids = spelled(tok, *parts)
    opts: dict[str, Any] = {"tool_format": fmt, "thinking": thinking, "tools": WEATHER_TOOLS}
    opts["match_text"] = match_text
    results: list[tuple[object, ...]] = []
    for grouping in ([len(ids)], None, groups):
        # Each run also grows a context tree from the segment events.
        ctx = Context(tok)
        ctx.add_user("q")
        builder = ctx.begin_assistant()
        events, reply = run(tok, ids, groups=grouping, via=via, builder=builder, **opts)
        check_invariants(tok, ids, events)
        builder.finish(ids)
        grown = leaves(ctx)
        assert grown == [(s.kind, s.ids.tolist(), s.text) for s in reply.segments]
        text, thought = deltas(events, TextDelta), deltas(events, ThinkingDelta)
        results.append((reply, calls(events), text, thought, grown))
    whole, single, grouped = results
    assert whole == single == grouped
    # The ways in agree with each other too (feed_ids is the reference).
    reference = run(tok, ids, groups=[len(ids)], **opts)[1]
    if via == "pull_ids":  # the same, plus a logprob on every segment
        reply = whole[0]
        assert isinstance(reply, Reply)
        assert all(s.logprobs is not None and set(s.logprobs) == {-0.5} for s in reply.segments)
        assert [(s.kind, s.text, s.ids.tolist()) for s in reply.segments] == [
            (s.kind, s.text, s.ids.tolist()) for s in reference.segments
        ]
        assert (reply.content, reply.reasoning, reply.tool_calls) == (
            reference.content,
            reference.reasoning,
            reference.tool_calls,
        )
    elif via != "feed_ids":
        assert whole[0] == reference


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_outputs(), fmt=st.sampled_from(["hermes", "qwen3_coder"]))
def test_meaning_does_not_depend_on_how_tags_are_tokenized(
    tok: Tokenizer, data: tuple[str, list[str]], fmt: str
) -> None:
    # The canonical encoding has every tag as its special ID; a random split
    # spells some tags with ordinary tokens. Reasoning, content and calls agree.
    text, parts = data
    # A stop token ends the turn only as its ID: its text spelled out is content.
    assume("<|im_end|>" not in text)
    canonical = run(tok, tok.encode(text).tolist(), groups=[10**6], tool_format=fmt)[1]
    split = run(tok, spelled(tok, *parts), groups=[10**6], tool_format=fmt)[1]

    def meaning(r: Reply) -> object:
        calls = [(c.name, c.arguments, c.status, c.raw, c.error) for c in r.tool_calls]
        return r.reasoning, r.content, calls, r.thinking_unterminated

    assert meaning(canonical) == meaning(split)
