"""Live: a multi-turn, tool-calling conversation kept token-exact against the CPU vLLM.

Five assistant turns, each forced to exact token IDs with a structured-output
grammar (the tiny model's weights are random), interleaved with tool results and
user messages. On every request the server's echoed ``prompt_token_ids`` must
equal ``Context.prompt_ids()``; every sampled ID must reappear, unchanged and in
place, in the next prompt; ``generation_mask()`` must cover exactly the sampled
IDs and ``logprobs()`` must carry the server's logprobs there. Two replies are
forced with a non-canonical token split, so a context that re-encoded model
output from its text would send other IDs and fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import tokstream
from tokstream import Context, Done, Tokenizer
from tokstream.testing import forcing_body

if TYPE_CHECKING:
    from tokstream.chat import LeafKind
    from tokstream.testing import VLLMServer

pytestmark = pytest.mark.vllm

IM_END = 151645
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multi_turn.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("multi_turn_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# The script (system prompt with tools, 5 forced replies, tool results, user
# follow-ups) is the example's, so the test and the example force the same IDs.
example = _load_example()


async def _stream(client: tokstream.Client, prompt: np.ndarray, **kw: Any) -> Done:
    final = None
    ids: list[int] = []
    async with client.stream(prompt, temperature=0.0, top_p=1.0, logprobs=0, **kw) as events:
        async for ev in events:
            if isinstance(ev, tokstream.Token):
                ids.append(ev.id)
            elif isinstance(ev, tokstream.Error):
                ev.reraise()
            else:
                final = ev
    assert isinstance(final, Done)
    assert final.token_ids.tolist() == ids
    return final


def _grow_token_by_token(ctx: Context, tok: Tokenizer, done: Done, thinking: bool | None) -> None:
    """Build the reply leaf by leaf, as the response parser does, then finish(done)."""
    opens: dict[int, LeafKind] = {151667: "thinking", 151657: "tool_call"}
    closes = {151668, 151658}
    reply = ctx.current_reply or ctx.begin_assistant(thinking=thinking)
    detok = tok.detokenizer()
    state: LeafKind = "text"
    current: LeafKind | None = None  # kind of the leaf being extended; None: start a new one
    assert done.logprobs is not None
    for i, lp in zip(done.token_ids.tolist(), done.logprobs.tolist(), strict=True):
        text = detok.feed(i)
        if i == IM_END:
            want: LeafKind = "stop"
        else:
            state = opens.get(i, state)
            want = state
        if want != current:
            reply.add_leaf(want, i, text, lp)
            current = want
        else:
            reply.extend_leaf(i, text, lp)
        if i in closes:
            state, current = "text", None
    assert detok.flush() == ""
    reply.finish(done)


async def test_five_turn_conversation_is_token_exact(
    vllm_server: VLLMServer, tiny_model_dir: Path
) -> None:
    tok = Tokenizer.load(tiny_model_dir)
    ctx = Context(tok)
    ctx.add_system(example.SYSTEM, tools=example.TOOLS)
    ctx.add_user(example.FIRST_USER)
    sampled: list[tuple[int, list[int]]] = []  # (start in the prompt, ids)
    all_lps: list[float] = []
    assert len(example.SCRIPT) == 5
    non_canonical: list[tuple[int, list[int]]] = []  # sampled, unlike encode(decode(ids))
    echoed_non_canonical = 0  # how often the server echoed such a reply back

    def check_echoed(echoed: list[int]) -> None:
        """Every earlier reply is in the echoed prompt, unchanged, where it was put."""
        nonlocal echoed_non_canonical
        for start, ids in sampled:
            assert echoed[start : start + len(ids)] == ids
        echoed_non_canonical += sum(
            echoed[start : start + len(ids)] == ids for start, ids in non_canonical
        )

    async with tokstream.Client(vllm_server.base_url, model=vllm_server.model) as client:
        for number, turn in enumerate(example.SCRIPT):
            ctx.begin_assistant(thinking=turn.thinking)
            prompt = ctx.prompt_ids()
            sent = prompt.copy()
            forced = turn.ids(tok)
            max_tokens = len(forced) - 3 if turn.cut else len(forced) + 4
            done = await _stream(
                client, prompt, max_tokens=max_tokens, extra_body=forcing_body(forced)
            )
            # The server saw exactly the context.
            assert done.prompt_token_ids is not None
            assert done.prompt_token_ids.tolist() == sent.tolist(), f"turn {number}"
            check_echoed(done.prompt_token_ids.tolist())
            want = forced[:max_tokens] if turn.cut else [*forced, IM_END]
            assert done.token_ids.tolist() == want
            assert done.finish_reason == ("length" if turn.cut else "stop")
            assert done.logprobs is not None and done.logprobs.shape == done.token_ids.shape

            start = len(ctx)
            if number % 2:
                _grow_token_by_token(ctx, tok, done, turn.thinking)
            else:
                ctx.append_reply(done)
            sampled.append((start, done.token_ids.tolist()))
            if not isinstance(turn.reply, str):
                text_ids = forced[:max_tokens] if turn.cut else forced
                assert tok.encode(tok.decode(text_ids)).tolist() != text_ids, f"turn {number}"
                non_canonical.append(sampled[-1])
            all_lps += done.logprobs.tolist()
            msg = ctx.messages[-1]
            assert msg.sampled_ids.tolist() == done.token_ids.tolist()
            if turn.cut:  # no EOS was sampled: the close adds <|im_end|>\n
                assert ctx.prompt_ids()[-3:].tolist() == [want[-1], IM_END, 198]
            else:  # only "\n" after the sampled <|im_end|>: no duplicate
                assert ctx.prompt_ids()[-3:].tolist() == [want[-2], IM_END, 198]

            for result in turn.tool_results:
                ctx.add_tool(result, name="get_weather")
            if turn.user is not None:
                ctx.add_user(turn.user)

            mask = ctx.generation_mask()
            expect = np.zeros(len(ctx), dtype=bool)
            for s, ids in sampled:
                expect[s : s + len(ids)] = True
            assert np.array_equal(mask, expect)
            assert ctx.prompt_ids()[mask].tolist() == [i for _, ids in sampled for i in ids]
            assert np.array_equal(ctx.logprobs()[mask], np.array(all_lps, dtype=np.float32))
            assert np.isnan(ctx.logprobs()[~mask]).all()

        # One more request proves the last reply went into the prompt unchanged.
        reply = ctx.begin_assistant()
        final = await _stream(client, ctx.prompt_ids(), max_tokens=1)
        assert final.prompt_token_ids is not None
        assert final.prompt_token_ids.tolist() == ctx.prompt_ids().tolist()
        check_echoed(final.prompt_token_ids.tolist())
        reply.discard()
    # Both non-canonical replies came back verbatim in every later prompt
    # (turn 2's in the prompts of turns 3-5 and the final one; turn 5's in the final).
    assert len(non_canonical) == 2
    assert echoed_non_canonical == 4 + 1

    # The tree saved and resumed gives the same prompt and mask.
    back = Context.from_json(ctx.to_json(), tok)
    assert np.array_equal(back.prompt_ids(), ctx.prompt_ids())
    assert np.array_equal(back.generation_mask(), ctx.generation_mask())
    kinds = [leaf.kind for m in ctx.messages if m.role == "assistant" for leaf in m.leaves]
    assert kinds.count("tool_call") == 3 and kinds.count("thinking") == 3
