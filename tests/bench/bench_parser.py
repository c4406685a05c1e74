"""Benchmark: what the response parser adds per token, on one core.

Run with ``make bench`` or ``python tests/bench/bench_parser.py [--tokenizer DIR]``.

A realistic agent reply (thinking, prose, three Hermes tool calls with nested
JSON; and the same in Qwen3-Coder markup) is tokenized with the real Qwen
tokenizer, then fed to :class:`tokstream.ResponseParser`:

* ``per-token``: one ``feed([Token])`` call per token, as a live stream does;
* ``whole``: one ``feed_ids(ids)`` call;
* ``pull``: the pull API one token at a time (``receive_tokens`` then
  ``next_event()`` until ``NEED_TOKENS``), as the trio shell drives it.

The figure reported is the parser's cost **on top of** the incremental
detokenizer it drives (which a stream consumer needs anyway to get text): the
detokenizer-only loop is timed the same way and subtracted. Both totals are
printed too. Each figure is the best of several interleaved runs (min), in µs
per token, with the process pinned to one core.
No assertion: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tokstream import Token
from tokstream._tokenizer import Tokenizer
from tokstream.core.parser import NEED_TOKENS, ResponseParser

PROSE = (
    "Let me think about which tools to call. The user wants the weather in Paris "
    "and Tokyo, then a unit conversion; each call needs exact arguments. "
)


def _reply(fmt: str, repeat: int) -> str:
    parts = ["<think>\n", PROSE * repeat, "\n</think>\n\n", PROSE * repeat]
    calls = [
        ("get_weather", {"city": "Paris", "units": {"temp": "C", "wind": "km/h"}}),
        ("get_weather", {"city": "Tokyo", "days": [1, 2, 3], "note": 'say "hi"\n'}),
        ("convert", {"value": 12.5, "from": "C", "to": "F"}),
    ]
    for name, args in calls:
        if fmt == "hermes":
            body = json.dumps({"name": name, "arguments": args})
            parts.append(f"<tool_call>\n{body}\n</tool_call>\n")
        else:
            params = "".join(
                f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
                for k, v in args.items()
            )
            parts.append(f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>\n")
    parts.append(PROSE * repeat)
    return "".join(parts) + "<|im_end|>"


def _best(fns: list[Callable[[], None]], runs: int) -> list[float]:
    """Best (minimum) time of each function, measured interleaved so that drift
    in machine load affects all of them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokenizer", default=os.environ.get("TINY_MODEL_DIR", ".vllm/tiny-qwen"))
    ap.add_argument("--repeat", type=int, default=40, help="prose repetitions per block")
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    if not Path(a.tokenizer).exists():
        print(f"no tokenizer at {a.tokenizer}; pass --tokenizer DIR", file=sys.stderr)
        return 2
    tok = Tokenizer.load(a.tokenizer)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, no migrations
    print(f"python {sys.version.split()[0]}, tokenizer {a.tokenizer}, one core")
    for fmt in ("hermes", "qwen3_coder"):
        ids = tok.encode(_reply(fmt, a.repeat)).tolist()
        tokens = [Token(i) for i in ids]
        n = len(ids)

        def detok_only() -> None:
            feed = tok.detokenizer().feed
            for i in ids:  # noqa: B023
                feed(i)

        def per_token() -> None:
            p = ResponseParser(tok, tool_format=fmt)  # noqa: B023
            feed = p.feed
            for t in tokens:  # noqa: B023
                feed((t,))
            p.finish()

        def whole() -> None:
            p = ResponseParser(tok, tool_format=fmt)  # noqa: B023
            p.feed_ids(ids)  # noqa: B023
            p.finish()

        def pull() -> None:
            p = ResponseParser(tok, tool_format=fmt)  # noqa: B023
            receive, next_event = p.receive_tokens, p.next_event
            for t in tokens:  # noqa: B023
                receive((t,))
                while next_event() is not NEED_TOKENS:
                    pass
            p.end_of_reply()
            while next_event() is not NEED_TOKENS:
                pass

        check = ResponseParser(tok, tool_format=fmt)
        check.feed_ids(ids)
        reply = check.finish()[-1]
        calls = getattr(reply, "tool_calls", ())
        assert len(calls) == 3 and all(c.ok for c in calls), calls
        timed = _best([detok_only, per_token, whole, pull], a.runs)
        base, pt, wh, pl = (t / n * 1e6 for t in timed)
        print(
            f"{fmt:12s} {n:6d} tokens | detokenizer alone {base:.3f} µs/tok | "
            f"parser per-token total {pt:.3f} (adds {pt - base:.3f}) | "
            f"whole total {wh:.3f} (adds {wh - base:.3f}) | "
            f"pull per-token total {pl:.3f} (adds {pl - base:.3f}) µs/tok"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
