"""Kimi K2, GLM-4.5, MiniMax M2 and DeepSeek V3.1 framing == their chat templates, token for token.

The references are the families' own jinja chat templates, stored verbatim under
``tests/data/templates/`` (each file's header names its source and commit),
rendered with jinja2 as Hugging Face transformers renders them (sandboxed,
``trim_blocks`` / ``lstrip_blocks``, ``loopcontrols``, ``tojson`` =
``json.dumps(ensure_ascii=False)``), then encoded whole with the family's
tokenizer (DeepSeek's real V3.1 vocabulary; the kit's test tokenizers for the
others). tokstream renders message by message; every step of a conversation
with tools, tool results, reasoning and sampled replies must give the
template's IDs wherever the template is append-only. Where it is not, the
tests pin what tokstream does instead (each format's module docstring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2.ext
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokstream import Context, InvalidRequest, Tokenizer
from tokstream.chat import DeepSeekV31Format, GLM45Format, KimiK2Format, MiniMaxM2Format

from .families import load_family

TEMPLATES = Path(__file__).parent / "data" / "templates"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city, 天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    },
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
]


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def load_template(name: str) -> Any:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string((TEMPLATES / name).read_text(encoding="utf-8"))


def same(ctx: Context, want: Any) -> bool:
    return bool(np.array_equal(ctx.prompt_ids(), np.asarray(want, dtype=np.int32)))


def append_sampled(ctx: Context, sampled: list[int]) -> None:
    """Append a reply's IDs as if they streamed (the open reply, or a new one)."""
    ctx.append_reply(np.asarray(sampled, dtype=np.int32))


def call(call_id: str, name: str, args: dict[str, Any], *, text: bool = False) -> dict[str, Any]:
    arguments: Any = json.dumps(args, ensure_ascii=False) if text else args
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- Kimi K2 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kimi(vllm_home: Path) -> tuple[Tokenizer, Any]:
    return load_family("kimi-k2", vllm_home), load_template("kimi_k2_thinking.jinja")


def test_kimi_tool_loop_matches_the_template(kimi: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = kimi

    def ref(msgs: list[dict[str, Any]], **kw: Any) -> Any:
        return tok.encode(tmpl.render(messages=msgs, tools=TOOLS, **kw))

    ctx = Context(tok)
    assert isinstance(ctx.chat_format, KimiK2Format)
    ctx.add_system("Use tools. 天气?", tools=TOOLS)
    ctx.add_user("Weather in Paris?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "Use tools. 天气?"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert same(ctx, ref(msgs))
    calls = [
        call("functions.get_weather:0", "get_weather", {"city": "Paris"}),
        call("functions.noop:1", "noop", {}),
    ]
    ctx.add_assistant("Checking.", reasoning="Two calls.", tool_calls=calls)
    msgs.append(
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Two calls.",
            "tool_calls": calls,
        }
    )
    assert same(ctx, ref(msgs))
    ctx.add_tool('{"temp": 21}', name="get_weather", call_id="functions.get_weather:0")
    ctx.add_tool("ok", call_id="functions.noop:1")
    msgs += [
        {
            "role": "tool",
            "name": "get_weather",
            "content": '{"temp": 21}',
            "tool_call_id": "functions.get_weather:0",
        },
        {"role": "tool", "content": "ok", "tool_call_id": "functions.noop:1"},
    ]
    assert same(ctx, ref(msgs))
    ctx.begin_assistant()
    prompt = ref(msgs, add_generation_prompt=True)
    assert same(ctx, prompt)
    # A sampled reply that calls again, with reasoning: as the template renders it.
    again = [call("functions.get_weather:2", "get_weather", {"city": "東京", "days": 2})]
    msgs.append(
        {"role": "assistant", "content": "", "reasoning_content": "Tokyo too.", "tool_calls": again}
    )
    full = ref(msgs)
    append_sampled(ctx, full[len(prompt) :].tolist())
    assert same(ctx, full)
    done = ctx.messages[-1]
    kinds = [leaf.kind for leaf in done.leaves if leaf.sampled]
    assert kinds == ["thinking", "framing", "tool_call", "framing", "stop"]


def test_kimi_final_answers_drop_reasoning_tokstream_keeps_it(kimi: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = kimi
    ctx = Context(tok)  # no system message: Kimi's default comes first
    ctx.add_user("Hi")
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
    assert same(ctx, tok.encode(tmpl.render(messages=msgs)))
    ctx.add_assistant("Hello!", reasoning="greet")  # a final answer: empty think block
    msgs.append({"role": "assistant", "content": "Hello!", "reasoning_content": "greet"})
    assert same(ctx, tok.encode(tmpl.render(messages=msgs)))
    ctx.begin_assistant()
    prompt = ctx.prompt_ids().tolist()
    sampled = tok.encode("<think>thinking it over</think>Bye!<|im_end|>").tolist()
    append_sampled(ctx, sampled)
    msgs.append({"role": "assistant", "content": "Bye!", "reasoning_content": "thinking it over"})
    # The template empties a final answer's think block; the sampled one is kept.
    theirs = tok.encode(tmpl.render(messages=msgs)).tolist()
    assert ctx.prompt_ids().tolist() == prompt + sampled
    assert theirs == prompt + tok.encode("<think></think>Bye!<|im_end|>").tolist()
    with pytest.raises(InvalidRequest, match="call_id"):
        ctx.add_tool("r")
    with pytest.raises(InvalidRequest, match=r"needs its id"):
        ctx.add_assistant("", tool_calls=[{"name": "noop", "arguments": {}}])


# -- GLM-4.5 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glm(vllm_home: Path) -> tuple[Tokenizer, Any]:
    return load_family("glm-4.5", vllm_home), load_template("glm_4_6.jinja")


def test_glm_tool_loop_matches_the_template(glm: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = glm

    def ref(msgs: list[dict[str, Any]], **kw: Any) -> Any:
        return tok.encode(tmpl.render(messages=msgs, tools=TOOLS, **kw))

    ctx = Context(tok)
    assert isinstance(ctx.chat_format, GLM45Format)
    ctx.add_system("Be brief.", tools=TOOLS)
    ctx.add_user("Weather in Paris and Zürich?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Zürich?"},
    ]
    assert same(ctx, ref(msgs))
    calls = [
        call("a", "get_weather", {"city": "Paris", "days": 3}),
        call("b", "get_weather", {"city": "Zürich"}),
    ]
    ctx.add_assistant("Checking both.", reasoning="Two cities.", tool_calls=calls)
    msgs.append(
        {
            "role": "assistant",
            "content": "Checking both.",
            "reasoning_content": "Two cities.",
            "tool_calls": calls,
        }
    )
    assert same(ctx, ref(msgs))
    for result in ("rain", "sun"):
        ctx.add_tool(result, name="get_weather")
        msgs.append({"role": "tool", "content": result})
        assert same(ctx, ref(msgs))
    ctx.begin_assistant()
    prompt = ref(msgs, add_generation_prompt=True)
    assert same(ctx, prompt)
    # A sampled reply that calls a tool ends with <|observation|>: the tool
    # message's opening, which the context does not write again.
    again = [call("c", "noop", {})]
    msgs.append(
        {"role": "assistant", "content": "", "reasoning_content": "More.", "tool_calls": again}
    )
    msgs.append({"role": "tool", "content": "done"})
    full = ref(msgs)
    observation = tok.token_id("<|observation|>")
    stop = full.tolist().index(observation, len(prompt))
    append_sampled(ctx, full[len(prompt) : stop + 1].tolist())
    assert ctx.messages[-1].leaves[-1].text == "<|observation|>"
    ctx.add_tool("done")
    assert same(ctx, full)
    # A user message after a reply that ended with <|user|> starts after it.
    ctx.begin_assistant()
    prompt = ref(msgs, add_generation_prompt=True)
    assert same(ctx, prompt)
    msgs.append({"role": "assistant", "content": "Rain, then sun."})
    sampled = [*ref(msgs)[len(prompt) :].tolist(), tok.token_id("<|user|>")]
    append_sampled(ctx, sampled)
    ctx.add_user("Ok")
    msgs.append({"role": "user", "content": "Ok"})
    full = ref(msgs)
    # The template now empties every earlier think block; tokstream keeps them.
    ours, theirs = ctx.prompt_ids().tolist(), full.tolist()
    assert tok.decode(ours).replace("<think>Two cities.</think>", "<think></think>").replace(
        "<think>More.</think>", "<think></think>"
    ) == tok.decode(theirs)


def test_glm_thinking_off_prompt(glm: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = glm
    ctx = Context(tok)
    ctx.add_user("Quick one /nothink")
    ctx.begin_assistant(thinking=False)
    msgs = [{"role": "user", "content": "Quick one /nothink"}]
    want = tmpl.render(messages=msgs, add_generation_prompt=True, enable_thinking=False)
    assert same(ctx, tok.encode(want))
    assert ctx.current_reply is not None
    assert ctx.current_reply.new_parser().state == "text"  # the prompt closed the block


# -- MiniMax M2 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minimax(vllm_home: Path) -> tuple[Tokenizer, Any]:
    return load_family("minimax-m2", vllm_home), load_template("minimax_m2_unsloth.jinja")


def _minimax_text(tmpl: Any, **kw: Any) -> str:
    """The template's text, without the one newline Unsloth's fixes add.

    The stored template is Unsloth's copy of MiniMax's: a comment it inserts
    after ``{{- toolcall_end_token}}`` keeps the newline before it, so an
    assistant message with calls ends ``</minimax:tool_call>\\n[e~[``; MiniMax's
    own template (its ``{%- set ... %}`` strips it) and the model write
    ``</minimax:tool_call>[e~[``. That newline is taken out here, and only it.
    """
    text: str = tmpl.render(**kw)
    return text.replace("</minimax:tool_call>\n[e~[", "</minimax:tool_call>[e~[")


def test_minimax_tool_loop_matches_the_template(minimax: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = minimax

    def ref(msgs: list[dict[str, Any]], **kw: Any) -> Any:
        return tok.encode(_minimax_text(tmpl, messages=msgs, tools=TOOLS, **kw))

    ctx = Context(tok)
    assert isinstance(ctx.chat_format, MiniMaxM2Format)
    ctx.add_system("Be brief.", tools=TOOLS)
    ctx.add_user("Weather in Paris?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert same(ctx, ref(msgs))
    calls = [call("a", "get_weather", {"city": "Paris", "days": 3}), call("b", "noop", {})]
    ctx.add_assistant("Checking.", reasoning="Two calls.", tool_calls=calls)
    msgs.append(
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Two calls.",
            "tool_calls": calls,
        }
    )
    assert "</minimax:tool_call>\n[e~[" in tmpl.render(messages=msgs, tools=TOOLS)
    assert same(ctx, ref(msgs))
    for result in ("rain", "ok"):
        ctx.add_tool(result, name="x")
        msgs.append({"role": "tool", "content": result})
        # Between results the prompt ends at </response: the run's close, and
        # the ">" that BPE merges with the "\n" before a next result, are held.
        assert same(ctx, ref(msgs)[: -len(tok.encode(">[e~[\n"))])
    ctx.begin_assistant()
    prompt = ref(msgs, add_generation_prompt=True)
    assert same(ctx, prompt)
    assert ctx.current_reply is not None
    assert ctx.current_reply.new_parser().state == "thinking"  # the prompt opened <think>
    # A sampled reply: reasoning, content, a call, as the template renders it.
    again = [call("c", "get_weather", {"city": "東京"})]
    msgs.append(
        {
            "role": "assistant",
            "content": "One more.",
            "reasoning_content": "Tokyo?",
            "tool_calls": again,
        }
    )
    full = ref(msgs)
    gen = len(tok.encode("]~b]ai\n<think>\n"))
    sampled = full[len(prompt) - gen :].tolist()
    assert sampled[:gen] == prompt[-gen:].tolist()
    append_sampled(ctx, sampled[gen:-1])  # up to the sampled [e~[; "\n" closes the reply
    assert same(ctx, full)
    with pytest.raises(InvalidRequest, match="first system"):
        ctx.add_system("Later.")


def test_minimax_first_message_brings_the_default_system(minimax: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = minimax
    ctx = Context(tok)
    ctx.add_user("Hi")
    ctx.add_assistant("Hello.", reasoning="greet")
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "greet"},
    ]
    assert same(ctx, tok.encode(_minimax_text(tmpl, messages=msgs)))
    ctx.add_user("Again")
    msgs.append({"role": "user", "content": "Again"})
    # The template now drops the earlier reasoning; tokstream keeps it.
    ours, theirs = tok.decode(ctx.prompt_ids()), _minimax_text(tmpl, messages=msgs)
    assert ours.replace("<think>\ngreet\n</think>\n\n", "") == theirs


# -- DeepSeek V3.1 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v31(vllm_home: Path) -> tuple[Tokenizer, Any]:
    return load_family("deepseek-v3.1", vllm_home), load_template("deepseek_v3_1.jinja")


BOS = "<｜begin▁of▁sentence｜>"


def test_deepseek_v31_tool_loop_matches_the_template(v31: tuple[Tokenizer, Any]) -> None:
    tok, tmpl = v31

    def ref(msgs: list[dict[str, Any]], **kw: Any) -> Any:
        return tok.encode(tmpl.render(messages=msgs, bos_token=BOS, **kw))

    ctx = Context(tok)
    assert isinstance(ctx.chat_format, DeepSeekV31Format)
    ctx.add_system("You call tools. 天气.")
    ctx.add_user("Weather in Paris?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You call tools. 天气."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert same(ctx, ref(msgs))
    calls = [
        call("a", "get_weather", {"city": "Paris"}, text=True),
        call("b", "noop", {}, text=True),
    ]
    ctx.add_assistant("", tool_calls=calls)
    msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
    assert same(ctx, ref(msgs))
    for result in ('{"temp": 21}', "ok"):
        ctx.add_tool(result)
        msgs.append({"role": "tool", "content": result})
        assert same(ctx, ref(msgs))
    ctx.begin_assistant()  # after tool results the model goes on: no prompt
    assert same(ctx, ref(msgs, add_generation_prompt=True))
    before = len(ctx.prompt_ids())
    msgs.append({"role": "assistant", "content": "21 °C and sunny."})
    full = ref(msgs)
    append_sampled(ctx, full[before:].tolist())
    assert same(ctx, full)
    # A user turn, then a thinking-mode prompt: <｜Assistant｜><think>.
    ctx.add_user("Tomorrow?")
    msgs.append({"role": "user", "content": "Tomorrow?"})
    ctx.begin_assistant(thinking=True)
    prompt = ref(msgs, add_generation_prompt=True, thinking=True)
    assert same(ctx, prompt)
    assert ctx.current_reply is not None
    assert ctx.current_reply.new_parser().state == "thinking"
    sampled = tok.encode("Let me see.</think>Same.<｜end▁of▁sentence｜>").tolist()
    append_sampled(ctx, sampled)
    msgs.append({"role": "assistant", "content": "Same."})
    # The template re-renders that turn as </think>Same.; tokstream keeps the sample.
    theirs = tok.decode(ref(msgs))
    assert tok.decode(ctx.prompt_ids()) == theirs.replace(
        "<｜Assistant｜></think>Same.", "<｜Assistant｜><think>Let me see.</think>Same."
    )


def test_deepseek_v31_refuses_what_the_template_cannot_render(
    v31: tuple[Tokenizer, Any],
) -> None:
    tok, _ = v31
    ctx = Context(tok)
    with pytest.raises(InvalidRequest, match="no tool definitions"):
        ctx.add_system("s", tools=TOOLS)
    ctx.add_system("s")
    with pytest.raises(InvalidRequest, match="every system message"):
        ctx.add_system("again")
