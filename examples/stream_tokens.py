"""The smallest complete tokstream program: text -> token IDs -> stream -> Done, echo checked.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/stream_tokens.py
    .venv/bin/python examples/stream_tokens.py --base-url http://127.0.0.1:8000/v1 \\
        --model MODEL --tokenizer DIR

The conversation goes through ``tokstream.Context``, which frames it with the
tokenizer's chat format and encodes it once. Each ``Token`` is printed as it
arrives (its ID, and the text the server sent with it: vLLM sends text per
chunk, so some tokens carry none); the ``Done`` says how it ended, and its
``prompt_token_ids`` (the server's echo of the prompt) must equal the IDs sent.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
from pathlib import Path

import numpy as np
import trio

from tokstream.testing import ensure_model, server_for


async def stream(base_url: str, model: str, tok: tokstream.Tokenizer) -> bool:
    """Stream one reply; return True if the server echoed the prompt exactly."""
    ctx = tokstream.Context(tok)  # the tokenizer's family picks the chat format
    ctx.add_user("Write a haiku about a river.")
    ctx.begin_assistant()
    prompt = ctx.prompt_ids()
    print(f"prompt: {len(prompt)} token IDs: {prompt.tolist()}")
    async with (
        tokstream.Client(base_url, model=model) as client,
        client.stream(prompt, max_tokens=24, temperature=0.0) as events,
    ):
        async for event in events:
            match event:
                case tokstream.Token(id=token_id, text=text):
                    print(f"token {token_id:>7}  {text!r}")
                case tokstream.Done() as done:
                    echoed = np.array_equal(done.prompt_token_ids, prompt)
                    print(f"done: {len(done.token_ids)} tokens, finish {done.finish_reason}")
                    print(f"prompt echo verified: {'yes' if echoed else 'NO'}")
                    return echoed
                case tokstream.Error(error=error, token_ids=ids):
                    print(f"failed after {ids.size} tokens: {error}")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument("--model", default="tiny-qwen", help="its served model name")
    parser.add_argument("--tokenizer", type=Path, help="the model's tokenizer (default: tiny)")
    args = parser.parse_args()
    tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
    try:
        with server_for(args.base_url, model=args.model) as server:
            ok = trio.run(stream, server.base_url, server.model, tok)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
