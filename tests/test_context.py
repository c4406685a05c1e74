"""The context tree: exact IDs, generation mask, logprobs, reply building, JSON."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokstream import Context, ContextError, Done, Error, ProtocolError, Tokenizer

from .parser_helpers import spelled

IM_START, IM_END, ENDOFTEXT, NL = 151644, 151645, 151643, 198
TOOL_CALL, TOOL_CALL_END, THINK, THINK_END = 151657, 151658, 151667, 151668
# The forced Hermes reply from tests/data/forced_hermes.expected.txt, then the EOS.
HERMES = [
    151667, 198, 10393, 198, 151668, 198, 9707, 220, 151657, 198, 4913, 606, 788, 330, 455,
    69364, 497, 330, 16370, 788, 5212, 8926, 788, 330, 59604, 95642, 151658,
]  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def done(ids: list[int], logprobs: list[float] | None = None) -> Done:
    lp = None if logprobs is None else np.array(logprobs, dtype=np.float32)
    return Done(finish_reason="stop", token_ids=np.array(ids, dtype=np.int32), logprobs=lp)


def started(tok: Tokenizer) -> Context:
    ctx = Context(tok)
    ctx.add_system("You are terse.", tools=TOOLS)
    ctx.add_user("What is the weather in Paris?")
    return ctx


def test_recorded_prompt_is_reproduced(tok: Tokenizer, data_dir: Path) -> None:
    """The prompt vLLM echoed in forced_hermes.sse is exactly user + generation prompt."""
    first = (data_dir / "forced_hermes.sse").read_text().split("\n\n")[0]
    echoed = json.loads(first.removeprefix("data: "))["choices"][0]["prompt_token_ids"]
    ctx = Context(tok)
    ctx.add_user("What is the weather in Paris?")
    ctx.begin_assistant()
    assert ctx.prompt_ids().tolist() == echoed


def test_append_reply_verbatim_with_mask_and_logprobs(tok: Tokenizer) -> None:
    ctx = started(tok)
    ctx.begin_assistant()
    n_prompt = len(ctx)
    ids = [*HERMES, IM_END]
    lps = [-(i % 7) / 8 for i in range(len(ids))]
    msg = ctx.append_reply(done(ids, lps))

    prompt, mask, lp = ctx.prompt_ids(), ctx.generation_mask(), ctx.logprobs()
    assert prompt.dtype == np.int32 and mask.dtype == np.bool_ and lp.dtype == np.float32
    assert len(prompt) == len(mask) == len(lp) == n_prompt + len(ids) + 1
    assert prompt[mask].tolist() == ids
    assert np.flatnonzero(mask).tolist() == list(range(n_prompt, n_prompt + len(ids)))
    assert lp[mask].tolist() == np.array(lps, dtype=np.float32).tolist()
    assert np.isnan(lp[~mask]).all()
    # The sampled <|im_end|> is kept; the close adds only "\n": no duplicate.
    assert prompt[-2:].tolist() == [IM_END, NL]
    assert prompt[n_prompt:].tolist().count(IM_END) == 1
    kinds = [(leaf.kind, leaf.sampled) for leaf in msg.leaves]
    assert kinds == [
        ("framing", False),
        ("thinking", True),
        ("text", True),
        ("tool_call", True),
        ("stop", True),
        ("framing", False),
    ]
    assert msg.sampled_ids.tolist() == ids
    assert msg.leaves[1].text == "<think>\nplan\n</think>"
    assert (
        msg.leaves[3].text.startswith("<tool_call>\n{") and msg.leaves[3].ids[-1] == TOOL_CALL_END
    )


@pytest.mark.parametrize(
    ("last", "close"),
    [
        (IM_END, [NL]),
        (TOOL_CALL_END, [IM_END, NL]),  # stop_token_ids=[</tool_call>]
        (ENDOFTEXT, [IM_END, NL]),  # EOS from generation_config, kept as sampled
        (9707, [IM_END, NL]),  # finish_reason "length"
    ],
)
def test_turn_close_framing(tok: Tokenizer, last: int, close: list[int]) -> None:
    ctx = started(tok)
    ctx.begin_assistant()
    ctx.append_reply([9707, last])
    assert ctx.prompt_ids()[-2 - len(close) :].tolist() == [9707, last, *close]
    assert ctx.generation_mask()[-len(close) :].tolist() == [False] * len(close)


def test_append_reply_from_error_event_and_empty(tok: Tokenizer) -> None:
    ctx = started(tok)
    ctx.begin_assistant()
    err = Error(ProtocolError("cut"), token_ids=np.array([9707, 1879], dtype=np.int32))
    ctx.append_reply(err)
    assert ctx.prompt_ids()[-4:].tolist() == [9707, 1879, IM_END, NL]
    ctx.add_user("again")
    ctx.append_reply([])  # begins its own reply; nothing sampled
    assert ctx.prompt_ids()[-5:].tolist() == [IM_START, 77091, NL, IM_END, NL]
    assert not ctx.generation_mask()[-5:].any()


def test_views_are_read_only_and_never_change(tok: Tokenizer) -> None:
    ctx = started(tok)
    first = ctx.prompt_ids()
    snapshot = first.copy()
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1
    ctx.begin_assistant()
    ctx.append_reply([*HERMES, IM_END])
    ctx.add_tool("sunny")
    mid = ctx.prompt_ids()
    mid_copy = mid.copy()
    # The run's closing <|im_end|>\n is held, so the next result only appends.
    assert tok.decode(mid).endswith("<tool_response>\nsunny\n</tool_response>")
    ctx.add_tool("windy")
    assert np.array_equal(first, snapshot)
    assert np.array_equal(mid, mid_copy)
    assert np.array_equal(ctx.prompt_ids()[: len(mid)], mid)
    ctx.begin_assistant()
    assert tok.decode(ctx.prompt_ids()[len(mid) :]) == (
        "\n<tool_response>\nwindy\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert [leaf.text for leaf in ctx.messages[-2].leaves][-2:] == [
        "\n</tool_response>",
        "<|im_end|>\n",
    ]


def test_appends_never_recopy_the_history(tok: Tokenizer) -> None:
    """Issue 4 section 3: cost grows with the new tokens, not with the history.

    A turn loop reads the views between appends (the prompt it sends, the mask,
    leaf IDs) and adds runs of tool results, whose closing framing the template
    moves. No append may copy the buffer then; only doubling reallocates, and
    every array handed out keeps its values.
    """
    ctx = started(tok)
    handed: list[tuple[np.ndarray, np.ndarray]] = []
    prompts: list[np.ndarray] = []

    def read() -> None:
        views = [ctx.prompt_ids(), ctx.generation_mask(), ctx.logprobs()]
        views += [leaf.ids for leaf in ctx.messages[-1].leaves]
        handed.extend((v, v.copy()) for v in views)
        prompts.append(views[0])

    for i in range(150):
        ctx.begin_assistant(thinking=None if i % 2 else False)
        read()
        ctx.append_reply(done([*HERMES, IM_END], [-0.5] * (len(HERMES) + 1)))
        read()
        for j in range(1 + i % 4):
            ctx.add_tool(f"result {i}.{j}", name="get_weather")
            read()
        if i % 5 == 4:
            ctx.add_user(f"and then {i}?")
            read()
    n = len(ctx)
    assert n > 8 * 1024
    # Doubling from 1024: one buffer per doubling, not one per tool result.
    assert ctx._s.tape.allocations <= 1 + math.ceil(math.log2(n / 1024))
    for view, values in handed:
        assert np.array_equal(view, values, equal_nan=True)
    for a, b in itertools.pairwise(prompts):
        assert np.array_equal(b[: len(a)], a)  # each prompt extends the one before
    # One user turn per tool run (the template's merge), plus the user messages.
    assert tok.decode(ctx.prompt_ids()).count("<|im_start|>user") == 1 + 150 + 30


def test_discard_restores_the_held_close_and_a_retry_does_not_copy(tok: Tokenizer) -> None:
    ctx = started(tok)
    ctx.begin_assistant()
    ctx.append_reply([*HERMES, IM_END])
    ctx.add_tool("sunny")
    before = ctx.prompt_ids()
    reply = ctx.begin_assistant()
    sent = ctx.prompt_ids()
    assert tok.decode(sent[len(before) :]) == "<|im_end|>\n<|im_start|>assistant\n"
    reply.add_leaf("text", [9707, 1879])  # a stream that then failed
    reply.discard()
    assert np.array_equal(ctx.prompt_ids(), before)
    assert ctx.messages[-1].leaves[-1].text == "\n</tool_response>"
    allocations = ctx._s.tape.allocations
    # Retrying writes the same framing over what was sent: no copy needed.
    ctx.begin_assistant()
    assert np.array_equal(ctx.prompt_ids(), sent)
    ctx.append_reply([9707, IM_END])
    assert ctx._s.tape.allocations == allocations
    assert ctx.prompt_ids()[len(sent) :].tolist() == [9707, IM_END, NL]
    assert sent.tolist() == ctx.prompt_ids()[: len(sent)].tolist()

    # Discarded after a tool result, another result still joins the same run;
    # overwriting the sent framing copies the buffer, and what was sent stays.
    ctx.add_tool("one")
    first_run = ctx.prompt_ids()
    reply = ctx.begin_assistant()
    sent = ctx.prompt_ids()
    sent_values = sent.copy()
    reply.discard()
    ctx.add_tool("two")
    assert np.array_equal(sent, sent_values)
    assert np.array_equal(ctx.prompt_ids()[: len(first_run)], first_run)
    assert tok.decode(ctx.prompt_ids()[len(first_run) :]) == (
        "\n<tool_response>\ntwo\n</tool_response>"
    )


def test_non_canonical_reply_ids_reach_the_next_prompt_unchanged(tok: Tokenizer) -> None:
    """A model may sample a split re-encoding would not give; the next prompt keeps it."""
    ctx = started(tok)
    ctx.begin_assistant()
    ids = [
        *spelled(tok, "<think>\n", "pl", "an", "\n</think>\n\n", "Hel", "lo", " wor", "ld"),
        IM_END,
    ]
    assert tok.encode(tok.decode(ids)).tolist() != ids  # a re-encoding would differ
    start = len(ctx)
    msg = ctx.append_reply(done(ids))
    assert msg.text == "<|im_start|>assistant\n<think>\nplan\n</think>\n\nHello world<|im_end|>\n"
    ctx.add_user("more")
    back = Context.from_json(ctx.to_json(), tok)  # saved and resumed: still not re-encoded
    for c in (ctx, back):
        c.begin_assistant()
        prompt = c.prompt_ids()
        assert prompt[start : start + len(ids)].tolist() == ids
        mask = c.generation_mask()
        assert np.flatnonzero(mask).tolist() == list(range(start, start + len(ids)))


def test_growth_is_amortised_and_prompt_ids_is_a_view(tok: Tokenizer) -> None:
    ctx = Context(tok)
    buffers = set()
    for i in range(3000):
        ctx.add_user(f"message {i}")
        buffers.add(id(ctx._s.tape.ids))
    n = len(ctx)
    assert n > 20000
    # Doubling: a logarithmic number of reallocations, not one per append.
    assert len(buffers) <= math.ceil(math.log2(n / 1024)) + 1
    assert np.shares_memory(ctx.prompt_ids(), ctx._s.tape.ids)
    assert ctx.prompt_ids()[-4:].tolist() == tok.encode("999<|im_end|>\n").tolist()[-4:]


def test_reply_builder_grows_leaf_by_leaf(tok: Tokenizer) -> None:
    ctx = started(tok)
    reply = ctx.begin_assistant()
    assert ctx.current_reply is reply
    leaf = reply.add_leaf("text", [9707], "Hello", [-0.25])
    reply.extend_leaf(1879, " world", -0.5)
    reply.extend_leaf([0, 13], None)  # text derived from IDs
    assert leaf.ids.tolist() == [9707, 1879, 0, 13]
    assert leaf.text == "Hello world!."
    assert leaf.logprobs is not None
    assert leaf.logprobs[:2].tolist() == [-0.25, -0.5] and np.isnan(leaf.logprobs[2:]).all()
    reply.add_leaf("stop", IM_END)
    assert reply.sampled_ids.tolist() == [9707, 1879, 0, 13, IM_END]
    msg = reply.finish(done([9707, 1879, 0, 13, IM_END]))
    assert not reply.is_open and ctx.current_reply is None
    assert msg.leaves[-1].text == "\n"
    assert reply.sampled_ids.tolist() == [9707, 1879, 0, 13, IM_END]
    with pytest.raises(ContextError, match="closed"):
        reply.add_leaf("text", [1])


def test_finish_rejects_ids_that_differ_from_the_stream(tok: Tokenizer) -> None:
    ctx = started(tok)
    before = ctx.prompt_ids().copy()
    reply = ctx.begin_assistant()
    reply.add_leaf("text", [9707, 1879])
    with pytest.raises(ContextError, match="position 1") as info:
        reply.finish(done([9707, 220, IM_END]))
    assert "2 sampled IDs" in str(info.value)
    with pytest.raises(ContextError, match="position 2"):
        reply.finish([9707, 1879, IM_END])
    assert reply.is_open
    with pytest.raises(ContextError, match="reply is open"):
        ctx.add_user("no")
    during = ctx.prompt_ids()
    during_copy = during.copy()
    reply.discard()
    assert np.array_equal(ctx.prompt_ids(), before)
    assert ctx.messages[-1].role == "user"
    ctx.add_user("overwrites the discarded positions")
    assert np.array_equal(during, during_copy)  # handed-out views never change
    assert np.array_equal(ctx.prompt_ids()[: len(before)], before)


def test_reply_builder_misuse(tok: Tokenizer) -> None:
    ctx = started(tok)
    reply = ctx.begin_assistant()
    with pytest.raises(ContextError, match="add_leaf"):
        reply.extend_leaf(1)
    with pytest.raises(ContextError, match="unknown leaf kind"):
        reply.add_leaf("bogus", [1])  # type: ignore[arg-type]
    for bad in ([-1], [2**40], [[1, 2]], [1.5], np.array([3, -3], dtype=np.int32)):
        with pytest.raises(ContextError, match=r"integers in \[0, 2\*\*31\)"):
            reply.add_leaf("text", bad)
    with pytest.raises(ContextError, match="non-negative"):
        reply.add_leaf("text", -1)
    with pytest.raises(ContextError, match="one value per ID"):
        reply.add_leaf("text", [1, 2], logprobs=[0.0])
    with pytest.raises(ContextError, match="reply is open"):
        ctx.begin_assistant()
    with pytest.raises(ContextError, match="reply is open"):
        ctx.to_json()
    reply.add_leaf("text", [1])
    with pytest.raises(ContextError, match="before the first sampled leaf"):
        reply.add_prompt("x")
    with pytest.raises(ContextError, match="already has sampled leaves"):
        ctx.append_reply([1])


def test_prefill_is_prompt_not_generation(tok: Tokenizer) -> None:
    ctx = started(tok)
    reply = ctx.begin_assistant()
    reply.add_prompt("<think>\n", kind="thinking")
    n = len(ctx)
    assert ctx.prompt_ids()[-2:].tolist() == [THINK, NL]
    ctx.append_reply([10393, 198, THINK_END, IM_END])
    assert np.flatnonzero(ctx.generation_mask()).tolist() == list(range(n, n + 4))
    kinds = [leaf.kind for leaf in ctx.messages[-1].leaves if leaf.sampled]
    assert kinds == ["thinking", "stop"]  # </think> closes the thinking the prompt opened


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_leaf_building_equals_append_reply(tok: Tokenizer, data: st.DataObject) -> None:
    ids = [*HERMES, IM_END]
    lps = [-(i % 5) / 4 for i in range(len(ids))]
    whole = started(tok)
    whole.append_reply(done(ids, lps))

    ctx = started(tok)
    reply = ctx.begin_assistant()
    i = 0
    kinds = st.sampled_from(["thinking", "text", "tool_call", "stop"])
    while i < len(ids):
        k = data.draw(st.integers(1, len(ids) - i))
        chunk = ids[i : i + k]
        if i == 0 or data.draw(st.booleans()):
            reply.add_leaf(data.draw(kinds), chunk, None, lps[i : i + k])
        elif k == 1:
            reply.extend_leaf(chunk[0], None, lps[i])
        else:
            reply.extend_leaf(chunk, None, lps[i : i + k])
        i += k
    reply.finish(done(ids, lps))
    assert np.array_equal(ctx.prompt_ids(), whole.prompt_ids())
    assert np.array_equal(ctx.generation_mask(), whole.generation_mask())
    assert np.array_equal(ctx.logprobs(), whole.logprobs(), equal_nan=True)
    leaves = [leaf for leaf in ctx.messages[-1].leaves if leaf.sampled]
    assert np.concatenate([leaf.ids for leaf in leaves]).tolist() == ids


def _conversation(tok: Tokenizer) -> Context:
    ctx = started(tok)
    ctx.begin_assistant()
    ctx.append_reply(done([*HERMES, IM_END], [0.0] * (len(HERMES) + 1)))
    ctx.add_tool('{"temp": 12, "sky": "☀"}', name="get_weather")
    reply = ctx.begin_assistant(thinking=False)
    reply.add_leaf("text", [9707], "Hello", [-1.5])
    reply.extend_leaf(1879, " world")  # no logprob for this one: NaN
    reply.add_leaf("stop", IM_END, "", [-0.125])
    reply.finish()
    return ctx


def test_json_round_trip_is_exact(tok: Tokenizer) -> None:
    ctx = _conversation(tok)
    saved = ctx.to_json()
    back = Context.from_json(saved, tok)
    assert back.to_json() == saved
    assert np.array_equal(back.prompt_ids(), ctx.prompt_ids())
    assert np.array_equal(back.generation_mask(), ctx.generation_mask())
    assert np.array_equal(back.logprobs(), ctx.logprobs(), equal_nan=True)
    assert [(m.role, m.name, m.content) for m in back.messages] == [
        (m.role, m.name, m.content) for m in ctx.messages
    ]
    for a, b in zip(back.messages, ctx.messages, strict=True):
        assert [(x.kind, x.text, x.sampled, x.span) for x in a.leaves] == [
            (x.kind, x.text, x.sampled, x.span) for x in b.leaves
        ]
    # Resuming continues exactly as the original would, tool-run retraction included.
    for c in (ctx, back):
        c.add_tool("second result")
        c.add_user("thanks")
        c.append_reply([9707, IM_END])
    assert np.array_equal(back.prompt_ids(), ctx.prompt_ids())
    assert back.to_json() == ctx.to_json()


def test_json_keeps_a_held_close_and_reads_saves_without_one(tok: Tokenizer) -> None:
    ctx = _conversation(tok)
    ctx.add_tool("first")
    saved = ctx.to_dict()
    assert [c["text"] for c in saved["close"]] == ["<|im_end|>\n"]
    # A save with the close written into the last message (no "close" key).
    closed = json.loads(json.dumps(saved))
    del closed["close"]
    closed["messages"][-1]["leaves"].append(
        {**saved["close"][0], "sampled": False, "logprobs": None}
    )
    back, legacy = Context.from_dict(saved, tok), Context.from_dict(closed, tok)
    assert np.array_equal(back.prompt_ids(), ctx.prompt_ids())
    assert tok.decode(legacy.prompt_ids()[len(ctx) :]) == "<|im_end|>\n"
    for c in (ctx, back, legacy):
        c.add_tool("second")  # joins the run: the close is dropped, held or written
        c.begin_assistant()
    assert np.array_equal(back.prompt_ids(), ctx.prompt_ids())
    assert np.array_equal(legacy.prompt_ids(), ctx.prompt_ids())
    assert tok.decode(ctx.prompt_ids()).count("<|im_end|>\n<|im_start|>assistant\n") == 3


def test_json_errors(tok: Tokenizer) -> None:
    saved: dict[str, Any] = _conversation(tok).to_dict()
    with pytest.raises(ContextError, match="invalid JSON"):
        Context.from_json("{nope", tok)
    with pytest.raises(ContextError, match="version"):
        Context.from_dict({**saved, "version": 99}, tok)
    with pytest.raises(ValueError, match="unknown chat format 'other'"):
        Context.from_dict({**saved, "chat_format": "other"}, tok)
    bad = json.loads(json.dumps(saved))
    bad["messages"][0]["leaves"][0]["kind"] = "weird"
    with pytest.raises(ContextError, match="unknown leaf kind"):
        Context.from_dict(bad, tok)
    bad = json.loads(json.dumps(saved))
    del bad["messages"][1]["leaves"][0]["ids"]
    with pytest.raises(ContextError, match="missing or bad field"):
        Context.from_dict(bad, tok)
    bad = json.loads(json.dumps(saved))
    bad["messages"][2]["leaves"][1]["logprobs"] = [0.0]
    with pytest.raises(ContextError, match="one value per ID"):
        Context.from_dict(bad, tok)
    bad = {**saved, "close": [{"kind": "text", "text": "x", "ids": [87]}]}
    with pytest.raises(ContextError, match="bad closing framing"):
        Context.from_dict(bad, tok)
    with pytest.raises(ContextError, match="closing framing without a message"):
        Context.from_dict(
            {**saved, "messages": [], "close": [{**bad["close"][0], "kind": "framing"}]}, tok
        )
