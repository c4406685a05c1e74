"""Concurrent RL rollouts with priority: what a trainer needs, token-exact.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/rl_rollout.py
    .venv/bin/python examples/rl_rollout.py --base-url http://127.0.0.1:8000/v1 --rollouts 64

``--rollouts`` conversations (16 by default) run at once, two turns each, with
a progress bar. Half go with ``priority`` 0 ("eval"), half with 10 ("train"): a
lower value runs earlier on a server started with ``--scheduling-policy
priority`` (the testing kit's is). Each rollout is a ``tokstream.Context``:
its sampled replies are kept as the exact IDs the server streamed, with their
log-probabilities, never re-encoded. For the trainer, each rollout gives

* ``input_ids``: the whole conversation (``ctx.prompt_ids()``);
* ``loss_mask``: true exactly on the IDs the model sampled (``ctx.generation_mask()``);
* ``logprobs``: the sampling log-probabilities there (``ctx.logprobs()``, NaN elsewhere);

and the batch pads them to one ``[rollouts, longest]`` array each. The checks:
every prompt the server echoed equals what was sent, each mask covers exactly
the streamed IDs, and the logprobs are the streamed ones.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio
from rich.console import Console
from rich.progress import Progress

from tokstream.testing import ensure_model, server_for

QUESTIONS = ["What is 17 * 23?", "Name a prime above 100.", "Spell 'river' backwards."]


@dataclass
class Rollout:
    """One finished rollout, as a trainer takes it."""

    index: int
    priority: int
    input_ids: npt.NDArray[np.int32]
    loss_mask: npt.NDArray[np.bool_]
    logprobs: npt.NDArray[np.float32]
    streamed: list[int]  # every ID the server streamed, replies in order
    streamed_logprobs: list[float]
    echo_ok: bool


async def rollout(
    client: tokstream.Client, tok: tokstream.Tokenizer, index: int, max_tokens: int
) -> Rollout:
    priority = 0 if index % 2 == 0 else 10
    ctx = tokstream.Context(tok)
    ctx.add_user(QUESTIONS[index % len(QUESTIONS)])
    streamed: list[int] = []
    streamed_logprobs: list[float] = []
    echo_ok = True
    for follow_up in (None, "Are you sure? Check it once more."):
        if follow_up is not None:
            ctx.add_user(follow_up)
        ctx.begin_assistant()
        prompt = ctx.prompt_ids()
        done = await client.complete(
            prompt,
            max_tokens=max_tokens,
            temperature=1.0,
            seed=index,
            priority=priority,
            logprobs=0,  # the sampled token's log-probability
        )
        echo_ok = echo_ok and np.array_equal(done.prompt_token_ids, prompt)
        ctx.append_reply(done)  # the exact IDs and logprobs, then the turn's closing framing
        streamed += done.token_ids.tolist()
        assert done.logprobs is not None
        streamed_logprobs += done.logprobs.tolist()
    return Rollout(
        index,
        priority,
        ctx.prompt_ids(),
        ctx.generation_mask(),
        ctx.logprobs(),
        streamed,
        streamed_logprobs,
        echo_ok,
    )


def pad(rows: list[npt.NDArray[np.generic]], fill: object) -> npt.NDArray[np.generic]:
    """Right-pad to one array (the trainer's batch)."""
    out = np.full((len(rows), max(len(r) for r in rows)), fill, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


async def run(base_url: str, model: str, tok: tokstream.Tokenizer, n: int, max_tokens: int) -> bool:
    results: list[Rollout] = []
    async with tokstream.Client(base_url, model=model) as client:
        with Progress(console=Console(stderr=True)) as progress:
            task = progress.add_task("rollouts", total=n)

            async def one(i: int) -> None:
                results.append(await rollout(client, tok, i, max_tokens))
                progress.advance(task)

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
    results.sort(key=lambda r: r.index)
    for r in results:
        sampled = int(r.loss_mask.sum())
        mean = float(np.nanmean(r.logprobs)) if sampled else float("nan")
        print(
            f"rollout {r.index:>2} (priority {r.priority:>2}): {len(r.input_ids)} IDs, "
            f"{sampled} sampled, mean logprob {mean:.2f}, echo {'ok' if r.echo_ok else 'DIFFERS'}"
        )
    input_ids = pad([r.input_ids for r in results], 0)
    loss_mask = pad([r.loss_mask for r in results], False)
    logprobs = pad([r.logprobs for r in results], np.nan)
    print(
        f"batch: input_ids {input_ids.dtype}{list(input_ids.shape)}, loss_mask "
        f"{loss_mask.dtype}{list(loss_mask.shape)}, logprobs {logprobs.dtype}{list(logprobs.shape)}"
    )
    checks = {
        "every prompt echoed exactly": all(r.echo_ok for r in results),
        "each mask covers exactly the streamed IDs": all(
            r.input_ids[r.loss_mask].tolist() == r.streamed for r in results
        ),
        "the logprobs are the streamed ones": all(
            np.allclose(r.logprobs[r.loss_mask], r.streamed_logprobs)
            and bool(np.isnan(r.logprobs[~r.loss_mask]).all())
            for r in results
        ),
        "every rollout finished": len(results) == n,
    }
    for check, ok in checks.items():
        print(f"check: {check}: {'yes' if ok else 'NO'}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument("--model", default="tiny-qwen", help="its served model name")
    parser.add_argument("--tokenizer", type=Path, help="the model's tokenizer (default: tiny)")
    parser.add_argument("--rollouts", type=int, default=16, help="concurrent rollouts (16)")
    parser.add_argument("--max-tokens", type=int, default=24, help="per reply (24)")
    args = parser.parse_args()
    tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
    try:
        with server_for(args.base_url, model=args.model) as server:
            ok = trio.run(run, server.base_url, server.model, tok, args.rollouts, args.max_tokens)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("rl_rollout: all checks passed" if ok else "rl_rollout: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
