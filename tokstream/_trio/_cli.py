"""The ``tokstream`` command line.

``tokstream decode FILE.sse``
    Decode a recorded vLLM SSE body with the sans-IO decoder and print one line
    per token, then the terminal event. Useful to inspect captures.

``tokstream stream --base-url URL --model NAME --prompt-ids 1,2,3 [...]``
    Stream one completion from a live server and print tokens as they arrive.

``tokstream replay FILE``, ``tokstream failed list``, ``tokstream failed show FILE``
    Resend a saved failed request and compare; list and show the saved ones
    (``_cli_failed.py``).

Every command fails with one line on stderr and an exit code that tells bad
input, connection, server and stream errors apart (``_cli_common.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

import trio

from .._events import Done, Event, Token
from ..core import StreamDecoder
from ._cli_common import common_options, exit_code, parse_ids, run_command
from ._cli_failed import add_commands
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
            if event.saved_to is not None:
                print(f"saved for replay: tokstream replay {event.saved_to}", file=sys.stderr)
            status = 1
    return status


def _decode(args: argparse.Namespace) -> int:
    decoder = StreamDecoder()
    with open(args.file, "rb") as f:
        events = decoder.feed(f.read()) + decoder.finish()
    return _print_events(events)


def _stream(args: argparse.Namespace) -> int:
    prompt = parse_ids(args.prompt_ids, what="--prompt-ids")
    return trio.run(_stream_async, args, prompt)


async def _stream_async(args: argparse.Namespace, prompt: list[int]) -> int:
    fields: dict[str, object] = {"max_tokens": args.max_tokens}
    if args.temperature is not None:
        fields["temperature"] = args.temperature
    async with (
        Client(args.base_url, model=args.model) as client,
        client.stream(prompt, **fields) as events,
    ):
        async for event in events:
            if _print_events([event]) and not isinstance(event, (Token, Done)):
                return exit_code(event.error)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    common = common_options()
    parser = argparse.ArgumentParser(prog="tokstream", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dec = sub.add_parser("decode", parents=[common], help="decode a recorded SSE body")
    dec.add_argument("file")
    dec.set_defaults(run=_decode)
    st = sub.add_parser("stream", parents=[common], help="stream one completion from a server")
    st.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    st.add_argument("--model", required=True)
    st.add_argument("--prompt-ids", required=True, help="comma-separated token IDs")
    st.add_argument("--max-tokens", type=int, default=16)
    st.add_argument("--temperature", type=float, default=None)
    st.set_defaults(run=_stream)
    add_commands(sub, common)
    args = parser.parse_args(argv)
    return run_command(args.run, args)
