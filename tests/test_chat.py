"""Chat framing == the tiny model's own chat template, token for token.

The reference is the ``chat_template`` in the fixture model's
``tokenizer_config.json`` (Qwen3 semantics), rendered with jinja2 the way
Hugging Face transformers does (sandboxed, ``trim_blocks``/``lstrip_blocks``,
``tojson`` = ``json.dumps(ensure_ascii=False)``), then encoded whole. tokstream
renders message by message and must give the same IDs wherever the template is
append-only; where it is not, the tests pin down what tokstream does instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

import tokstream
from tokstream import Context, ContextError, Tokenizer
from tokstream.chat import QwenFormat, chat_format

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather <now> & später, 天气",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
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


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


@pytest.fixture(scope="module")
def template(tiny_model_dir: Path) -> Any:
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    return env.from_string(config["chat_template"])


def render(
    tok: Tokenizer, template: Any, messages: list[dict[str, Any]], tools: Any = None, **kw: Any
) -> np.ndarray:
    """The template's IDs for ``messages``, up to where a later message would change them.

    After a tool result (and no generation prompt) the template's final
    ``<|im_end|>\\n`` is not append-only: another tool result replaces it.
    tokstream writes it with the next message or generation prompt, so the
    expected prompt ends before it; the following checks see it in place.
    """
    ids = tok.encode(template.render(messages=messages, tools=tools, **kw))
    if messages and messages[-1]["role"] == "tool" and not kw.get("add_generation_prompt"):
        close = tok.encode("<|im_end|>\n").tolist()
        assert ids[-len(close) :].tolist() == close
        ids = ids[: -len(close)]
    return ids


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.int32 and np.array_equal(a, b)


def test_system_user_generation_prompt(tok: Tokenizer, template: Any) -> None:
    ctx = Context(tok)
    ctx.add_system("You are terse.")
    ctx.add_user("Weather in Paris?")
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert same(ctx.prompt_ids(), render(tok, template, msgs))
    ctx.begin_assistant()
    assert same(ctx.prompt_ids(), render(tok, template, msgs, add_generation_prompt=True))
    assert ctx.prompt_ids()[-3:].tolist() == [151644, 77091, 198]


@pytest.mark.parametrize("system", [None, "", "Be brief.\n"])
def test_tools_in_system_prompt(tok: Tokenizer, template: Any, system: str | None) -> None:
    ctx = Context(tok)
    ctx.add_system(system, tools=TOOLS)
    ctx.add_user("hi")
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": "hi"})
    assert same(ctx.prompt_ids(), render(tok, template, msgs, tools=TOOLS))
    kinds = [leaf.kind for leaf in ctx.messages[0].leaves]
    assert "tools" in kinds
    assert "später, 天气" in ctx.messages[0].text  # tojson keeps non-ASCII, as HF's does


@pytest.mark.parametrize("thinking", [True, False])
def test_generation_prompt_thinking(tok: Tokenizer, template: Any, thinking: bool) -> None:
    ctx = Context(tok)
    ctx.add_user("hi")
    ctx.begin_assistant(thinking=thinking)
    want = render(
        tok,
        template,
        [{"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        enable_thinking=thinking,
    )
    assert same(ctx.prompt_ids(), want)
    assert (tok.decode(ctx.prompt_ids()).endswith("<think>\n\n</think>\n\n")) is not thinking


def test_agent_turn_with_tool_runs(tok: Tokenizer, template: Any) -> None:
    """One turn: assistant calls, 1-3 tool results, assistant again; equal at every step."""
    ctx = Context(tok)
    msgs: list[dict[str, Any]] = []

    def check() -> None:
        assert same(ctx.prompt_ids(), render(tok, template, msgs, tools=TOOLS))

    ctx.add_system("sys", tools=TOOLS)
    msgs.append({"role": "system", "content": "sys"})
    ctx.add_user("Weather in Paris and Rome?")
    msgs.append({"role": "user", "content": "Weather in Paris and Rome?"})
    check()
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    ctx.add_assistant("I'll check.", reasoning="\nTwo cities.\n", tool_calls=calls)
    msgs.append(
        {
            "role": "assistant",
            "content": "I'll check.",
            "reasoning_content": "\nTwo cities.\n",
            "tool_calls": calls,
        }
    )
    check()
    for result in ["sunny", "\n12 °C\n", "🫠"]:
        ctx.add_tool(result, name="get_weather")
        msgs.append({"role": "tool", "content": result})
        check()
    ctx.add_assistant("<think>\nDone.\n</think>\n\nBoth fine.")
    msgs.append({"role": "assistant", "content": "<think>\nDone.\n</think>\n\nBoth fine."})
    check()
    ctx.begin_assistant()
    assert same(
        ctx.prompt_ids(), render(tok, template, msgs, tools=TOOLS, add_generation_prompt=True)
    )
    # The tool results were merged into one user turn, as the template does.
    assert tok.decode(ctx.prompt_ids()).count("<|im_start|>user") == 2


def test_history_without_reasoning_across_turns(tok: Tokenizer, template: Any) -> None:
    """Earlier turns without reasoning stay append-only across new user queries."""
    ctx = Context(tok)
    msgs: list[dict[str, Any]] = []
    for i in range(3):
        ctx.add_user(f"question {i}")
        msgs.append({"role": "user", "content": f"question {i}"})
        ctx.add_assistant(f"answer {i}", tool_calls=[{"name": "noop", "arguments": {}}])
        msgs.append(
            {
                "role": "assistant",
                "content": f"answer {i}",
                "tool_calls": [{"name": "noop", "arguments": {}}],
            }
        )
        ctx.add_tool("ok")
        msgs.append({"role": "tool", "content": "ok"})
        assert same(ctx.prompt_ids(), render(tok, template, msgs))
    ctx.add_system("late system message")
    msgs.append({"role": "system", "content": "late system message"})
    assert same(ctx.prompt_ids(), render(tok, template, msgs))


def test_sampled_reply_then_close_matches_template(tok: Tokenizer, template: Any) -> None:
    ctx = Context(tok)
    ctx.add_user("hi")
    ctx.begin_assistant()
    reply = tok.encode(
        '<think>\nplan\n</think>\n\nOk.\n<tool_call>\n{"name": "noop", "arguments": {}}\n'
        "</tool_call><|im_end|>"
    )
    ctx.append_reply(reply)
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Ok.",
            "reasoning_content": "plan",
            "tool_calls": [{"name": "noop", "arguments": {}}],
        },
    ]
    assert same(ctx.prompt_ids(), render(tok, template, msgs))
    ctx.add_tool("done")
    msgs.append({"role": "tool", "content": "done"})
    assert same(ctx.prompt_ids(), render(tok, template, msgs))
    # Not append-only: a new user query makes the template drop the earlier
    # reasoning. tokstream keeps exactly what was sampled.
    before = ctx.prompt_ids().copy()
    ctx.add_user("and now?")
    msgs.append({"role": "user", "content": "and now?"})
    ours, theirs = ctx.prompt_ids(), render(tok, template, msgs)
    assert not np.array_equal(ours, theirs)
    assert same(ours[: len(before)], before)
    assert "<think>\nplan\n</think>" in tok.decode(ours)
    assert "<think>" not in tok.decode(theirs)


def test_thinking_off_keeps_the_empty_block(tok: Tokenizer, template: Any) -> None:
    ctx = Context(tok)
    ctx.add_user("hi")
    ctx.begin_assistant(thinking=False)
    ctx.append_reply(tok.encode("Hello.<|im_end|>"))
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    # While the reply is the last message the template renders the same block...
    assert same(ctx.prompt_ids(), render(tok, template, msgs))
    ctx.add_user("more")
    msgs.append({"role": "user", "content": "more"})
    ours, theirs = ctx.prompt_ids(), render(tok, template, msgs)
    # ...then drops it; tokstream keeps what the model saw.
    assert tok.decode(ours).count("<think>\n\n</think>\n\n") == 1
    assert "<think>" not in tok.decode(theirs)


def test_each_message_is_tokenized_once(tiny_model_dir: Path) -> None:
    calls: list[str] = []

    class Counting(Tokenizer):
        def encode_with_offsets(self, text: str) -> Any:
            calls.append(text)
            return super().encode_with_offsets(text)

    base = Tokenizer.load(tiny_model_dir)
    ctx = Context(Counting(base.hf))
    ctx.add_system("s", tools=TOOLS)
    ctx.add_user("u")
    ctx.add_assistant("a", tool_calls=[{"name": "noop", "arguments": {}}])
    ctx.add_tool("t1")
    ctx.add_tool("t2")
    assert len(calls) == 5
    assert calls[1] == "<|im_start|>user\nu<|im_end|>\n"
    before = len(calls)
    ctx.prompt_ids()
    ctx.generation_mask()
    assert len(calls) == before


def test_unclean_boundary_merges_leaves(tok: Tokenizer) -> None:
    """Content starting with a newline merges with the role line's newline (one token)."""
    ctx = Context(tok)
    m = ctx.add_user("\n\nhello")
    assert [leaf.kind for leaf in m.leaves] == ["user", "framing"]
    assert m.leaves[0].text == "<|im_start|>user\n\n\nhello"
    assert same(m.ids, tok.encode("<|im_start|>user\n\n\nhello<|im_end|>\n"))
    m2 = ctx.add_user("plain")
    assert [leaf.kind for leaf in m2.leaves] == ["framing", "user", "framing"]
    assert m2.leaves[1].text == "plain"
    assert same(m2.leaves[1].ids, tok.encode("plain"))


def test_format_detection_and_errors(tok: Tokenizer, tmp_path: Path) -> None:
    assert isinstance(chat_format(tok), QwenFormat)
    assert chat_format(tok, "qwen").name == "qwen"
    assert chat_format(tok).stop_token_ids == (151645,)
    with pytest.raises(ValueError, match="unknown chat format 'llama9'"):
        chat_format(tok, "llama9")
    ctx = Context(tok)
    with pytest.raises(ContextError, match="needs content or tools"):
        ctx.add_system(None)
    ctx.add_user("x")
    with pytest.raises(ContextError, match="first system message"):
        ctx.add_system("late", tools=TOOLS)


# -- property: random append-only conversations ------------------------------

_ALPHABET = st.sampled_from(
    [*"abcXYZ 019.,:;'\"{}[]<>/\\&é", "\n", "\n\n", "  ", "\t", "🫠", "👍🏽", "天气", "ñ"]
)
_TEXT = st.lists(_ALPHABET, max_size=12).map("".join)
_NONEMPTY = st.lists(_ALPHABET, min_size=1, max_size=12).map("".join)
_ARGS = st.one_of(
    st.dictionaries(st.sampled_from(["city", "n", "ü"]), st.one_of(_TEXT, st.integers())),
    _TEXT.map(lambda s: json.dumps({"q": s})),
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """Steps of a conversation the template renders append-only.

    Reasoning appears only in the last user turn (earlier turns lose it).
    """
    tools = draw(st.sampled_from([None, TOOLS[:1], TOOLS]))
    steps: list[tuple[str, dict[str, Any]]] = []
    system = draw(st.none() | _TEXT)
    if system is not None or tools:
        steps.append(("system", {"content": system}))
    turns = draw(st.integers(1, 3))
    for t in range(turns):
        steps.append(("user", {"content": draw(_TEXT)}))
        for _ in range(draw(st.integers(0, 2))):
            reasoning = draw(_NONEMPTY) if t == turns - 1 else ""
            n_calls = draw(st.integers(0, 2))
            calls = [{"name": "get_weather", "arguments": draw(_ARGS)} for _ in range(n_calls)]
            steps.append(
                (
                    "assistant",
                    {
                        "content": draw(_TEXT).replace("<", ""),
                        "reasoning": reasoning,
                        "tool_calls": calls,
                    },
                )
            )
            for _ in range(draw(st.integers(0, 3))):
                steps.append(("tool", {"content": draw(_TEXT)}))
    return tools, steps


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations())
def test_random_conversations_match_template(
    tok: Tokenizer, template: Any, conv: tuple[Any, list[tuple[str, dict[str, Any]]]]
) -> None:
    tools, steps = conv
    ctx = Context(tok)
    msgs: list[dict[str, Any]] = []
    for role, m in steps:
        if role == "system":
            ctx.add_system(m["content"], tools=tools)
            if m["content"] is not None:
                msgs.append({"role": "system", "content": m["content"]})
        elif role == "user":
            ctx.add_user(m["content"])
            msgs.append({"role": "user", "content": m["content"]})
        elif role == "tool":
            ctx.add_tool(m["content"])
            msgs.append({"role": "tool", "content": m["content"]})
        else:
            ctx.add_assistant(m["content"], reasoning=m["reasoning"], tool_calls=m["tool_calls"])
            msgs.append(
                {
                    "role": "assistant",
                    "content": m["content"],
                    "reasoning_content": m["reasoning"],
                    "tool_calls": m["tool_calls"],
                }
            )
        if not msgs:
            continue  # tools without a system message: the template needs a message
        if role == "assistant" and not m["reasoning"] and any(x["role"] == "user" for x in msgs):
            continue  # the template's transient empty think block on a last assistant message
        assert same(ctx.prompt_ids(), render(tok, template, msgs, tools=tools))
    if msgs and msgs[-1]["role"] != "assistant":
        ctx.begin_assistant()
        want = render(tok, template, msgs, tools=tools, add_generation_prompt=True)
        assert same(ctx.prompt_ids(), want)


# -- a second family: Llama 3 headers -----------------------------------------

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)  # Meta-Llama-3-8B-Instruct's chat_template


@pytest.fixture(scope="module")
def llama_tok(tiny_model_dir: Path) -> Tokenizer:
    """The Qwen vocabulary plus Llama 3's header tokens as added special tokens."""
    hf = tokenizers.Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    names = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    hf.add_special_tokens([tokenizers.AddedToken(n, special=True, normalized=False) for n in names])
    return Tokenizer(hf)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), _TEXT), min_size=1, max_size=6
    )
)
def test_llama3_format_matches_its_template(
    llama_tok: Tokenizer, turns: list[tuple[str, str]]
) -> None:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(LLAMA3_TEMPLATE)
    ctx = Context(llama_tok, "llama3")
    msgs: list[dict[str, Any]] = []
    for role, text in turns:
        if role == "system":
            ctx.add_system(text)
        elif role == "user":
            ctx.add_user(text)
        else:
            ctx.add_assistant(text)
        msgs.append({"role": role, "content": text})
        want = template.render(messages=msgs, bos_token="<|begin_of_text|>")
        assert same(ctx.prompt_ids(), llama_tok.encode(want))
    reply = ctx.begin_assistant()
    want = template.render(messages=msgs, bos_token="<|begin_of_text|>", add_generation_prompt=True)
    assert same(ctx.prompt_ids(), llama_tok.encode(want))
    eot = llama_tok.token_id("<|eot_id|>")
    reply.add_leaf("text", llama_tok.encode("Hi there."))
    reply.add_leaf("stop", eot)
    reply.finish()
    msgs.append({"role": "assistant", "content": "Hi there."})
    assert same(
        ctx.prompt_ids(),
        llama_tok.encode(template.render(messages=msgs, bos_token="<|begin_of_text|>")),
    )
    assert ctx.prompt_ids()[0] == llama_tok.token_id("<|begin_of_text|>")
    assert ctx.stop_token_ids == (eot,)


def test_llama3_refuses_what_it_cannot_render(llama_tok: Tokenizer, tok: Tokenizer) -> None:
    ctx = Context(llama_tok, "llama3")
    with pytest.raises(ValueError, match="tool definitions"):
        ctx.add_system("s", tools=TOOLS)
    with pytest.raises(ValueError, match="renders no reasoning"):
        ctx.add_assistant("a", reasoning="r")
    # Tool calls render (as llama_models does) when the tokenizer has <|eom_id|>;
    # this test tokenizer has not.
    with pytest.raises(ValueError, match="no <\\|eom_id\\|>"):
        ctx.add_assistant("a", tool_calls=[{"name": "noop", "arguments": {}}])
    with pytest.raises(KeyError, match="<\\|begin_of_text\\|>"):
        Context(tok, "llama3")


def test_wrapped_tool_response_is_not_a_user_query(tok: Tokenizer, template: Any) -> None:
    """The template skips user messages that are wrapped tool responses when it looks
    for the last query; so does tokstream when it decides whether reasoning renders."""
    wrapped = "<tool_response>\nold style\n</tool_response>"
    for first in ([], [{"role": "user", "content": "real question"}]):
        ctx = Context(tok)
        for m in first:
            ctx.add_user(m["content"])
        ctx.add_user(wrapped)
        ctx.add_assistant("answer", reasoning="why")
        ctx.add_tool("r")
        msgs = [*first, {"role": "user", "content": wrapped}]
        msgs += [
            {"role": "assistant", "content": "answer", "reasoning_content": "why"},
            {"role": "tool", "content": "r"},
        ]
        assert same(ctx.prompt_ids(), render(tok, template, msgs))
        assert ("<think>\nwhy" in tok.decode(ctx.prompt_ids())) is bool(first)


def test_llama3_tool_calls_and_results_match_llama_models() -> None:
    """Llama 3.1's real tokenizer and ``llama_models``' ChatFormat as the reference:
    a conversation with a tool call (history, then sampled) and ipython results."""
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.datatypes import ToolCall as LlamaCall
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as LlamaTokenizer

    from tokstream.testing import family_tokenizer

    ref = ChatFormat(LlamaTokenizer.get_instance())
    tok = family_tokenizer("llama3")
    ctx = Context(tok)  # the llama3 family picks Llama 3 framing
    call = LlamaCall(call_id="1", tool_name="get_weather", arguments={"city": "Paris"})
    msgs = [
        RawMessage(role="system", content="Answer with tools."),
        RawMessage(role="user", content="Weather in Paris and 東京?"),
        RawMessage(
            role="assistant",
            content="",
            stop_reason=StopReason.end_of_message,
            tool_calls=[call],
        ),
        RawMessage(role="tool", content='{"temp": 21}'),
    ]
    ctx.add_system("Answer with tools.")
    ctx.add_user("Weather in Paris and 東京?")
    ctx.add_assistant("", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    ctx.add_tool('{"temp": 21}', name="get_weather")
    ctx.begin_assistant()
    want = ref.encode_dialog_prompt(msgs).tokens
    assert ctx.prompt_ids().tolist() == want
    # A sampled JSON call (as the model writes it), appended and parsed.
    tokyo = LlamaCall(call_id="2", tool_name="get_weather", arguments={"city": "東京"})
    msgs.append(
        RawMessage(
            role="assistant", content="", stop_reason=StopReason.end_of_message, tool_calls=[tokyo]
        )
    )
    full = ref.encode_dialog_prompt(msgs).tokens
    header = len(tok.encode("<|start_header_id|>assistant<|end_header_id|>\n\n"))
    sampled = full[len(want) : -header]  # the reply, up to the next generation prompt
    reply = ctx.current_reply
    assert reply is not None
    parser = reply.new_parser(tool_format="llama3_json")
    events = parser.feed_ids(sampled) + parser.finish()
    for ev in events:
        if isinstance(ev, tokstream.ReplySegment):
            reply.add_segment(ev)
    reply.finish(sampled)
    done = events[-1]
    assert isinstance(done, tokstream.Reply)
    assert [(c.name, c.arguments, c.ok) for c in done.tool_calls] == [
        ("get_weather", {"city": "東京"}, True)
    ]
    assert [leaf.kind for leaf in ctx.messages[-1].leaves if leaf.sampled] == ["tool_call", "stop"]
    ctx.add_tool("rain", name="get_weather")
    ctx.begin_assistant()
    msgs.append(RawMessage(role="tool", content="rain"))
    assert ctx.prompt_ids().tolist() == ref.encode_dialog_prompt(msgs).tokens
