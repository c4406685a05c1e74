"""Mistral framing == ``mistral_common``'s ``encode_chat_completion``, token for token.

The reference is ``mistral_common`` 1.13.1's own request encoder
(``MistralTokenizer.from_file(...).encode_chat_completion``), with the version's
instruct tokenizer. v3 is the real ``tekken_240718.json`` (Mistral NeMo); v7,
v11 and v13 are the kit's ``mistral-v13`` test vocabulary (the same ranks with
v11+ control tokens) with its ``config.version`` set to each. Where the encoder
is not append-only (tools, and v3's system prompt, move to the last user
message), the tests pin what tokstream does instead (``chat/_mistral.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mistral_common
import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

import tokstream
from tokstream import Context, InvalidRequest, Tokenizer
from tokstream.chat import MISTRAL, MISTRAL_V11, MistralFormat
from tokstream.testing import family_tokenizer
from tokstream.testing._vocab import mistral_v13_file

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city, 天气",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
]

VERSIONS = ("v3", "v7", "v11", "v13")


@pytest.fixture(scope="module")
def refs(vllm_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per version: (tokstream tokenizer, mistral_common tokenizer)."""
    out: dict[str, Any] = {}
    v3_file = Path(mistral_common.__file__).parent / "data" / "tekken_240718.json"
    out["v3"] = (family_tokenizer("mistral", home=vllm_home), v3_file)
    v13 = mistral_v13_file(vllm_home)
    data = json.loads(v13.read_text(encoding="utf-8"))
    tmp = tmp_path_factory.mktemp("tekken")
    for version in ("v7", "v11", "v13"):
        data["config"]["version"] = version
        path = tmp / f"tekken_{version}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        out[version] = (Tokenizer.load(path), path)
    return {
        v: (tok, MistralTokenizer.from_file(str(path), mode=ValidationMode.agnostic))
        for v, (tok, path) in out.items()
    }


def encode(ref: MistralTokenizer, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
    request = ChatCompletionRequest(messages=messages, tools=tools)
    return list(ref.encode_chat_completion(request).tokens)


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_a_tool_loop_matches_the_encoder(refs: dict[str, Any], version: str) -> None:
    tok, ref = refs[version]
    ctx = Context(tok, MistralFormat(tok, version=version))  # type: ignore[arg-type]
    assert ctx.chat_format.version == version  # type: ignore[attr-defined]
    ctx.add_system("Be terse. Sé breve.", tools=TOOLS)
    ctx.add_user("Weather in Paris and 東京?")
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "Be terse. Sé breve."},
        {"role": "user", "content": "Weather in Paris and 東京?"},
    ]
    assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    calls = [call("get_weather", {"city": "Paris"}, "abc123xyz"), call("noop", {}, "def456uvw")]
    content = "" if version == "v3" else "Checking. "
    ctx.add_assistant(content, tool_calls=calls)
    msgs.append({"role": "assistant", "content": content or None, "tool_calls": calls})
    assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    for c, result in zip(calls, ('{"temp": 21}', "done"), strict=True):
        ctx.add_tool(result, name=c["function"]["name"], call_id=c["id"])
        msgs.append({"role": "tool", "content": result, "tool_call_id": c["id"]})
        assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    ctx.begin_assistant()  # no generation prompt: the reply follows the results
    assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    # A sampled reply: the encoder's IDs for it, appended verbatim and parsed.
    before = len(ctx.prompt_ids())
    msgs.append({"role": "assistant", "content": "21 °C, sunny."})
    sampled = encode(ref, msgs, TOOLS)[before:]
    ctx.append_reply(sampled)
    assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    assert [leaf.kind for leaf in ctx.messages[-1].leaves if leaf.sampled] == ["text", "stop"]


@pytest.mark.parametrize("version", ["v11", "v13"])
def test_sampled_calls_parse_and_frame(refs: dict[str, Any], version: str) -> None:
    tok, ref = refs[version]
    ctx = Context(tok, MistralFormat(tok, version=version))  # type: ignore[arg-type]
    ctx.add_user("Weather?")
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather?"}]
    ctx.begin_assistant()
    before = len(ctx.prompt_ids())
    calls = [call("get_weather", {"city": "Zürich"}, "abc123xyz")]
    msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
    sampled = encode(ref, msgs)[before:]
    reply = ctx.current_reply
    assert reply is not None
    parser = reply.new_parser()
    events = parser.feed_ids(sampled) + parser.finish()
    for ev in events:
        if isinstance(ev, tokstream.ReplySegment):
            reply.add_segment(ev)
    reply.finish(sampled)
    done = events[-1]
    assert isinstance(done, tokstream.Reply)
    want_id = "abc123xyz" if version == "v11" else None  # v13 writes no call ID
    assert [(c.name, c.arguments, c.call_id, c.ok) for c in done.tool_calls] == [
        ("get_weather", {"city": "Zürich"}, want_id, True)
    ]
    assert ctx.prompt_ids().tolist() == encode(ref, msgs)
    ctx.add_tool("rain", call_id="abc123xyz")
    msgs.append({"role": "tool", "content": "rain", "tool_call_id": "abc123xyz"})
    assert ctx.prompt_ids().tolist() == encode(ref, msgs)


def test_v13_reasoning_and_later_turns_stay_exact(refs: dict[str, Any]) -> None:
    """v13 renders tools before the first user message and keeps reasoning:
    every step of a multi-turn conversation equals the encoder's."""
    tok, ref = refs["v13"]
    ctx = Context(tok)  # detected: [INST] marks Mistral, [THINK] v13
    assert isinstance(ctx.chat_format, MistralFormat) and ctx.chat_format.version == "v13"
    ctx.add_system("Think first.", tools=TOOLS)
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "Think first."}]
    turns = [("Hi there", "plan a", "Hello!"), ("And now?", "plan b", "Still here.")]
    for user, thought, answer in turns:
        ctx.add_user(user)
        msgs.append({"role": "user", "content": user})
        assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
        ctx.add_assistant(answer, reasoning=thought)
        msgs.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": thought},
                    {"type": "text", "text": answer},
                ],
            }
        )
        assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    ctx.add_user("Bye")
    msgs.append({"role": "user", "content": "Bye"})
    assert ctx.prompt_ids().tolist() == encode(ref, msgs, TOOLS)
    assert ctx.chat_format.reply_format() is MISTRAL_V11


@pytest.mark.parametrize("version", ["v3", "v7", "v11"])
def test_tools_stay_before_the_first_user_message(refs: dict[str, Any], version: str) -> None:
    """Up to v11 the encoder moves the tools (v3: and the system prompt) to the
    last user message; tokstream keeps them where they were first rendered."""
    tok, ref = refs[version]
    ctx = Context(tok, MistralFormat(tok, version=version))  # type: ignore[arg-type]
    ctx.add_system("Sys.", tools=TOOLS)
    ctx.add_user("One")
    ctx.add_assistant("Ok.")
    first = ctx.prompt_ids().tolist()
    ctx.add_user("Two")
    msgs = [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": "Two"},
    ]
    ours, theirs = ctx.prompt_ids().tolist(), encode(ref, msgs, TOOLS)
    assert ours != theirs and ours[: len(first)] == first  # append-only
    assert sorted(ours) == sorted(theirs)  # the same tokens, the tools elsewhere
    assert tok.decode(ours[len(first) :]) == "[INST]Two[/INST]"
    assert tok.decode(theirs).split("Ok.</s>")[1].startswith("[AVAILABLE_TOOLS]")


def test_what_the_encoder_refuses_raises(refs: dict[str, Any]) -> None:
    tok, _ = refs["v3"]
    ctx = Context(tok)  # the real v3 Tekken file: no [ARGS]
    assert ctx.chat_format.version == "v3"  # type: ignore[attr-defined]
    assert ctx.chat_format.reply_format() is MISTRAL
    ctx.add_system("Sys.")
    with pytest.raises(InvalidRequest, match="one system prompt"):
        ctx.add_system("Another.")
    ctx.add_user("Hi")
    with pytest.raises(InvalidRequest, match="renders no reasoning"):
        ctx.add_assistant("a", reasoning="r")
    with pytest.raises(InvalidRequest, match="content or calls"):
        ctx.add_assistant("a", tool_calls=[call("noop", {}, "abc123xyz")])
    ctx.add_assistant("", tool_calls=[call("noop", {}, "abc123xyz")])
    with pytest.raises(InvalidRequest, match=r"call_id=call\.call_id") as info:
        ctx.add_tool("r", name="noop")
    assert info.value.field == "call_id"
    v13_tok, _ = refs["v13"]
    v13 = Context(v13_tok)
    v13.add_user("x")
    v13.add_assistant("", tool_calls=[call("noop", {}, "abc123xyz")])
    v13.add_tool("r")  # v13 results name no call
    with pytest.raises(InvalidRequest, match="version"):
        MistralFormat(tok, version="v9")  # type: ignore[arg-type]
