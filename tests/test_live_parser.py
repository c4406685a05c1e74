"""Live: the response parser and the turn loop against the CPU vLLM server.

Replies are forced to exact token IDs with a structured-output grammar (the
tiny model's weights are random): Hermes and Qwen3-Coder calls, thinking, and
tags spelled by ordinary tokens. The calls must come out exactly, every
segment's IDs must be the streamed IDs, and a tool must start running before
the stream's ``Done`` arrives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

import tokstream
from tokstream import Context, Done, ResponseParser, Token, Tokenizer, ToolCallStatus
from tokstream.testing import forcing_body

from .parser_helpers import WEATHER_TOOLS, check_invariants, spelled

if TYPE_CHECKING:
    from tokstream.testing import VLLMServer

pytestmark = pytest.mark.vllm

PROMPT = "<|im_start|>user\nWeather in Paris and Tokyo?<|im_end|>\n<|im_start|>assistant\n"
SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0}
# Makes the model spend ~100+ tokens writing the second call, so the first tool
# demonstrably runs while generation continues.
LONG_NOTE = "Please include the hourly forecast, humidity, wind and pressure. " * 8


def hermes(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def coder(name: str, params: dict[str, str]) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


CASES: dict[str, tuple[str, list[str], list[tuple[str, dict[str, Any]]]]] = {
    "hermes_thinking": (
        "hermes",
        [
            "<think>\nTwo cities, two calls.\n</think>\n\n",
            "Checking.\n",
            hermes("get_weather", {"city": "Paris", "days": 2, "options": {"units": "C"}}),
            "\n",
            hermes("get_weather", {"city": "東京 🌧", "hourly": True}),
        ],
        [
            ("get_weather", {"city": "Paris", "days": 2, "options": {"units": "C"}}),
            ("get_weather", {"city": "東京 🌧", "hourly": True}),
        ],
    ),
    "coder_thinking": (
        "qwen3_coder",
        [
            "<think>\nUse the coder format.\n</think>\n\n",
            coder("get_weather", {"city": "Paris", "days": "3", "ratio": "0.5"}),
            coder("get_weather", {"city": "a </parameter> b", "hourly": "false"}),
        ],
        [
            ("get_weather", {"city": "Paris", "days": 3, "ratio": 0.5}),
            ("get_weather", {"city": "a </parameter> b", "hourly": False}),
        ],
    ),
    # Tags spelled by ordinary tokens, as a regex-constrained decoder may pick them.
    "hermes_split_tags": (
        "hermes",
        [
            "<th",
            "ink>",
            "\nhm\n",
            "</",
            "think>",
            "\nok ",
            "<",
            "tool",
            "_call",
            ">\n",
            '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
            "\n</tool_",
            "call>",
        ],
        [("get_weather", {"city": "Oslo"})],
    ),
}


async def _stream_parsed(
    server: VLLMServer, tok: Tokenizer, forced: list[int], fmt: str
) -> tuple[list[Token], Done, list[Any]]:
    prompt = tok.encode(PROMPT)
    tokens: list[Token] = []
    async with (
        tokstream.Client(server.base_url, model=server.model) as client,
        client.stream(
            prompt, max_tokens=len(forced) + 8, extra_body=forcing_body(forced), **SAMPLING
        ) as events,
    ):
        parser = ResponseParser(tok, tool_format=fmt, tools=WEATHER_TOOLS)  # type: ignore[arg-type]
        parsed: list[Any] = []
        done = None
        async for ev in events:
            if isinstance(ev, Token):
                tokens.append(ev)
                parsed += parser.feed([ev])
            elif isinstance(ev, tokstream.Error):
                ev.reraise()
            else:
                done = ev
        parsed += parser.finish()
    assert isinstance(done, Done)
    return tokens, done, parsed


@pytest.mark.parametrize("case", sorted(CASES))
async def test_live_forced_replies_parse_exactly(
    vllm_server: VLLMServer, tok: Tokenizer, case: str
) -> None:
    fmt, parts, want = CASES[case]
    forced = spelled(tok, *parts)
    tokens, done, parsed = await _stream_parsed(vllm_server, tok, forced, fmt)
    streamed = [t.id for t in tokens]
    assert streamed == [*forced, 151645]
    assert done.token_ids.tolist() == streamed
    reply = check_invariants(tok, streamed, parsed)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == want
    assert all(c.status is ToolCallStatus.OK for c in reply.tool_calls)
    assert reply.reasoning.strip() and not reply.thinking_unterminated
    assert [s.kind for s in reply.segments][-1] == "stop"
    # Every segment holds exactly the IDs that streamed at its position.
    pos = 0
    for seg in reply.segments:
        assert seg.ids.tolist() == streamed[pos : pos + len(seg.ids)]
        pos += len(seg.ids)
    assert pos == len(streamed)


async def test_live_tool_runs_before_done_two_calls_slow_second(
    vllm_server: VLLMServer, tok: Tokenizer
) -> None:
    first = tok.encode(
        "<think>\nTwo cities.\n</think>\n\n"
        + hermes("get_weather", {"city": "Paris"})
        + "\n"
        + hermes("slow_weather", {"city": "Tokyo", "note": LONG_NOTE})
    ).tolist()
    second = tok.encode("Paris: 21 °C. Tokyo: 18 °C.").tolist()
    log: list[str] = []

    async def get_weather(city: str) -> dict[str, Any]:
        log.append(f"start get_weather {city}")
        return {"city": city, "temp_c": 21}

    async def slow_weather(city: str, note: str) -> str:
        log.append(f"start slow_weather {city}")
        await trio.sleep(0.5)
        log.append("end slow_weather")
        return f"{city}: 18 °C"

    def on_event(ev: object) -> None:
        if isinstance(ev, tokstream.ToolCall):
            log.append(f"call {ev.name}")
        elif isinstance(ev, Done):
            log.append("Done")

    ctx = Context(tok)
    ctx.add_system("You are a weather bot.", tools=WEATHER_TOOLS)
    ctx.add_user("Weather in Paris and Tokyo?")
    tools = {"get_weather": get_weather, "slow_weather": slow_weather}
    async with tokstream.Client(vllm_server.base_url, model=vllm_server.model) as client:
        turn1 = await tokstream.run_turn(
            client,
            ctx,
            tools=tools,
            on_event=on_event,
            max_tokens=len(first) + 8,
            extra_body=forcing_body(first),
            **SAMPLING,
        )
        prompt2 = ctx.prompt_ids().copy()
        turn2 = await tokstream.run_turn(
            client, ctx, tools=tools, max_tokens=len(second) + 8, extra_body=forcing_body(second)
        )
    # The first tool started while the model was still writing the second call.
    assert log.index("call get_weather") < log.index("start get_weather Paris")
    assert log.index("start get_weather Paris") < log.index("call slow_weather")
    assert log.index("call slow_weather") < log.index("Done") < log.index("end slow_weather")
    # It started exactly at its closing tag's token, whatever the network batching.
    assert turn1.tool_results[0].started_at_token == first.index(151658) + 1
    assert [r.content for r in turn1.tool_results] == [
        '{"city": "Paris", "temp_c": 21}',
        "Tokyo: 18 °C",
    ]
    assert turn1.done.token_ids.tolist() == [*first, 151645]
    # The second request's prompt (as the server echoed it) is the context after
    # turn 1: the exact sampled IDs, then the tool results in call order.
    assert turn2.done.prompt_token_ids is not None
    echoed = turn2.done.prompt_token_ids.tolist()
    assert echoed[: len(prompt2)] == prompt2.tolist()
    assert ctx.prompt_ids()[: len(echoed)].tolist() == echoed
    assert prompt2[ctx.generation_mask()[: len(prompt2)]].tolist() == [*first, 151645]
    assert turn2.reply.content == "Paris: 21 °C. Tokyo: 18 °C."
    assert [m.role for m in ctx.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
