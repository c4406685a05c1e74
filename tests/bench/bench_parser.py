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

Then every model family's format (``tests/format_specs.py``) on generated
replies with its real tokenizer (``tokstream.testing.family_tokenizer``),
mostly text with a few calls each, as agent replies are:
tokstream per token and whole, next to vLLM's own parser for that format
(``Parser.parse_delta`` one token at a time, its deltas detokenized
beforehand so only parsing is timed), run in the CPU vLLM venv when it is
installed (``make vllm``; ``--no-vllm`` skips it).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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
    ap.add_argument("--no-vllm", action="store_true", help="skip vLLM's parsers")
    ap.add_argument("--families-only", action="store_true", help="skip the Qwen section")
    a = ap.parse_args()
    if not Path(a.tokenizer).exists():
        print(f"no tokenizer at {a.tokenizer}; pass --tokenizer DIR", file=sys.stderr)
        return 2
    tok = Tokenizer.load(a.tokenizer)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, no migrations
    print(f"python {sys.version.split()[0]}, tokenizer {a.tokenizer}, one core")
    for fmt in () if a.families_only else ("hermes", "qwen3_coder"):
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
    families(a)
    return 0


def families(a: argparse.Namespace) -> None:
    """Every family's format: tokstream per token and whole vs vLLM's parse_delta."""
    from tests.families import family_dir, load_family, reference
    from tests.format_samples import TOOLS, opens_thinking, samples
    from tests.format_specs import SPECS
    from tokstream.testing._common import home_dir

    home = home_dir()
    rows = []
    jobs = []
    for name, spec in sorted(SPECS.items()):
        tok = load_family(spec.family, home)
        replies = [tok.encode(s.text).tolist() for s in samples(spec, 30, seed=2, prose=12)]
        n = sum(map(len, replies))
        thinking = "open" if opens_thinking(spec) else "auto"
        tokens = [[Token(i) for i in ids] for ids in replies]

        def new() -> ResponseParser:
            return ResponseParser(tok, reply_format=spec.reply_format, thinking=thinking)  # noqa: B023

        # Parsers are built before the clock starts, as vLLM's are (below).
        base = pt = wh = float("inf")
        for _ in range(max(3, a.runs // 3)):
            detoks = [tok.detokenizer().feed for _ in replies]
            t0 = time.perf_counter()
            for feed, ids in zip(detoks, replies, strict=True):
                for i in ids:
                    feed(i)
            base = min(base, time.perf_counter() - t0)
            parsers = [new() for _ in replies]
            t0 = time.perf_counter()
            for p, toks in zip(parsers, tokens, strict=True):
                feed = p.feed
                for t in toks:
                    feed((t,))
                p.finish()
            pt = min(pt, time.perf_counter() - t0)
            parsers = [new() for _ in replies]
            t0 = time.perf_counter()
            for p, ids in zip(parsers, replies, strict=True):
                p.feed_ids(ids)
                p.finish()
            wh = min(wh, time.perf_counter() - t0)
        base, pt, wh = (t / n * 1e6 for t in (base, pt, wh))
        rows.append((name, spec, n, pt - base, wh - base))
        stop = tok.token_id(spec.stop)
        jobs.append(
            {
                "tokenizer": str(family_dir(spec.family, home)),
                "tool_parser": spec.vllm_tool,
                "reasoning_parser": spec.vllm_reasoning,
                "tools": TOOLS,
                "chat_template_kwargs": spec.chat_kwargs,
                "harmony": spec.family == "gpt-oss",
                "samples": [
                    ids[:-1] if spec.strip_stop and ids[-1] == stop else ids for ids in replies
                ],
                "bench": True,
                "runs": 3,
            }
        )
    theirs: list[str] = ["-"] * len(rows)
    if not a.no_vllm and (home / "venv" / "bin" / "python").is_file():
        answers = reference(jobs, home, cache=False)
        theirs = [f"{ans[0]['us_per_token']:.2f}" for ans in answers]
    print("\nfamily formats: µs/token the parser adds on the detokenizer | vLLM parse_delta")
    head = ("format", "vLLM parser", "tokens", "per-token", "whole", "vLLM")
    print("{:14s} {:22s} {:>7s} {:>10s} {:>7s} {:>8s}".format(*head))
    for (name, spec, n, pt, wh), them in zip(rows, theirs, strict=True):
        parser = spec.vllm_tool + ("+" + spec.vllm_reasoning if spec.vllm_reasoning else "")
        print(f"{name:14s} {parser:22s} {n:7d} {pt:10.3f} {wh:7.3f} {them:>8s}")


if __name__ == "__main__":
    sys.exit(main())
