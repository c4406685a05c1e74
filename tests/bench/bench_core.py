"""Benchmark: request encoding and stream decoding, against peers in the same run.

Run with ``make bench`` or ``python tests/bench/bench_core.py``.

* **Encode a 32k-ID numpy prompt** into the request body: tokstream's
  vectorised encoder against the obvious peers, ``json.dumps`` of
  ``arr.tolist()`` and ``msgspec`` of ``arr.tolist()``.
* **Decode a recorded vLLM stream** (one SSE event per read, as vLLM frames
  it) into token events: tokstream's sans-IO ``StreamDecoder`` against a
  straightforward peer (split on blank lines, ``json.loads``, one object per
  token), in µs per token.

Each figure is the best of several interleaved runs, with the process pinned
to one core where possible. No assertion: this is a measurement, not a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from tokstream import CompletionRequest, StreamDecoder

DATA = Path(__file__).resolve().parent.parent / "data"


def best_of(fn: Callable[[], object], runs: int = 40) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_encode() -> None:
    ids = np.random.default_rng(0).integers(0, 151936, size=32768).astype(np.int32)
    req = CompletionRequest(prompt=ids, max_tokens=16)
    fields = req.body_fields("tiny-qwen")

    def ours() -> bytes:
        return req.encode("tiny-qwen")

    def stdlib() -> bytes:
        return json.dumps({"prompt": ids.tolist(), **fields}).encode()

    def msgspec_list() -> bytes:
        return msgspec.json.encode({"prompt": ids.tolist(), **fields})

    assert json.loads(ours())["prompt"] == json.loads(stdlib())["prompt"]
    peers = {"tokstream": ours, "json.dumps(tolist)": stdlib, "msgspec(tolist)": msgspec_list}
    results = dict.fromkeys(peers, float("inf"))
    for _ in range(5):  # interleave
        for name, fn in peers.items():
            results[name] = min(results[name], best_of(fn, 20))
    base = results["tokstream"]
    print("## Encode a 32,768-ID numpy prompt into the request body")
    print("| encoder | µs | ratio to tokstream |")
    print("|---|---:|---:|")
    for name, secs in results.items():
        print(f"| {name} | {secs * 1e6:,.0f} | {secs / base:.2f}x |")
    print()


def _peer_decode(pieces: list[bytes]) -> int:
    tokens = []
    buf = b""
    for piece in pieces:
        buf += piece
        *events, buf = buf.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                continue
            chunk = json.loads(ev[6:])
            for choice in chunk.get("choices") or []:
                ids = choice["token_ids"] or []
                for i, tid in enumerate(ids):
                    tokens.append((tid, choice["text"] if i == len(ids) - 1 else ""))
    return len(tokens)


def bench_decode() -> None:
    raw = (DATA / "greedy_256_ignore_eos.sse").read_bytes()
    pieces = [p + b"\n\n" for p in raw.split(b"\n\n") if p]
    n_tokens = 256

    def ours() -> int:
        decoder = StreamDecoder()
        count = 0
        for piece in pieces:
            count += len(decoder.feed(piece))
        return count + len(decoder.finish())

    assert _peer_decode(pieces) == n_tokens
    ours_best = peer_best = 1e9
    for _ in range(5):
        ours_best = min(ours_best, best_of(ours, 40))
        peer_best = min(peer_best, best_of(lambda: _peer_decode(pieces), 40))
    print("## Decode a recorded vLLM stream (256 tokens, one SSE event per read)")
    print("| decoder | µs/token | ratio to tokstream |")
    print("|---|---:|---:|")
    print(f"| tokstream StreamDecoder | {ours_best / n_tokens * 1e6:.2f} | 1.00x |")
    print(
        f"| split + json.loads + tuple per token | {peer_best / n_tokens * 1e6:.2f} | "
        f"{peer_best / ours_best:.2f}x |"
    )
    print()


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    bench_encode()
    bench_decode()


if __name__ == "__main__":
    main()
