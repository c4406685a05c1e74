"""The ``tokstream`` command line against the live CPU vLLM, as a user runs it.

``generate`` from text and from IDs, ``chat`` with a forced tool call, ``models``,
``health``, the ``/v1`` hint on a real 404, and Ctrl-C: exit 130 and the
server's ``vllm:num_requests_running`` back to 0 (the request was aborted).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import tokstream
from tokstream.testing import VLLMServer, forcing_body

from .cli_helpers import tokstream_cli

pytestmark = pytest.mark.vllm

TOOLS = str(Path(__file__).parent / "cli_tools.py") + ":TOOLS"


async def test_generate_from_text_and_from_ids(
    vllm_server: VLLMServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = ["generate", "--base-url", vllm_server.base_url, "--max-tokens", "8"]
    greedy = ["--temperature", "0", "--extra-body", '{"ignore_eos": true}']
    run = await tokstream_cli(
        *base, *greedy, "--prompt", "Hello", "--tokenizer", str(tiny_model_dir), store=tmp_path
    )
    assert run.code == 0, run.err
    stats = run.err.strip()
    assert re.fullmatch(
        r"done: 8 tokens · finish length · ttft \d+\.\d{3} s · [\d.]+ tok/s · \d+\.\d{3} s · "
        r"prompt echo verified",
        stats,
    ), stats
    # The same prompt as IDs, with --show-ids and --logprobs: the same greedy tokens.
    run_ids = await tokstream_cli(
        *base, *greedy, "--ids", "9707", "--show-ids", "--logprobs", store=tmp_path
    )
    assert run_ids.code == 0, run_ids.err
    rows = [line.split() for line in run_ids.out.splitlines()]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    assert all(float(r[2]) <= 0 for r in rows)  # each token's log-probability
    as_json = await tokstream_cli(*base, *greedy, "--ids", "9707", "--json", store=tmp_path)
    done = json.loads(as_json.out.splitlines()[-1])
    assert done["token_ids"] == [int(r[1]) for r in rows]
    assert done["prompt_echo"] == "verified" and done["finish_reason"] == "length"


async def test_models_and_health(vllm_server: VLLMServer, tmp_path: Path) -> None:
    run = await tokstream_cli("models", "--base-url", vllm_server.base_url, store=tmp_path)
    assert run.code == 0, run.err
    assert run.out.splitlines()[1].split()[:2] == ["tiny-qwen", "4096"]
    run = await tokstream_cli("health", "--base-url", vllm_server.base_url, store=tmp_path)
    assert run.code == 0, run.err
    assert run.out.strip() == f"ok: {vllm_server.root_url} is healthy, serving tiny-qwen"


async def test_a_base_url_without_v1_gets_a_hint(vllm_server: VLLMServer, tmp_path: Path) -> None:
    run = await tokstream_cli(
        *("generate", "--base-url", vllm_server.root_url, "--ids", "9707"),
        store=tmp_path,
    )
    assert run.code == 4
    line = run.one_line_error()
    assert line.startswith("tokstream: NotFoundError: HTTP 404 from ")
    assert line.endswith(f"did you mean {vllm_server.root_url}/v1?")


async def test_chat_runs_a_forced_tool_call_and_saves_the_context(
    vllm_server: VLLMServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    tok = tokstream.Tokenizer.load(tiny_model_dir)
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    forced = tok.encode(reply).tolist()
    saved = tmp_path / "ctx.json"
    run = await tokstream_cli(
        *("chat", "--base-url", vllm_server.base_url, "--tokenizer", str(tiny_model_dir)),
        *("--tools", TOOLS, "--max-turns", "1", "--max-tokens", str(len(forced) + 4)),
        *("--extra-body", json.dumps(forcing_body(forced)), "--no-thinking"),
        store=tmp_path,
        stdin=f"Weather in Oslo?\n/save {saved}\n".encode(),
    )
    assert run.code == 0, run.err
    assert '[tool call #0] get_weather({"city": "Oslo"}) ok' in run.out
    assert '"in_worker_thread": true' in run.out  # the plain-function tool ran
    assert re.search(r"^done: \d+ tokens · finish stop .* prompt echo verified$", run.err, re.M)
    ctx = tokstream.Context.from_json(saved.read_text(), tok)
    assert [m.role for m in ctx.messages] == ["system", "user", "assistant", "tool"]
    assert ctx.messages[2].sampled_ids.tolist()[: len(forced)] == forced


async def test_ctrl_c_mid_stream_exits_130_and_the_server_aborts(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    args = ["generate", "--base-url", vllm_server.base_url, "--ids", "9707", "--show-ids"]
    args += ["--max-tokens", "3000", "--extra-body", '{"ignore_eos": true}']
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tokstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TOKSTREAM_FAILED_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        while out.count(b"\n") < 5:  # five tokens streamed: the request runs
            out += await proc.stdout.receive_some()
        running = await trio.to_thread.run_sync(vllm_server.metrics)
        assert running["vllm:num_requests_running"] == 1
        proc.send_signal(signal.SIGINT)
        err = b""
        while chunk := await proc.stderr.receive_some():
            err += chunk
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130
    assert err.decode().strip() == "tokstream: interrupted"
    assert os.listdir(tmp_path) == []  # interrupting is not a failure to save
    # The server aborts the request: nothing runs any more (waited for, not timed).
    while (await trio.to_thread.run_sync(vllm_server.metrics))["vllm:num_requests_running"]:  # noqa: ASYNC110 - another process's state
        await trio.sleep(0.05)
