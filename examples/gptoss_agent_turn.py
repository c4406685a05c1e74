"""A gpt-oss (harmony) agent turn, token-exact, from recorded token streams: no server needed.

Run it (after ``make venv``)::

    .venv/bin/python examples/gptoss_agent_turn.py

The conversation is framed as ``openai_harmony`` renders it (system, developer
with the tool as a TypeScript namespace, user, ``<|start|>assistant``), with the
real gpt-oss tokenizer (o200k harmony, from ``tokstream.testing``). Two turns
run with :func:`tokstream.run_turn` against vLLM streams recorded from the tiny
CPU model with gpt-oss's vocabulary (``tests/data/gptoss_turn*.sse``), replayed
over a real loopback socket:

1. the model reasons (``analysis``), then calls ``get_weather`` on the
   ``commentary`` channel; the call is handed out at its ``<|call|>`` and the
   tool runs; its result goes back as a ``functions.get_weather`` message;
2. the model reasons again and answers on the ``final`` channel.

Each turn checks that the server's prompt echo is the context's prompt, and
prints the reply's leaves (each harmony message is one leaf, its header
included) with their exact IDs.

The recordings are forced replies (random weights write noise). To record them
again, start the tiny gpt-oss model (``ensure_model(home, family="gpt-oss")``
and ``VLLMServer(model_dir=...)``, with ``VLLM_XGRAMMAR_CACHE_MB=0``) and run::

    .venv/bin/python examples/gptoss_agent_turn.py --record --base-url URL --model tiny-gpt-oss
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio

from tokstream import Context, Tokenizer
from tokstream.core import CompletionRequest
from tokstream.testing import FAMILY_STOPS, family_tokenizer, forcing_body, open_replay_server

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

REPLIES = [
    (
        "gptoss_turn1",
        "<|channel|>analysis<|message|>The user asks about 東京. I should call get_weather."
        "<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
        '<|constrain|>json<|message|>{"city": "Tokyo"}',
        "<|call|>",
    ),
    (
        "gptoss_turn2",
        "<|channel|>analysis<|message|>The tool says sunny, 24 °C.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>It is sunny and 24 °C in Tokyo (東京).",
        "<|return|>",
    ),
]


async def get_weather(city: str) -> str:
    return json.dumps({"city": city, "sky": "sunny", "temp_c": 24})


def start(tok: Tokenizer) -> Context:
    ctx = Context(tok)  # the gpt-oss tokenizer picks harmony framing
    ctx.add_system("Answer with the weather tool.", tools=TOOLS)
    ctx.add_user("What is the weather in Tokyo?")
    return ctx


def show(turn: tokstream.Turn, ctx: Context, tok: Tokenizer) -> bool:
    done = turn.done
    sent = ctx.prompt_ids()[: len(done.prompt_token_ids)]
    echo = np.array_equal(done.prompt_token_ids, sent)
    print(f"  echo verified     {'yes' if echo else 'NO'}")
    for leaf in turn.message.leaves:
        if leaf.sampled:
            print(f"  leaf {leaf.kind:9s} {len(leaf):3d} IDs  {leaf.text!r}")
    exact = np.array_equal(turn.message.sampled_ids, done.token_ids)
    print(f"  sampled IDs exact {'yes' if exact else 'NO'}")
    for call in turn.reply.tool_calls:
        print(f"  call #{call.index} {call.name}({call.arguments}) {call.status.value}")
    for result in turn.tool_results:
        print(f"  tool result       {result.content}")
    if turn.reply.reasoning:
        print(f"  reasoning         {turn.reply.reasoning!r}")
    if turn.reply.content:
        print(f"  content           {turn.reply.content!r}")
    return echo and exact


async def replay(tok: Tokenizer) -> bool:
    ctx = start(tok)
    ok = True
    async with open_replay_server(DATA) as server:
        for k, (name, _, _) in enumerate(REPLIES, 1):
            print(f"turn {k}: replaying {name}.sse")
            async with tokstream.Client(server.url(f"replay={name}"), model="tiny-gpt-oss") as c:
                turn = await tokstream.run_turn(
                    c, ctx, tools={"get_weather": get_weather}, tool_specs=TOOLS, max_tokens=96
                )
            ok = show(turn, ctx, tok) and ok
    roles = " -> ".join(m.role for m in ctx.messages)
    print(f"conversation: {roles}, {len(ctx)} tokens, {int(ctx.generation_mask().sum())} sampled")
    ends = ctx.prompt_ids()[-1] == tok.token_id("<|return|>")
    print(f"last ID is the sampled <|return|>: {'yes' if ends else 'NO'}")
    return ok and ends


async def record(tok: Tokenizer, base_url: str, model: str) -> None:
    """Force each reply on a live tiny gpt-oss vLLM and save its SSE body."""
    ctx = start(tok)
    stops = [tok.token_id(n) for n in FAMILY_STOPS["gpt-oss"]]
    async with httpx.AsyncClient(timeout=120) as http:
        for name, text, end in REPLIES:
            builder = ctx.begin_assistant()
            ids = tok.encode(text).tolist()
            body = forcing_body(ids, end_with=tok.token_id(end), eos_token_ids=stops)
            request = CompletionRequest.build(
                ctx.prompt_ids(), model=model, max_tokens=96, extra_body=body
            )
            raw = b""
            url = base_url.rstrip("/") + "/completions"
            headers = {"content-type": "application/json"}
            async with http.stream(
                "POST", url, content=request.encode(), headers=headers
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {(await response.aread())!r}")
                async for chunk in response.aiter_raw():
                    raw += chunk
            (DATA / f"{name}.sse").write_bytes(raw)
            print(f"recorded {name}.sse ({len(raw)} bytes)")
            ctx.append_reply([*ids, tok.token_id(end)])
            assert builder.is_open is False
            if end == "<|call|>":
                ctx.add_tool(await get_weather("Tokyo"), name="get_weather")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="record against a live server")
    parser.add_argument("--base-url", help="a live tiny gpt-oss vLLM (with --record)")
    parser.add_argument("--model", default="tiny-gpt-oss", help="its served model name")
    args = parser.parse_args(argv)
    tok = family_tokenizer("gpt-oss")
    if args.record:
        if not args.base_url:
            parser.error("--record needs --base-url")
        trio.run(record, tok, args.base_url, args.model)
        return 0
    ok: Any = trio.run(replay, tok)
    print("gpt-oss agent turn: all checks passed" if ok else "gpt-oss agent turn: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
