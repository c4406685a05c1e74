"""gpt-oss framing == ``openai_harmony.render_conversation``, token for token.

The reference is harmony's own renderer (``oss-harmony``, the package vLLM
uses for gpt-oss), on its own o200k harmony vocabulary. Where
``render_conversation`` is not append-only, the tests pin what tokstream keeps
(``tokstream/chat/_harmony.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncodingName,
    Message,
    Role,
    SystemContent,
    ToolDescription,
    load_harmony_encoding,
)

from tokstream import Context, InvalidRequest, Tokenizer
from tokstream.chat import HarmonyFormat
from tokstream.chat._harmony import harmony_tools_typescript

from .families import load_family

ENC = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
    {
        "type": "object",
        "description": "Top-level note",
        "properties": {
            "zeta": {"type": "string", "enum": ["a", "b"], "description": "Z first"},
            "alpha": {"type": "array", "items": {"type": "number"}},
            "mid": {
                "type": "object",
                "properties": {"x": {"type": "boolean", "default": True}},
                "required": ["x"],
            },
            "nul": {"type": ["string", "null"]},
            "maybe": {"type": "string", "nullable": True, "default": "hi"},
            "pick": {"type": "string", "enum": ["u", "v"], "default": "u"},
            "titled": {"type": "integer", "title": "A title", "examples": ["1", "2"]},
            "any": {},
            "list": {"type": "array"},
            "obj": {"type": "object", "default": {"a": [1, 2]}},
        },
    },
    {"type": "object", "properties": {}},
]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": f"tool_{i}", "description": f"Tool {i}\nsecond line", "parameters": s},
    }
    for i, s in enumerate(SCHEMAS)
] + [{"type": "function", "function": {"name": "bare"}}]


@pytest.fixture(scope="module")
def tok(vllm_home: Path) -> Tokenizer:
    return load_family("gpt-oss", vllm_home)


def _tool_descriptions(tools: list[dict[str, Any]]) -> list[ToolDescription]:
    return [
        ToolDescription.new(
            t["function"]["name"],
            t["function"].get("description", ""),
            parameters=t["function"].get("parameters"),
        )
        for t in tools
    ]


def head(instructions: str | None, tools: list[dict[str, Any]] | None) -> list[Message]:
    msgs = [Message.from_role_and_content(Role.SYSTEM, SystemContent.new())]
    if instructions is not None or tools:
        dev = DeveloperContent.new()
        if instructions is not None:
            dev = dev.with_instructions(instructions)
        if tools:
            dev = dev.with_function_tools(_tool_descriptions(tools))
        msgs.append(Message.from_role_and_content(Role.DEVELOPER, dev))
    return msgs


def reference(msgs: list[Message], completion: bool = True) -> list[int]:
    conv = Conversation.from_messages(msgs)
    if completion:
        return list(ENC.render_conversation_for_completion(conv, Role.ASSISTANT))
    return list(ENC.render_conversation(conv))


def same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def test_tool_schemas_render_as_harmony_does() -> None:
    dev = DeveloperContent.new().with_function_tools(_tool_descriptions(TOOLS))
    want = ENC.decode(ENC.render(Message.from_role_and_content(Role.DEVELOPER, dev)))
    assert want == "<|start|>developer<|message|>" + harmony_tools_typescript(TOOLS) + "<|end|>"
    with pytest.raises(InvalidRequest, match="oneOf"):
        harmony_tools_typescript([{"name": "f", "parameters": {"oneOf": [{"type": "string"}]}}])


@pytest.mark.parametrize(
    ("instructions", "tools"), [(None, None), ("Be terse.", None), (None, TOOLS), ("Hi", TOOLS)]
)
def test_system_developer_user(
    tok: Tokenizer, instructions: str | None, tools: list[dict[str, Any]] | None
) -> None:
    ctx = Context(tok)
    assert isinstance(ctx.chat_format, HarmonyFormat)  # detected from <|channel|>
    if instructions is not None or tools:
        ctx.add_system(instructions, tools=tools)
    ctx.add_user("Weather in Tokyo? 天气")
    msgs = [
        *head(instructions, tools),
        Message.from_role_and_content(Role.USER, "Weather in Tokyo? 天气"),
    ]
    if instructions is None and not tools:
        msgs = msgs[1:]  # nothing added: the context has no system message
    assert same(ctx.prompt_ids(), reference(msgs, completion=False))
    ctx.begin_assistant()
    assert same(ctx.prompt_ids(), reference(msgs))


def _call(name: str, args: dict[str, Any]) -> Message:
    return (
        Message.from_role_and_content(Role.ASSISTANT, json.dumps(args))
        .with_channel("commentary")
        .with_recipient(f"functions.{name}")
        .with_content_type("<|constrain|>json")
    )


def _result(name: str, content: str) -> Message:
    return (
        Message.from_author_and_content(Author.new(Role.TOOL, f"functions.{name}"), content)
        .with_channel("commentary")
        .with_recipient("assistant")
    )


def test_sampled_agent_loop_matches_the_renderer(tok: Tokenizer) -> None:
    """Sampled replies with analysis, a preamble and calls, then tool results:
    every prompt is harmony's rendering of the conversation so far."""
    ctx = Context(tok)
    ctx.add_system("Use tools.", tools=TOOLS[:1])
    ctx.add_user("Weather in Paris and Tokyo?")
    msgs = [
        *head("Use tools.", TOOLS[:1]),
        Message.from_role_and_content(Role.USER, "Weather in Paris and Tokyo?"),
    ]
    ctx.begin_assistant()
    assert same(ctx.prompt_ids(), reference(msgs))
    reply_msgs = [
        Message.from_role_and_content(Role.ASSISTANT, "Two cities.").with_channel("analysis"),
        Message.from_role_and_content(Role.ASSISTANT, "Checking both.").with_channel("commentary"),
        _call("tool_0", {"city": "Paris"}),
        _call("tool_0", {"city": "東京", "days": 2}),
    ]
    # The sampled reply is what harmony renders after "<|start|>assistant".
    prompt = reference(msgs)
    full = reference([*msgs, *reply_msgs], completion=False)
    assert full[: len(prompt)] == prompt
    sampled = full[len(prompt) :]
    ctx.append_reply(np.array(sampled, dtype=np.int32))
    kinds = [leaf.kind for leaf in ctx.messages[-1].leaves if leaf.sampled]
    assert kinds == ["thinking", "text", "tool_call", "tool_call"]
    for content in ("sunny", "rain"):
        ctx.add_tool(content, name="tool_0")
    msgs += [*reply_msgs, _result("tool_0", "sunny"), _result("tool_0", "rain")]
    ctx.begin_assistant()
    assert same(ctx.prompt_ids(), reference(msgs))
    tail = [*tok.encode("<|channel|>final<|message|>Sunny, then rain.<|return|>").tolist()]
    ctx.append_reply(np.array(tail, dtype=np.int32))
    ctx.add_user("Thanks!")
    msgs += [
        Message.from_role_and_content(Role.ASSISTANT, "Sunny, then rain.").with_channel("final"),
        Message.from_role_and_content(Role.USER, "Thanks!"),
    ]
    kept = ctx.prompt_ids()
    want = reference(msgs, completion=False)
    # Not append-only: the renderer now drops the analysis before the final
    # message and ends the final message with <|end|>; tokstream kept both.
    assert not same(kept, want)
    text = tok.decode(kept)
    assert "Two cities." in text and "Sunny, then rain.<|return|>" in text
    assert "Two cities." not in tok.decode(want)


def test_history_messages(tok: Tokenizer) -> None:
    ctx = Context(tok)
    ctx.add_user("Q")
    ctx.add_assistant(
        "Looking.",
        reasoning="Think.",
        tool_calls=[{"function": {"name": "tool_0", "arguments": {"city": "Paris"}}}],
    )
    ctx.add_tool("ok", name="tool_0")
    ctx.add_assistant("Done.")
    msgs = [
        Message.from_role_and_content(Role.USER, "Q"),
        Message.from_role_and_content(Role.ASSISTANT, "Think.").with_channel("analysis"),
        Message.from_role_and_content(Role.ASSISTANT, "Looking.").with_channel("commentary"),
        _call("tool_0", {"city": "Paris"}),
        _result("tool_0", "ok"),
        Message.from_role_and_content(Role.ASSISTANT, "Done.").with_channel("final"),
    ]
    # The renderer drops analysis before a final message; compare without it.
    want = reference([m for m in msgs if m.channel != "analysis"], completion=False)
    got = [int(i) for m in ctx.messages for leaf in m.leaves for i in leaf.ids]
    analysis = tok.encode("<|start|>assistant<|channel|>analysis<|message|>Think.<|end|>").tolist()
    k = got.index(analysis[0], 5)
    assert got[k : k + len(analysis)] == analysis
    assert same(got[:k] + got[k + len(analysis) :], want)
    with pytest.raises(InvalidRequest, match="name"):
        ctx.add_tool("no name")
