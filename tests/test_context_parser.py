"""The context tree and the response parser share one reply splitter.

``Context.append_reply`` splits a finished reply by running the parser in
ID-only mode with the chat format's reply table, so a reply appended whole gets
exactly the leaves the same reply gets while it streams; and the parser starts
in the state the prompt (generation prompt, prefill) left the reply in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokstream import Context, ContextError, Done, Tokenizer
from tokstream.chat import QwenFormat, Rendering, Role, Segment
from tokstream.core.parser import ReplySegment

from .parser_helpers import leaves

IM_END, TOOL_CALL, THINK, THINK_END = 151645, 151657, 151667, 151668


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def hermes(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def streamed_leaves(ctx: Context, ids: list[int]) -> list[tuple[str, list[int], str]]:
    """Grow the open reply token by token from the parser's segment events."""
    reply = ctx.current_reply or ctx.begin_assistant()
    parser = reply.new_parser()
    for i in ids:
        for ev in parser.feed_ids([i]):
            if isinstance(ev, ReplySegment):
                reply.add_segment(ev)
    for ev in parser.finish():
        if isinstance(ev, ReplySegment):
            reply.add_segment(ev)
    reply.finish(ids)
    return leaves(ctx)


_FRAGMENTS = [
    "Hello there. ",
    "a < b ",
    "<think>\nreason <x>\n</think>\n\n",
    hermes("get_weather", {"city": "Paris"}),
    '<tool_call>\n{"name": bad json}\n</tool_call>',
    "<tool_call>\n",  # a call cut by the next one
    "</think>",
    "</tool_call>",
    "🫠 é ",
    "<|im_end|>",
]


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frags=st.lists(st.sampled_from(_FRAGMENTS), max_size=6), thinking=st.sampled_from([None, False])
)
def test_append_reply_gives_the_streamed_leaves(
    tok: Tokenizer, frags: list[str], thinking: bool | None
) -> None:
    ids = tok.encode("".join(frags)).tolist()  # tags are their special IDs
    whole, streamed = Context(tok), Context(tok)
    for c in (whole, streamed):
        c.add_user("q")
        c.begin_assistant(thinking=thinking)
    whole.append_reply(ids)
    assert leaves(whole) == streamed_leaves(streamed, ids)
    assert np.array_equal(whole.prompt_ids(), streamed.prompt_ids())
    assert [leaf.text for leaf in whole.messages[-1].leaves] == [
        leaf.text for leaf in streamed.messages[-1].leaves
    ]


def test_a_call_cut_by_the_next_call_is_two_leaves(tok: Tokenizer) -> None:
    # The old ID splitter kept one tool_call leaf across a second <tool_call>;
    # the parser (and so the stream) closes the first call there, unterminated.
    ids = tok.encode('<tool_call>\n{"name": "a"' + hermes("b", {}) + "<|im_end|>").tolist()
    ctx = Context(tok)
    ctx.add_user("q")
    ctx.append_reply(ids)
    kinds = [(kind, got[0]) for kind, got, _ in leaves(ctx)]
    assert kinds == [("tool_call", TOOL_CALL), ("tool_call", TOOL_CALL), ("stop", IM_END)]


def test_append_reply_keeps_logprobs_per_leaf(tok: Tokenizer) -> None:
    ids = tok.encode("<think>\nx\n</think>\n\nHi" + hermes("f", {}) + "<|im_end|>").tolist()
    lps = [-0.25 * (k % 4) for k in range(len(ids))]
    ctx = Context(tok)
    ctx.add_user("q")
    done = Done("stop", token_ids=np.array(ids, dtype=np.int32), logprobs=np.array(lps))
    msg = ctx.append_reply(done)
    sampled = [leaf for leaf in msg.leaves if leaf.sampled]
    assert [leaf.kind for leaf in sampled] == ["thinking", "text", "tool_call", "stop"]
    got = np.concatenate([leaf.logprobs for leaf in sampled if leaf.logprobs is not None])
    assert got.tolist() == pytest.approx(lps)


class _ThinkingFirst(QwenFormat):
    """A template that starts every reply inside <think> (as Qwen3 "thinking" models do)."""

    def generation_prompt(
        self, *, thinking: bool | None, prev_role: Role | None = None
    ) -> Rendering:
        base = super().generation_prompt(thinking=thinking, prev_role=prev_role)
        if thinking is False:
            return base
        return Rendering((*base.segments, Segment("framing", "<think>\n")))


def test_a_generation_prompt_that_opens_thinking_starts_the_parser_inside(
    tok: Tokenizer,
) -> None:
    reply_ids = tok.encode("plan\n</think>\n\nAnswer.<|im_end|>").tolist()
    assert reply_ids.count(THINK) == 0 and THINK_END in reply_ids
    for thinking, kinds in ((None, ["thinking", "text", "stop"]), (False, ["text", "stop"])):
        whole, streamed = Context(tok, _ThinkingFirst(tok)), Context(tok, _ThinkingFirst(tok))
        for c in (whole, streamed):
            c.add_user("q")
            c.begin_assistant(thinking=thinking)
        parser = streamed.current_reply.new_parser()  # type: ignore[union-attr]
        assert parser.state == ("thinking" if thinking is None else "text")
        whole.append_reply(reply_ids)
        assert [k for k, _, _ in leaves(whole)] == kinds
        assert leaves(whole) == streamed_leaves(streamed, reply_ids)
    # The same reply under a prompt that opened nothing: </think> is content.
    plain = Context(tok)
    plain.add_user("q")
    plain.append_reply(reply_ids)
    assert [k for k, _, _ in leaves(plain)] == ["text", "stop"]


def test_a_prefill_that_closes_its_thinking_starts_in_text(tok: Tokenizer) -> None:
    ctx = Context(tok)
    ctx.add_user("q")
    reply = ctx.begin_assistant()
    reply.add_prompt("<think>\nshort\n</think>\n\n", kind="thinking")
    assert reply.new_parser().state == "text"
    ctx.append_reply(tok.encode("x</think>y<|im_end|>"))
    assert [k for k, _, _ in leaves(ctx)] == ["text", "stop"]


def test_new_parser_needs_an_open_reply_without_sampled_leaves(tok: Tokenizer) -> None:
    ctx = Context(tok)
    ctx.add_user("q")
    reply = ctx.begin_assistant()
    assert ctx.current_reply is reply
    reply.add_leaf("text", [9707])
    with pytest.raises(ContextError, match="before the first sampled leaf"):
        reply.new_parser()
    reply.finish()
    assert ctx.current_reply is None
    with pytest.raises(ContextError, match="closed"):
        reply.new_parser()
