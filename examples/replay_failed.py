"""A request fails, is saved, is found again, and is replayed: as saved, then corrected.

Run it (after ``make venv``; with no ``--base-url`` it starts the tiny CPU vLLM
itself, about 35 s, and stops it at the end)::

    .venv/bin/python examples/replay_failed.py
    .venv/bin/python examples/replay_failed.py --base-url http://127.0.0.1:8000/v1 --model MODEL

1. A prompt with a token ID outside the vocabulary fails: vLLM answers with an
   error inside the stream (``InBandError``). The client saves the request, the
   error and whatever arrived as one JSON record, and ``Error.saved_to`` names it.
2. The record is found again the way a later process would: the newest file in
   the store's directory (``FailedRequestStore.paths()``), loaded with
   ``FailedRequest.load``.
3. ``client.replay(record)`` sends the saved body again: it fails the same way.
4. ``client.replay(record, prompt=fixed)`` sends it with the prompt corrected:
   it succeeds, and ``record.compare(ids)`` says how the outputs compare.

The same from a shell: ``tokstream failed list``, ``tokstream failed show
latest``, ``tokstream replay latest --prompt-ids 151644,872,...``. Records go
to a temporary directory here (``--failed-dir`` to keep them); by default a
client writes them to ``$TOKSTREAM_FAILED_DIR`` or ``~/.local/state/tokstream/failed``.
"""

from __future__ import annotations

import sys

try:
    import tokstream
except ImportError:  # not the project's Python
    sys.exit("tokstream is not installed here: run `make venv`, then use .venv/bin/python")

import argparse
import tempfile
from pathlib import Path

import trio

from tokstream.testing import ensure_model, server_for

NOT_A_TOKEN = 1_000_000  # beyond every vocabulary


async def final_event(events: tokstream.EventStream) -> tokstream.Done | tokstream.Error:
    async with events:
        async for event in events:
            if isinstance(event, (tokstream.Done, tokstream.Error)):
                return event
    raise AssertionError("a stream always ends with Done or Error")


async def run(base_url: str, model: str, tok: tokstream.Tokenizer, store: Path) -> bool:
    ctx = tokstream.Context(tok)
    ctx.add_user("Hello!")
    ctx.begin_assistant()
    good = ctx.prompt_ids().tolist()
    bad = [*good[:3], NOT_A_TOKEN, *good[3:]]
    async with tokstream.Client(base_url, model=model, failed_requests=store) as client:
        # 1. It fails, and is saved.
        first = await final_event(client.stream(bad, max_tokens=8, temperature=0.0))
        assert isinstance(first, tokstream.Error), first
        said = getattr(first.error, "server_message", first.error)
        print(f"1. failed: {type(first.error).__name__}: the server said: {said}")
        print(f"   saved to {first.saved_to}")

        # 2. Found again, as another process would find it.
        newest = tokstream.FailedRequestStore(store).paths()[0]
        record = tokstream.FailedRequest.load(newest)
        print(f"2. newest record: {newest.name}: {record.error.class_name}")
        print(f"   prompt {record.prompt.tolist()}, sent to {record.url}")

        # 3. As saved: the same failure (and a new record).
        again = await final_event(client.replay(record))
        same = isinstance(again, tokstream.Error) and type(again.error) is type(first.error)
        print(f"3. replayed as saved: {type(getattr(again, 'error', again)).__name__}")

        # 4. Corrected: it succeeds.
        fixed = await final_event(client.replay(record, prompt=good))
        print(f"4. replayed with the prompt corrected: {type(fixed).__name__}", end="")
        if isinstance(fixed, tokstream.Done):
            print(f", {len(fixed.token_ids)} tokens ({fixed.finish_reason})")
            print(
                f"   compared with the saved output: {record.compare(fixed.token_ids).describe()}"
            )
        else:
            print(f": {fixed.error}")
    saved = len(tokstream.FailedRequestStore(store).paths())
    print(f"records in {store}: {saved} (the first failure and its failed replay)")
    checks = {
        "the failure was saved where Error.saved_to says": first.saved_to == newest,
        "the replay as saved failed the same way": same,
        "the corrected replay succeeded": isinstance(fixed, tokstream.Done),
        "two records": saved == 2,
    }
    for check, ok in checks.items():
        print(f"check: {check}: {'yes' if ok else 'NO'}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running vLLM's OpenAI base URL (.../v1)")
    parser.add_argument("--model", default="tiny-qwen", help="its served model name")
    parser.add_argument("--tokenizer", type=Path, help="the model's tokenizer (default: tiny)")
    parser.add_argument(
        "--failed-dir", type=Path, help="keep the records here (default: a temp dir)"
    )
    args = parser.parse_args()
    tok = tokstream.Tokenizer.load(args.tokenizer or ensure_model())
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            server_for(args.base_url, model=args.model) as server,
        ):
            store = args.failed_dir or Path(tmp) / "failed"
            ok = trio.run(run, server.base_url, server.model, tok, store)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("replay_failed: all checks passed" if ok else "replay_failed: SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
