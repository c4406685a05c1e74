"""The ``tokstream`` command line.

``tokstream decode FILE.sse``
    Decode a recorded vLLM SSE body with the sans-IO decoder and print one line
    per token, then the terminal event. Useful to inspect captures.

``tokstream stream --base-url URL --model NAME --prompt-ids 1,2,3 [...]``
    Stream one completion from a live server and print tokens as they arrive.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

import trio

from .._events import Done, Event, Token
from ..core import StreamDecoder
from ._client import Client


def _print_events(events: Iterable[Event]) -> int:
    status = 0
    for event in events:
        if isinstance(event, Token):
            print(f"{event.id}\t{event.text!r}", flush=True)
        elif isinstance(event, Done):
            print(
                f"done finish_reason={event.finish_reason} stop_reason={event.stop_reason!r} "
                f"tokens={len(event.token_ids)} usage={event.usage}"
            )
            print(f"diagnostics: {event.diagnostics.describe()}")
        else:
            print(f"error {type(event.error).__name__}: {event.error}", file=sys.stderr)
            status = 1
    return status


def _decode(path: str) -> int:
    decoder = StreamDecoder()
    with open(path, "rb") as f:
        events = decoder.feed(f.read()) + decoder.finish()
    return _print_events(events)


async def _stream(args: argparse.Namespace) -> int:
    prompt = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    fields: dict[str, object] = {"max_tokens": args.max_tokens}
    if args.temperature is not None:
        fields["temperature"] = args.temperature
    status = 0
    async with (
        Client(args.base_url, model=args.model) as client,
        client.stream(prompt, **fields) as events,
    ):
        async for event in events:
            status |= _print_events([event])
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="tokstream", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dec = sub.add_parser("decode", help="decode a recorded SSE body")
    dec.add_argument("file")
    st = sub.add_parser("stream", help="stream one completion from a live server")
    st.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    st.add_argument("--model", required=True)
    st.add_argument("--prompt-ids", required=True, help="comma-separated token IDs")
    st.add_argument("--max-tokens", type=int, default=16)
    st.add_argument("--temperature", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "decode":
        return _decode(args.file)
    return trio.run(_stream, args)
