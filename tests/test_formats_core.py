"""What the reply-format table gained for the other families, shown on Qwen.

Sections (``"calls"``), headers (``"header"`` routed by the format), absorbed
tags, per-state triggers and JSON-string awareness are generic: these tests
pin each one with the real Qwen tokenizer, on small tables built here, so a
failure points at the loop and not at a family's table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokstream._tokenizer import Tokenizer
from tokstream.chat import HERMES, QWEN3_CODER
from tokstream.core.parser import DecodedCall, ReplyFormat, State, ToolCallStatus, decode_hermes

from .parser_helpers import FEEDS, check_invariants, run, spelled


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def test_redundant_think_in_a_prompt_opened_block_is_absorbed(tok: Tokenizer) -> None:
    # The generation prompt opened <think>; the model writes it again.
    ids = spelled(tok, "<think>", "\nplan", "</think>", "\n\nhi", "<|im_end|>")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, thinking="open")
        check_invariants(tok, ids, events)
        assert reply.reasoning == "\nplan" and reply.content == "\n\nhi"
        assert [s.kind for s in reply.segments] == ["thinking", "text", "stop"]
        assert reply.segments[0].text == "<think>\nplan</think>"
    # Spelled by ordinary tokens it is absorbed as well.
    ids = spelled(tok, "<", "think", ">", "x", "</think>", "y")
    _, reply = run(tok, ids, thinking="open")
    assert (reply.reasoning, reply.content) == ("x", "y")


def test_tag_inside_an_open_json_string_is_text(tok: Tokenizer) -> None:
    args = {"code": 'print("</tool_call>")\n<tool_call>', "n": 1}
    body = json.dumps({"name": "run", "arguments": args})
    ids = spelled(tok, "<tool_call>", "\n", body, "\n", "</tool_call>", "done")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via)
        check_invariants(tok, ids, events)
        (call,) = reply.tool_calls
        assert (call.status, call.arguments) == (ToolCallStatus.OK, args)
        assert reply.content == "done"
    # By ID too: the special </tool_call> token inside the string is text.
    inner = spelled(tok, '{"name": "run", "arguments": {"code": "a', "</tool_call>", 'b"}}')
    ids = [*spelled(tok, "<tool_call>"), *inner, *spelled(tok, "</tool_call>")]
    _, reply = run(tok, ids, tool_format="hermes")
    assert reply.tool_calls[0].arguments == {"code": "a</tool_call>b"}
    # A markup body (Qwen3-Coder) takes its closing tag as structure anywhere.
    ids = spelled(tok, "<tool_call>", "<function=f><parameter=a>\n", '"', "</tool_call>", "x")
    _, reply = run(tok, ids, reply_format=QWEN3_CODER)
    assert reply.tool_calls[0].status is ToolCallStatus.MISSING_PARAMETER_END
    assert reply.content == "x"


def test_an_unclosed_string_keeps_the_call_open_to_the_end(tok: Tokenizer) -> None:
    # The documented cost of the rule: a body that never closes its string
    # swallows the closing tag, and the call ends unterminated with its raw text.
    ids = spelled(tok, "<tool_call>", '{"name": "f", "arguments": {"a": "x}}', "</tool_call>")
    _, reply = run(tok, ids, reply_format=HERMES)
    (call,) = reply.tool_calls
    assert call.status is ToolCallStatus.UNTERMINATED
    assert call.raw == '{"name": "f", "arguments": {"a": "x}}</tool_call>'


SECTION: tuple[tuple[State, str, State], ...] = (
    ("text", "<s>", "calls"),
    ("calls", "<c>", "tool_call"),
    ("calls", "</s>", "text"),
    ("tool_call", "</c>", "calls"),
    ("tool_call", "</s>", "text"),  # the section's end also ends an open call
)


def test_a_section_holds_calls_and_its_markup_is_framing(tok: Tokenizer) -> None:
    fmt = ReplyFormat("section", SECTION, ("<|im_end|>",), decode_hermes, call_body="json")
    a = json.dumps({"name": "a", "arguments": {"x": 1}})
    b = json.dumps({"name": "b", "arguments": {}})
    ids = spelled(tok, "hi ", "<s>", "\n", "<c>", a, "</c>", "\n", "<c>", b, "</s>", "<|im_end|>")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, reply_format=fmt)
        check_invariants(tok, ids, events)
        kinds = [s.kind for s in reply.segments]
        assert kinds == ["text", "framing", "tool_call", "framing", "tool_call", "stop"]
        assert reply.content == "hi "  # markup between calls is not content
        assert [c.name for c in reply.tool_calls] == ["a", "b"]
        assert all(c.ok for c in reply.tool_calls)
        assert reply.segments[3].text == "\n"


def _route(header: str) -> tuple[State, str | None]:
    if "to=" in header:
        return "tool_call", header.split("to=")[1].split()[0]
    return ("thinking" if "think" in header else "text"), None


HEADERS: tuple[tuple[State, str, State], ...] = (
    ("text", "<h>", "header"),
    ("header", "<m>", "routed"),
    ("thinking", "<e>", "text"),
    ("text", "<e>", "text"),  # absorbed: closes nothing, is not content
    ("tool_call", "<e>", "text"),
)


def test_a_header_routes_its_block_and_belongs_to_it(tok: Tokenizer) -> None:
    fmt = ReplyFormat(
        "headers", HEADERS, ("<|im_end|>",), decode_hermes, call_body="json", route_header=_route
    )
    ids = spelled(
        tok, "<h>", "think", "<m>", "hmm", "<e>", "<h>", "say", "<m>", "Hi", "<e>",
        "<h>", "to=f json", "<m>", '{"name": "ignored", "arguments": {"q": 2}}', "<e>",
    )  # fmt: skip
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, reply_format=fmt, tools={"f": {}})
        check_invariants(tok, ids, events)
        assert [s.kind for s in reply.segments] == ["thinking", "text", "tool_call"]
        assert reply.segments[0].text == "<h>think<m>hmm<e>"
        assert (reply.reasoning, reply.content) == ("hmm", "Hi")
        (call,) = reply.tool_calls
        assert (call.name, call.arguments, call.status) == ("f", {"q": 2}, ToolCallStatus.OK)
    # A header cut by the end of the reply still says what it was.
    _, reply = run(tok, spelled(tok, "<h>", "to=f"), reply_format=fmt)
    assert reply.tool_calls[0].status is ToolCallStatus.UNTERMINATED
    assert reply.tool_calls[0].name == "f"
    _, reply = run(tok, spelled(tok, "<h>", "think", "<m>", "so"), reply_format=fmt)
    assert reply.thinking_unterminated and reply.reasoning == "so"
    # The router knows the tool names it was given: an unknown one says so.
    body = '{"name": "g", "arguments": {}}'
    _, reply = run(tok, spelled(tok, "<h>", "to=g", "<m>", body, "<e>"), reply_format=fmt, tools={})
    assert reply.tool_calls[0].status is ToolCallStatus.UNKNOWN_TOOL


def test_each_state_has_its_own_trigger(tok: Tokenizer) -> None:
    tags: tuple[tuple[State, str, State], ...] = (
        ("text", "[CALL]", "tool_call"),
        ("tool_call", "<end>", "text"),
    )
    fmt = ReplyFormat("triggers", tags, (), decode_hermes)
    body = json.dumps({"name": "f", "arguments": {"a": "[x]"}})
    ids = spelled(tok, "a <b> [", "CALL", "]", body, "<", "end>", "[c]")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, reply_format=fmt)
        check_invariants(tok, ids, events)
        assert reply.content == "a <b> [c]"
        assert reply.tool_calls[0].arguments == {"a": "[x]"}


def test_call_ids_come_from_the_decoder_or_the_header(tok: Tokenizer) -> None:
    # A decoder's call ID (Hermes JSON with Mistral's "id").
    body = json.dumps({"name": "f", "arguments": {}, "id": "a1b2c3d4e"})
    ids = spelled(tok, "<tool_call>", body, "</tool_call>")
    _, reply = run(tok, ids, tool_format="hermes")
    assert reply.tool_calls[0].call_id == "a1b2c3d4e" and reply.tool_calls[0].ok
    _, reply = run(tok, spelled(tok, "<tool_call>", '{"name": "f"}', "</tool_call>"))
    assert reply.tool_calls[0].call_id is None

    # A router's call ID wins over the decoder's, and a cut call keeps it.
    def route(header: str) -> tuple[State, str | None, str | None]:
        name, _, call_id = header.removeprefix("<h>").partition("#")
        return "tool_call", name, call_id or None

    fmt = ReplyFormat(
        "ids", HEADERS, ("<|im_end|>",), decode_hermes, call_body="json", route_header=route
    )
    ids = spelled(tok, "<h>", "f#c1", "<m>", '{"name": "x", "id": "no"}', "<e>")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, reply_format=fmt)
        check_invariants(tok, ids, events)
        (call,) = reply.tool_calls
        assert (call.name, call.call_id, call.ok) == ("f", "c1", True)
    _, reply = run(tok, ids[:-2], reply_format=fmt)
    assert reply.tool_calls[0].status is ToolCallStatus.UNTERMINATED
    assert reply.tool_calls[0].call_id == "c1"


def _decode_list(body: str, tools: object) -> list[DecodedCall]:
    out = []
    for part in body.strip().removeprefix("[").removesuffix("]").split(";"):
        name, _, arg = part.strip().partition("=")
        ok = ToolCallStatus.OK if name else ToolCallStatus.MALFORMED
        out.append(DecodedCall(name or None, {"v": arg}, ok, None, raw=part.strip()))
    return out


def test_a_body_of_several_calls_hands_them_out_together(tok: Tokenizer) -> None:
    tags: tuple[tuple[State, str, State], ...] = (("calls", "[", "tool_call"),)
    fmt = ReplyFormat(
        "lists",
        tags,
        ("<|im_end|>",),
        decode_calls=_decode_list,
        call_end="python",
        body_tags=frozenset({"["}),
        initial="calls",
    )
    ids = spelled(tok, " ", "[f=1; g='a]' ;h=", "(2)]", " then text", "<|im_end|>")
    for via in FEEDS:
        events, reply = run(tok, ids, via=via, reply_format=fmt)
        check_invariants(tok, ids, events)
        assert [(c.index, c.name, c.raw) for c in reply.tool_calls] == [
            (0, "f", "f=1"),
            (1, "g", "g='a]'"),
            (2, "h", "h=(2)"),
        ]
        # One segment, shared by the three calls; they come right after it.
        assert [s.kind for s in reply.segments] == ["framing", "tool_call", "text", "stop"]
        seg = reply.segments[1]
        assert all(c.ids.tolist() == seg.ids.tolist() for c in reply.tool_calls)
        assert seg.tool_call == 0 and reply.content == " then text"
        kinds = [type(e).__name__ for e in events if type(e).__name__ != "TextDelta"]
        assert kinds[kinds.index("ToolCallOpened") :][:5] == [
            "ToolCallOpened",
            "ReplySegment",
            "ToolCall",
            "ToolCall",
            "ToolCall",
        ]
    # Cut inside the list: one unterminated call with the raw text so far.
    cut_at = len(spelled(tok, " ", "[f=1; g='a]' ;h="))
    _, reply = run(tok, ids[:cut_at], reply_format=fmt)
    (call,) = reply.tool_calls
    assert call.status is ToolCallStatus.UNTERMINATED and call.raw == "[f=1; g='a]' ;h="
    # A list with no call at all is reported, not dropped.
    _, reply = run(tok, spelled(tok, "[", "]"), reply_format=fmt)
    assert [c.status for c in reply.tool_calls] == [ToolCallStatus.MALFORMED]
    with pytest.raises(ValueError, match="decode_call or decode_calls"):
        ReplyFormat("both", tags, (), decode_hermes, decode_calls=_decode_list, call_end="python")
