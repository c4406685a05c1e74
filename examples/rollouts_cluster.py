"""Many concurrent multi-turn rollouts across a routed vLLM cluster, with sessions and priority.

Run it (after ``make venv``; with no ``--base-url`` it installs vllm-router if
needed and starts a 2-replica cluster itself, about 80 s and 7 GB of RAM)::

    .venv/bin/python examples/rollouts_cluster.py
    .venv/bin/python examples/rollouts_cluster.py --base-url URL   # a `make cluster` router

Eight rollouts run at once, four turns each, every one a token-exact
``tokstream.Context`` conversation. The cluster is vllm-router
(``--policy consistent_hash``) in front of vLLM replicas; a rollout's client
sends its session key as ``X-Session-ID``, so the router keeps every turn of a
rollout on one replica, whose prefix cache already holds the conversation.
Even rollouts go with ``priority`` 0 ("eval"), odd ones with 10 ("train").

The workload runs twice, with different text: with affinity (a session key per
rollout), then without (no session key; each request only carries its own
``X-Request-Id``, as most clients do). For each it prints, per rollout, the
replica that served each turn, and each replica's prefix-cache hit rate from
its own ``/metrics`` (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``;
the router's ``/metrics`` shows only one replica's).

Which replica served a turn comes from the ``x-tokstream-replica`` response
header, which the testing kit's replicas add and the router passes through. A
cluster of your own shows ``?`` there unless its replicas add such a header
(the README shows how).

Replies are forced to exact token IDs with a structured-output grammar, so the
run is deterministic on the tiny random-weight model.

Usage (after ``make vllm router``)::

    .venv/bin/python examples/rollouts_cluster.py          # starts a 2-replica cluster itself
    make cluster                                            # or run against a running one:
    .venv/bin/python examples/rollouts_cluster.py --base-url http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
import json
import logging
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import trio

from tokstream import Context, Done, Tokenizer
from tokstream.testing import (
    REPLICA_HEADER,
    VLLMCluster,
    ensure_model,
    fetch_metrics,
    forcing_body,
)

ROLLOUTS = 8
TURNS = 4
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"


class ReplicaRecorder(httpx.AsyncBaseTransport):
    """httpx's own transport, noting which replica answered each completion request."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.replicas: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/completions"):
            self.replicas.append(response.headers.get(REPLICA_HEADER, "?"))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Rollout:
    """One rollout's outcome: the replica of each turn, and whether each echo matched."""

    index: int
    priority: int
    replicas: list[str] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)


def task_text(phase: str, index: int) -> str:
    """A rollout's own long task (about 300 tokens), so no two rollouts share a prefix."""
    facts = " ".join(f"fact {phase}-{index}-{k} = {k * 7919 % 1000};" for k in range(30))
    return f"Task {phase}/{index}: summarise these facts, one turn at a time. {facts}"


async def rollout(
    base_url: str, model: str, tok: Tokenizer, phase: str, index: int, affinity: bool
) -> Rollout:
    """Run one rollout's turns; the session key is its ID when ``affinity`` is on."""
    result = Rollout(index, priority=0 if index % 2 == 0 else 10)
    recorder = ReplicaRecorder()
    # With affinity, the context's own session key goes with every turn (what run_turn
    # does by itself); without, only a per-request ID, which the router hashes instead.
    ctx = Context(tok, session_id=f"{phase}-rollout-{index}")
    ctx.add_system(f"You are worker {index}.")
    ctx.add_user(task_text(phase, index))
    session = ctx.session_id if affinity else None
    async with tokstream.Client(
        base_url, model=model, session_id=session, transport=recorder
    ) as client:
        for turn in range(TURNS):
            ctx.begin_assistant(thinking=False)
            sent = ctx.prompt_ids().copy()
            reply = tok.encode(f"Turn {turn}: noted facts of part {turn}.").tolist()
            done: Done = await client.complete(
                sent,
                max_tokens=len(reply) + 4,
                priority=result.priority,
                request_id=f"{phase}-{index}-{turn}",
                extra_body=forcing_body(reply),
            )
            echoed = done.prompt_token_ids
            result.exact.append(echoed is not None and np.array_equal(echoed, sent))
            ctx.append_reply(done)
            more = " ".join(f"detail {phase}-{index}-{turn}-{k};" for k in range(40))
            ctx.add_user(f"Next part, please. {more}")
    result.replicas = recorder.replicas
    return result


def replica_urls(base_url: str) -> dict[str, str]:
    """``{replica tag: root URL}`` of the router's workers (``GET /workers``).

    A replica's tag is the ``x-tokstream-replica`` header on its ``/health``; an
    untagged replica is labelled by its URL.
    """
    root = base_url.removesuffix("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/workers", timeout=30) as response:
        urls = [w["url"] for w in json.load(response)["workers"]]
    labelled = {}
    for url in urls:
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            labelled[response.headers.get(REPLICA_HEADER, url)] = url
    return dict(sorted(labelled.items()))


async def run_phase(
    base_url: str, model: str, tok: Tokenizer, replicas: dict[str, str], affinity: bool
) -> tuple[list[Rollout], dict[str, tuple[float, float]]]:
    """All rollouts at once; returns them and each replica's (hits, queries) delta."""
    phase = "affine" if affinity else "spread"
    before = {k: await trio.to_thread.run_sync(fetch_metrics, url) for k, url in replicas.items()}
    results: list[Rollout] = []

    async def one(index: int) -> None:
        results.append(await rollout(base_url, model, tok, phase, index, affinity))

    async with trio.open_nursery() as nursery:
        for index in range(ROLLOUTS):
            nursery.start_soon(one, index)
    after = {k: await trio.to_thread.run_sync(fetch_metrics, url) for k, url in replicas.items()}
    cache = {
        k: (a[HITS] - before[k][HITS], a[QUERIES] - before[k][QUERIES]) for k, a in after.items()
    }
    return sorted(results, key=lambda r: r.index), cache


def report(title: str, results: list[Rollout], cache: dict[str, tuple[float, float]]) -> float:
    """Print one phase; return its overall hit rate."""
    print(f"{title}:")
    for r in results:
        turns = " ".join(r.replicas)
        exact = "ok" if all(r.exact) else "MISMATCH"
        print(f"  rollout {r.index} (priority {r.priority:2d}): replicas {turns}  echo {exact}")
    for name, (hits, queries) in cache.items():
        rate = hits / queries if queries else 0.0
        print(f"  replica {name}: prefix cache {hits:.0f}/{queries:.0f} tokens hit ({rate:.0%})")
    total = sum(h for h, _ in cache.values()) / max(1.0, sum(q for _, q in cache.values()))
    print(f"  cluster: {total:.0%} of prompt tokens came from the prefix cache")
    return total


async def run(base_url: str, model: str, tok: Tokenizer) -> bool:
    """Both phases; print the report and the checks; return whether all passed."""
    replicas = await trio.to_thread.run_sync(replica_urls, base_url)
    listing = ", ".join(f"{name} at {url}" for name, url in replicas.items())
    print(f"router {base_url}, {len(replicas)} replicas: {listing}")
    affine, affine_cache = await run_phase(base_url, model, tok, replicas, affinity=True)
    spread, spread_cache = await run_phase(base_url, model, tok, replicas, affinity=False)
    with_rate = report("with affinity (X-Session-ID per rollout)", affine, affine_cache)
    without_rate = report("without (a fresh X-Request-Id per request)", spread, spread_cache)
    tagged = all("?" not in r.replicas for r in affine + spread)
    checks = {
        "every prompt echoed exactly": all(all(r.exact) for r in affine + spread),
        "prefix-cache hit rate higher with affinity": with_rate > without_rate,
    }
    if tagged:
        checks["each rollout stayed on one replica"] = all(
            len(set(r.replicas)) == 1 for r in affine
        )
    else:
        print(f"(replicas do not send {REPLICA_HEADER}: per-turn replica checks skipped)")
    for name, passed in checks.items():
        print(f"check: {name}: {'yes' if passed else 'NO'}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run both phases, return 0 if every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vllm-router's base URL (…/v1)")
    parser.add_argument("--model", default="tiny-qwen", help="served model name")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json or its dir (default: tiny)")
    args = parser.parse_args(argv)
    # The testing kit reports its setup steps (model, servers, router) on this logger.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    tok = Tokenizer.load(args.tokenizer or ensure_model())
    if args.base_url:
        passed = trio.run(run, args.base_url, args.model, tok)
    else:
        with VLLMCluster(n=2) as cluster:  # replicas and router stopped by PID on exit
            passed = trio.run(run, cluster.base_url, cluster.model, tok)
    print("all checks passed" if passed else "SOME CHECKS FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
