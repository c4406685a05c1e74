"""`make demo`: an agent turn on a real vLLM, token by token, tools run as calls close.

Run it with ``make demo``, or ``.venv/bin/python examples/demo.py`` (after
``make venv``), or point it at a running vLLM (``--base-url``: nothing is
installed and no local server is started)::

    make demo ARGS="--base-url http://HOST:8000/v1 --model MODEL"
    .venv/bin/python examples/demo.py --base-url http://HOST:8000/v1 --model MODEL

Ctrl-C at any point stops the local server (with every process it spawned)
and prints "interrupted".

With no arguments it sets everything up itself: it installs CPU vLLM into
``.vllm/venv`` (once, about 100 s), builds the tiny Qwen3-shaped model (random
weights, the real Qwen tokenizer), starts the server on 127.0.0.1, runs two
assistant turns and stops the server. The first reply is forced to exact token
IDs with a structured-output grammar (thinking, text, then two Hermes tool
calls), so the run is deterministic even though the weights are random. The
response parser hands out each tool call the moment its closing tag streams,
and its tool starts right then, while the model is still writing; the results
are appended to the context in call order and a second (forced) turn answers.
Each token is printed as it arrives with its ID and its own text, interleaved
with what happened when ("tool get_weather started at token 41"); then, per
turn, the reply's tool calls as the parser read them and the stats: tokens,
time to first token, tokens/s, and whether the server's echo of the prompt IDs
(the context, token for token) and the streamed IDs are exactly right. A
token's text comes from the tokenizer's incremental detokenizer, not from the
server: vLLM sends text per chunk, and when one chunk carries several tokens
its text sits on the last of them (``·`` marks a token whose bytes end inside
a character).

Forcing needs a Qwen2.5/Qwen3-family vocabulary (the default tokenizer is the
tiny model's, which is Qwen's); for another family pass ``--tokenizer DIR`` and
``--free`` to sample freely. An API key, if needed, is read from
``$TOKSTREAM_API_KEY`` (never printed).
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit(
        "tokstream is not installed here: run `make demo`, or .venv/bin/python examples/demo.py"
    )

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from tokstream.testing import (
    IM_END_ID,
    THINK_END_ID,
    THINK_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    ensure_model,
    forcing_body,
    server_for,
)

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
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]
SYSTEM = "You are a helpful assistant."
QUESTION = "What's the weather in Paris right now, and what time is it there? ☀️"
REPLIES = [
    "<think>\nThe user wants the current weather and the local time in Paris. I have "
    "get_weather and get_time, so I'll call both with city=Paris.\n</think>\n\n"
    "Let me check the weather and the time in Paris for you.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call>',
    "<think>\nBoth tools answered.\n</think>\n\n"
    "It is sunny and 21 °C in Paris, and the local time there is 14:05.",
]


async def get_weather(city: str) -> dict[str, object]:
    """A stand-in weather tool: slow enough that its run overlaps the stream."""
    await trio.sleep(0.2)
    return {"city": city, "sky": "sunny", "temp_c": 21}


async def get_time(city: str) -> str:
    """A stand-in clock tool."""
    return f"{city}: 14:05"


TOOL_FUNCTIONS = {"get_weather": get_weather, "get_time": get_time}

_OPEN_TAGS = {THINK_ID: ("think", THINK_END_ID), TOOL_CALL_ID: ("tool", TOOL_CALL_END_ID)}
_COLORS = {"think": "2", "text": "0", "tool": "33", "eos": "36"}


class Painter:
    """ANSI colours when writing to a terminal (and ``NO_COLOR`` is unset)."""

    def __init__(self) -> None:
        self.enabled = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code != "0" else text


class Sections:
    """Labels each token with the reply section it belongs to (tags included)."""

    def __init__(self) -> None:
        self._inside: tuple[str, int] | None = None

    def label(self, token_id: int) -> str:
        if self._inside is None and token_id in _OPEN_TAGS:
            self._inside = _OPEN_TAGS[token_id]
        if self._inside is not None:
            name, closing = self._inside
            if token_id == closing:
                self._inside = None
            return name
        return "eos" if token_id == IM_END_ID else "text"


class LiveView:
    """Prints each token as it streams, and what it set off: calls, tools, the end."""

    def __init__(self, paint: Painter, tok: tokstream.Tokenizer) -> None:
        self.paint = paint
        self.sections = Sections()
        self.text_of = tok.detokenizer().feed
        self.ids: list[int] = []
        self.done = False

    def _note(self, text: str, code: str = "35") -> None:
        print(self.paint(f"{'':>16}{text}", code), flush=True)

    def __call__(self, event: object) -> None:
        if isinstance(event, tokstream.Token):
            section = self.sections.label(event.id)
            self.ids.append(event.id)
            piece = self.text_of(event.id)
            shown = json.dumps(piece, ensure_ascii=False) if piece else "·"
            line = f"{len(self.ids):>4}  {event.id:>8}  {section:<7}  {shown}"
            print(self.paint(line, _COLORS[section]), flush=True)
        elif isinstance(event, tokstream.ToolCall):
            args = json.dumps(event.arguments, ensure_ascii=False)
            self._note(f"> call #{event.index} {event.name}({args}) closed [{event.status}]")
        elif isinstance(event, tokstream.ToolStarted):
            still = "" if self.done else " (the model is still writing)"
            self._note(f"> tool {event.call.name} started at token {event.token_index}{still}")
        elif isinstance(event, tokstream.ToolResult):
            self._note(
                f"> tool {event.call.name} finished at token {event.finished_at_token}: "
                f"{event.content}"
            )
        elif isinstance(event, tokstream.Done):
            self.done = True
            self._note(f"> Done after {len(self.ids)} tokens ({event.finish_reason})", "36")


async def run_agent_turns(
    base_url: str,
    model: str,
    tok: tokstream.Tokenizer,
    forced: list[npt.NDArray[np.int32]] | None,
    api_key: str | None,
) -> bool:
    """Run the turns, print them live, then each turn's stats; return True if verified."""
    paint = Painter()
    ctx = tokstream.Context(tok)
    ctx.add_system(SYSTEM, tools=TOOLS)
    ctx.add_user(QUESTION)
    timeouts = tokstream.Timeouts(connect=10.0, stall=60.0)
    client = tokstream.Client(base_url, model=model, api_key=api_key, timeouts=timeouts)
    ok = True
    async with client:
        for k in range(len(forced) if forced is not None else 1):
            fields: dict[str, Any] = {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0}
            if forced is not None:
                fields["max_tokens"] = len(forced[k]) + 4
                fields["extra_body"] = forcing_body(forced[k].tolist())
            ctx.begin_assistant()
            prompt = ctx.prompt_ids().copy()
            print(
                f"\nturn {k + 1}: streaming from {base_url} (model {model}); prompt: "
                f"{len(prompt)} token IDs (the context so far)\n"
            )
            print(paint(f"{'#':>4}  {'token ID':>8}  {'section':<7}  text", "1"))
            view = LiveView(paint, tok)
            try:
                turn = await tokstream.run_turn(
                    client,
                    ctx,
                    tools=TOOL_FUNCTIONS,
                    tool_specs=TOOLS,
                    on_event=view,
                    request_id=f"tokstream-demo-{k + 1}",
                    **fields,
                )
            except tokstream.TokstreamError as exc:
                print(f"\nstream failed: {exc}", file=sys.stderr)
                return False
            turn_ok = report(turn, prompt, None if forced is None else forced[k], view.ids, paint)
            turn_ok = turn_ok and check_tools(turn, view.ids, paint)
            ok = ok and turn_ok and all(c.ok for c in turn.reply.tool_calls)
            if not ok or not turn.tool_results:
                break
    roles = " -> ".join(m.role for m in ctx.messages)
    print(f"\ncontext: {len(ctx)} token IDs; {roles}")
    return ok


def check_tools(turn: tokstream.Turn, ids: list[int], paint: Painter) -> bool:
    """Print when each tool ran; True if every call ran and the first began before Done."""
    results = turn.tool_results
    for r in results:
        line = (
            f"tool {r.call.name}: started at token {r.started_at_token}, finished at token "
            f"{r.finished_at_token} of {len(ids)}; {r.content}"
        )
        print(paint(line, "35"))
    if not results:
        return True
    early = results[0].started_at_token is not None and results[0].started_at_token < len(ids)
    print(f"  tool ran mid-stream {'yes' if early else 'NO'} (started before the stream's Done)")
    print(f"  tool results       {len(results)}, appended to the context in call order")
    return early and all(r.ok for r in results)


def report(
    turn: tokstream.Turn,
    prompt: npt.NDArray[np.int32],
    forced: npt.NDArray[np.int32] | None,
    ids: list[int],
    paint: Painter,
) -> bool:
    """Print the reply, its tool calls and the stats; return True if every check held."""
    done = turn.done
    stats = done.diagnostics
    ttft = stats.time_to_first_token
    decode_time = stats.elapsed - (ttft or 0.0)
    rate = (len(ids) - 1) / decode_time if len(ids) > 1 and decode_time > 0 else float("nan")
    echo_ok = done.prompt_token_ids is not None and np.array_equal(done.prompt_token_ids, prompt)
    usage_ok = done.usage is not None and done.usage.completion_tokens == len(ids)
    forced_ok = forced is None or ids == [*forced.tolist(), IM_END_ID]
    print("\nreply text:\n" + paint(done.text, "1"))
    for call in turn.reply.tool_calls:
        body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        problem = "" if call.ok else f" [{call.status}: {call.error}]"
        print(paint(f"tool call: {body}{problem}", "33"))
    print("\nstats:")
    print(f"  tokens            {len(ids)} ({done.finish_reason}; usage {done.usage})")
    print(f"  time to 1st token {ttft * 1000:.0f} ms" if ttft is not None else "  ttft  n/a")
    print(f"  tokens/s          {rate:.0f} (after the first token)")
    print(f"  total             {stats.elapsed * 1000:.0f} ms, {stats.sse_events} SSE events")
    print(f"  echo verified     {'yes' if echo_ok else 'NO'} (server's prompt_token_ids == sent)")
    if forced is not None:
        print(f"  forced IDs exact  {'yes' if forced_ok else 'NO'}")
    print(f"  usage matches     {'yes' if usage_ok else 'NO'}")
    return echo_ok and forced_ok and usage_ok


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 if the stream was verified."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="your vLLM's OpenAI base URL (…/v1); no local server")
    parser.add_argument("--model", default="tiny-qwen", help="served model name")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json or its directory")
    parser.add_argument("--free", action="store_true", help="sample freely, do not force IDs")
    args = parser.parse_args(argv)

    # The testing kit reports its setup steps (install, model, server) on this logger.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
        forced = None if args.free else [tok.encode(reply) for reply in REPLIES]
        if forced is not None:
            print(
                "demo: the replies are forced: the tiny model has random weights, so a "
                "structured-output grammar (tokstream.testing.forcing_body) makes it emit "
                "chosen token IDs; --free samples instead",
                flush=True,
            )
        api_key = (os.environ.get("TOKSTREAM_API_KEY") or None) if args.base_url else None
        # Without --base-url: install CPU vLLM if needed, start the tiny server, and stop
        # it (with everything it spawned) when the block ends, Ctrl-C included.
        with server_for(args.base_url, model=args.model) as server:
            ok = trio.run(run_agent_turns, server.base_url, server.model, tok, forced, api_key)
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    print("\ndemo: all checks passed" if ok else "\ndemo: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
