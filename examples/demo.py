"""`make demo`: stream a forced agent reply from a real vLLM, token by token.

With no arguments it sets everything up itself: it installs CPU vLLM into
``.vllm/venv`` (once, about 100 s), builds the tiny Qwen3-shaped model (random
weights, the real Qwen tokenizer), starts the server on 127.0.0.1, streams one
reply and stops the server. The reply is forced to exact token IDs with a
structured-output grammar (thinking, text, then a Hermes tool call), so the run
is deterministic even though the weights are random. Each token is printed as it
arrives with its ID and the text the server released with it; then the stats:
tokens, time to first token, tokens/s, and whether the server's echo of the
prompt IDs and the streamed IDs are exactly right.

Point it at your own vLLM instead (no local server is started)::

    python examples/demo.py --base-url http://HOST:8000/v1 --model MODEL

Forcing needs a Qwen2.5/Qwen3-family vocabulary (the default tokenizer is the
tiny model's, which is Qwen's); for another family pass ``--tokenizer DIR`` and
``--free`` to sample freely. An API key, if needed, is read from
``$TOKSTREAM_API_KEY`` (never printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio

import tokstream
from tokstream.vllm_cpu import (
    IM_END_ID,
    THINK_END_ID,
    THINK_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    VLLMServer,
    ensure_model,
    ensure_vllm,
    forcing_body,
)
from tokstream.vllm_cpu._common import print_reporter

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
PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more "
    "functions to assist with the user query.\n\nYou are provided with function signatures "
    "within <tools></tools> XML tags:\n<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWhat's the weather in Paris right now? ☀️<|im_end|>\n"
    "<|im_start|>assistant\n"
)
REPLY = (
    "<think>\nThe user wants the current weather in Paris. I have a get_weather tool, "
    "so I'll call it with city=Paris.\n</think>\n\n"
    "Let me check the weather in Paris for you.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)

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


def tool_calls(text: str) -> list[dict[str, object]]:
    """The Hermes ``<tool_call>`` JSON bodies in a reply's text."""
    calls = []
    for part in text.split("<tool_call>")[1:]:
        body = part.split("</tool_call>")[0].strip()
        try:
            calls.append(json.loads(body))
        except ValueError:
            calls.append({"unparsable": body})
    return calls


async def stream_reply(
    base_url: str,
    model: str,
    prompt: npt.NDArray[np.int32],
    forced: npt.NDArray[np.int32] | None,
    api_key: str | None,
) -> bool:
    """Stream one reply, print it live, then print the stats; return True if verified."""
    paint = Painter()
    fields: dict[str, object] = {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0}
    if forced is not None:
        fields["max_tokens"] = len(forced) + 4
        fields["extra_body"] = forcing_body(forced.tolist())
    timeouts = tokstream.Timeouts(connect=10.0, stall=60.0)
    print(f"\nstreaming from {base_url} (model {model}); prompt: {len(prompt)} token IDs\n")
    print(paint(f"{'#':>4}  {'token ID':>8}  {'section':<7}  text released with it", "1"))
    sections = Sections()
    ids: list[int] = []
    client = tokstream.Client(base_url, model=model, api_key=api_key, timeouts=timeouts)
    async with client, client.stream(prompt, request_id="tokstream-demo", **fields) as events:
        async for event in events:
            if isinstance(event, tokstream.Token):
                section = sections.label(event.id)
                ids.append(event.id)
                shown = json.dumps(event.text, ensure_ascii=False) if event.text else "·"
                line = f"{len(ids):>4}  {event.id:>8}  {section:<7}  {shown}"
                print(paint(line, _COLORS[section]), flush=True)
            elif isinstance(event, tokstream.Error):
                print(f"\nstream failed: {event.error}", file=sys.stderr)
                return False
            else:
                return report(event, prompt, forced, ids, paint)
    return False


def report(
    done: tokstream.Done,
    prompt: npt.NDArray[np.int32],
    forced: npt.NDArray[np.int32] | None,
    ids: list[int],
    paint: Painter,
) -> bool:
    """Print the reply, its tool calls and the stats; return True if every check held."""
    stats = done.diagnostics
    ttft = stats.time_to_first_token
    decode_time = stats.elapsed - (ttft or 0.0)
    rate = (len(ids) - 1) / decode_time if len(ids) > 1 and decode_time > 0 else float("nan")
    echo_ok = done.prompt_token_ids is not None and np.array_equal(done.prompt_token_ids, prompt)
    usage_ok = done.usage is not None and done.usage.completion_tokens == len(ids)
    forced_ok = forced is None or ids == [*forced.tolist(), IM_END_ID]
    print("\nreply text:\n" + paint(done.text, "1"))
    for call in tool_calls(done.text):
        print(paint(f"tool call: {json.dumps(call, ensure_ascii=False)}", "33"))
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

    tokenizer_path = args.tokenizer or ensure_model(report=print_reporter)
    tok = tokstream.Tokenizer.load(tokenizer_path)
    prompt = tok.encode(PROMPT)
    forced = None if args.free else tok.encode(REPLY)
    api_key = os.environ.get("TOKSTREAM_API_KEY") or None

    if args.base_url:
        ok = trio.run(stream_reply, args.base_url, args.model, prompt, forced, api_key)
    else:
        t0 = time.monotonic()
        ensure_vllm(report=print_reporter)
        print_reporter(f"setup: ready in {time.monotonic() - t0:.1f} s")
        print_reporter("server: starting the tiny CPU vLLM on 127.0.0.1 (about 35 s) ...")
        with VLLMServer() as server:
            print_reporter(
                f"server: ready on {server.base_url} in {server.startup_seconds:.1f} s "
                f"(PID {server.pid}, log {server.log_path})"
            )
            ok = trio.run(stream_reply, server.base_url, server.model, prompt, forced, None)
            print_reporter(f"server: stopping PID {server.pid}")
        print_reporter("server: stopped")
    print("\ndemo: all checks passed" if ok else "\ndemo: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
