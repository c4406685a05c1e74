"""Cancelling a stream is trio's cancellation, and the server aborts the request.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/cancel.py
    .venv/bin/python examples/cancel.py --base-url http://127.0.0.1:8000/v1 --model MODEL

Two long generations (``ignore_eos``, 2,000 tokens) are cancelled part-way:

1. **by a timeout**: ``with trio.move_on_after(...)`` around ``client.stream``;
2. **by a nursery's scope**: the stream runs in a nursery
   (``client.start_stream``), and the consumer cancels the nursery after 10
   tokens.

Either way the HTTP response is closed, and vLLM aborts the request: its
``vllm:num_requests_running`` metric (``GET /metrics`` on the server's root)
goes from 1 while streaming back to 0, without the 2,000 tokens being generated.
Nothing is saved as a failed request: cancelling is not a failure.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
from pathlib import Path

import trio

from tokstream.testing import ensure_model, fetch_metrics, server_for

LONG = {"max_tokens": 2000, "temperature": 0.0, "extra_body": {"ignore_eos": True}}
RUNNING = "vllm:num_requests_running"


async def running(client: tokstream.Client) -> int:
    """The server's ``vllm:num_requests_running`` (blocking HTTP, so in a thread)."""
    metrics = await trio.to_thread.run_sync(fetch_metrics, client.root_url)
    return int(metrics.get(RUNNING, 0))


async def aborted(client: tokstream.Client) -> bool:
    """Wait (up to 30 s) until the server runs no request; return whether it got there."""
    with trio.move_on_after(30):
        while await running(client):  # noqa: ASYNC110 - another process's state: poll it
            await trio.sleep(0.05)
        return True
    return False


async def by_timeout(client: tokstream.Client, prompt: list[int]) -> bool:
    tokens = 0
    with trio.move_on_after(2.0) as scope:
        async with client.stream(prompt, **LONG) as events:
            async for event in events:
                if isinstance(event, tokstream.Token):
                    tokens += 1
    ok = scope.cancelled_caught and await aborted(client)
    print(f"1. timeout: cancelled after {tokens} of 2000 tokens")
    print(f"   server aborted it ({RUNNING} back to 0): {'yes' if ok else 'NO'}")
    return ok


async def by_nursery(client: tokstream.Client, prompt: list[int]) -> bool:
    tokens = during = 0
    async with trio.open_nursery() as nursery:
        channel = client.start_stream(nursery, prompt, **LONG)
        async with channel:
            async for event in channel:
                if isinstance(event, tokstream.Token):
                    tokens += 1
                    if tokens == 10:
                        during = await running(client)
                        nursery.cancel_scope.cancel()  # the stream, and anything else here
    ok = during == 1 and await aborted(client)
    print(f"2. nursery: cancelled after {tokens} tokens; {RUNNING} while streaming: {during}")
    print(f"   server aborted it ({RUNNING} back to 0): {'yes' if ok else 'NO'}")
    return ok


async def run(base_url: str, model: str, tok: tokstream.Tokenizer) -> bool:
    ctx = tokstream.Context(tok)
    ctx.add_user("Count to a thousand.")
    ctx.begin_assistant()
    prompt = ctx.prompt_ids().tolist()
    async with tokstream.Client(base_url, model=model, failed_requests=False) as client:
        if await running(client):
            print(f"the server is busy ({RUNNING} > 0); waiting for it to be idle ...")
            await aborted(client)
        first = await by_timeout(client, prompt)
        second = await by_nursery(client, prompt)
    return first and second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument("--model", default="tiny-qwen", help="its served model name")
    parser.add_argument("--tokenizer", type=Path, help="the model's tokenizer (default: tiny)")
    args = parser.parse_args()
    tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
    try:
        with server_for(args.base_url, model=args.model) as server:
            ok = trio.run(run, server.base_url, server.model, tok)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("cancel: all checks passed" if ok else "cancel: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
