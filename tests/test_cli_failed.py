"""``tokstream replay`` and ``tokstream failed``, run as subprocesses.

Each test checks the exit code (``tokstream._trio._cli_common``: 2 input, 3
connection, 4 server, 5 stream, 130 interrupted), the output, and that a
failure prints one line and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import tokstream
from tokstream import FailedRequest
from tokstream.testing import ReplayServer

from .cli_helpers import PROMPT, ids_of, tokstream_cli

STATS = "done: 28 tokens · finish stop · ttft "


async def save_failure(url: str, store: Path, **fields: object) -> Path:
    async with tokstream.Client(url, model="tiny-qwen", failed_requests=store) as client:
        async with client.stream(PROMPT, max_tokens=64, temperature=0.0, **fields) as events:
            async for event in events:
                if isinstance(event, tokstream.Error):
                    assert event.saved_to is not None
                    return event.saved_to
    raise AssertionError("the stream did not fail")


async def test_failed_list_on_an_empty_store(tmp_path: Path) -> None:
    run = await tokstream_cli("failed", "list", store=tmp_path / "none")
    assert run.code == 0 and run.out.strip() == f"no saved failed requests in {tmp_path / 'none'}"


async def test_failed_list_when_saving_is_off() -> None:
    run = await tokstream_cli("failed", "list", store="off")
    assert run.code == 0 and run.out.startswith("saving failed requests is off")


async def test_failed_list_newest_first_and_show(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    first = await save_failure(replay_server.url("close=forced_hermes,7"), tmp_path)
    second = await save_failure(replay_server.url("sse=oov_token_id_beyond_embedding"), tmp_path)
    (tmp_path / "20000101T000000.000000Z-Junk-1-1.json").write_text("{not json")
    run = await tokstream_cli("failed", "list", store=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:4] == ["FAILED", "AT", "(UTC)", "ERROR"]
    assert lines[1].split()[2:5] == [
        "InBandError",
        "0",
        replay_server.url("sse=oov_token_id_beyond_embedding") + "/completions",
    ]
    assert lines[1].endswith(second.name)
    assert lines[2].split()[2:4] == ["RemoteDisconnected", "7"] and lines[2].endswith(first.name)
    assert "(unreadable)" in lines[3] and "it is not JSON" in lines[3]
    assert lines[4] == f"3 saved in {tmp_path}, newest first"

    run = await tokstream_cli("failed", "show", str(first), store=tmp_path)
    assert run.code == 0, run.err
    show = dict(line.split(None, 1) for line in run.out.splitlines() if not line.startswith(" "))
    assert show["error"].startswith("RemoteDisconnected: ")
    assert show["prompt"] == f"{len(PROMPT)} IDs [{', '.join(map(str, PROMPT))}]"
    assert show["output"].startswith("7 tokens [151667, 198, 10393")
    assert "temperature=0.0" in show["sampling"] and show["replay"] == f"tokstream replay {first}"

    run = await tokstream_cli("failed", "show", "latest", "--json", store=tmp_path)
    assert run.code == 0, run.err
    assert json.loads(run.out) == json.loads(second.read_bytes())
    run = await tokstream_cli("failed", "show", first.name, store=tmp_path)  # by name
    assert run.code == 0 and str(first) in run.out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("{cut short", "it is not JSON"),
        ('{"prompt": [1, 2]}', "not a tokstream failed-request record"),
    ],
)
async def test_bad_record_files_exit_2_with_one_line(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content)
    for command in (["failed", "show"], ["replay"]):
        run = await tokstream_cli(*command, str(path), store=tmp_path)
        assert run.code == 2
        line = run.one_line_error()
        assert needle in line and str(path) in line


async def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    run = await tokstream_cli("failed", "show", str(tmp_path / "x.json"), "--debug", store=tmp_path)
    assert run.code == 2 and "Traceback" in run.err and "InvalidRecord" in run.err


async def test_replay_streams_and_finds_an_identical_prefix(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    saved = await save_failure(replay_server.url("close=forced_hermes,7"), tmp_path, seed=5)
    healthy = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli("replay", str(saved), "--base-url", healthy, "--ids", store=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith(f"replaying {saved.name}: RemoteDisconnected after 7 tokens")
    rows = [line.split() for line in lines[1:-1]]
    assert [int(row[0]) for row in rows] == list(range(1, 29))  # one row per token
    assert [int(row[1]) for row in rows] == ids_of("forced_hermes")
    assert lines[-1] == (
        "compared with the saved output: identical prefix of 7 tokens "
        "(the replay went on for 21 more)"
    )
    assert json.loads(replay_server.requests[-1].body) == json.loads(saved.read_bytes())["request"]
    (stats,) = run.err.splitlines()  # the stats line, and nothing else
    # The recording echoes the prompt it was made with, not the saved request's.
    assert stats.startswith(STATS) and stats.endswith(" · prompt echo DIFFERS")


async def test_replay_reports_the_first_difference(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    saved = await save_failure(replay_server.url("close=forced_coder,5"), tmp_path)
    other = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli("replay", str(saved), "--base-url", other, store=tmp_path)
    assert run.code == 0, run.err
    a, b = ids_of("forced_coder")[0], ids_of("forced_hermes")[0]
    assert run.out.splitlines()[-1] == (
        f"compared with the saved output: first difference at token 0: saved ID {a}, "
        f"replay ID {b} (identical prefix of 0 tokens)"
    )


async def test_replay_overrides_prompt_model_and_max_tokens(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    saved = await save_failure(replay_server.url("sse=oov_token_id_beyond_embedding"), tmp_path)
    healthy = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "replay",
        str(saved),
        "--base-url",
        healthy,
        "--prompt-ids",
        "-",
        "--model",
        "m2",
        "--max-tokens",
        "9",
        store=tmp_path,
        stdin=b"[9707, 11, 1879]\n",
    )
    assert run.code == 0, run.err
    body = json.loads(replay_server.requests[-1].body)
    assert body["prompt"] == [9707, 11, 1879] and body["model"] == "m2"
    assert body["max_tokens"] == 9 and body["temperature"] == 0.0
    assert "the saved request had received no tokens" in run.out


async def test_replay_sends_the_key_from_api_key_env_and_never_prints_it(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    saved = await save_failure(replay_server.url("close=forced_hermes,2"), tmp_path)
    healthy = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "replay",
        str(saved),
        "--base-url",
        healthy,
        "--api-key-env",
        "MY_VLLM_KEY",
        store=tmp_path,
        env={"MY_VLLM_KEY": "sk-CLI-SECRET"},
    )
    assert run.code == 0, run.err
    assert replay_server.requests[-1].headers["authorization"] == "Bearer sk-CLI-SECRET"
    assert "sk-CLI-SECRET" not in run.out + run.err


@pytest.mark.parametrize(
    ("scenario", "code", "cls"),
    [
        ("refused", 3, "ConnectError"),
        ("status=500,prompt_too_long", 4, "InternalServerError"),
        ("sse=oov_token_id_beyond_embedding", 4, "InBandError"),
        ("close=forced_hermes,3", 5, "RemoteDisconnected"),
    ],
)
async def test_a_replay_that_fails_again_exits_by_error_kind(
    replay_server: ReplayServer, tmp_path: Path, scenario: str, code: int, cls: str
) -> None:
    saved = await save_failure(replay_server.url("close=forced_hermes,2"), tmp_path / "first")
    url = "http://127.0.0.1:9/v1" if scenario == "refused" else replay_server.url(scenario)
    run = await tokstream_cli("replay", str(saved), "--base-url", url, store=tmp_path / "again")
    assert run.code == code
    line = run.one_line_error()
    assert line.startswith(f"tokstream: the replay failed: {cls}: ")
    again = list((tmp_path / "again").iterdir())
    assert len(again) == 1 and line.endswith(f" (saved for replay: tokstream replay {again[0]})")
    assert "compared with the saved output:" in run.out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            ["--base-url", "localhost:8000"],
            "--base-url 'localhost:8000' must start with http:// or https:// "
            "(did you mean http://localhost:8000/v1?)",
        ),
        (["--max-tokens", "0"], "max_tokens=0"),
        (["--api-key-env", "TOKSTREAM_TEST_UNSET_VAR"], "$TOKSTREAM_TEST_UNSET_VAR is not set"),
        (["--prompt-ids", "-"], "--prompt-ids - must be token IDs"),
        (["--prompt-ids", "/nonexistent/ids.txt"], "--prompt-ids /nonexistent/ids.txt:"),
    ],
)
async def test_replay_bad_arguments_exit_2_before_sending(
    replay_server: ReplayServer, tmp_path: Path, extra: list[str], needle: str
) -> None:
    saved = await save_failure(replay_server.url("close=forced_hermes,2"), tmp_path)
    sent = len(replay_server.requests)
    run = await tokstream_cli("replay", str(saved), *extra, store=tmp_path, stdin=b"1,two,3")
    assert run.code == 2
    assert needle in run.one_line_error()
    assert len(replay_server.requests) == sent


async def test_replay_interrupted_exits_130_and_the_server_sees_the_hangup(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    saved = await save_failure(replay_server.url("close=forced_hermes,2"), tmp_path)
    env = {**os.environ, "TOKSTREAM_FAILED_DIR": str(tmp_path)}
    url = replay_server.url("stall=forced_hermes,3")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tokstream", "replay", str(saved), "--base-url", url, "--ids"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        with trio.fail_after(60):
            while out.count(b"\n") < 4:  # the header and the 3 tokens before the stall
                out += await proc.stdout.receive_some()
            proc.send_signal(signal.SIGINT)
            err = b""
            while chunk := await proc.stderr.receive_some():
                err += chunk
            await proc.wait()
            await replay_server.hangup_event.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130
    assert err.decode().strip() == "tokstream: interrupted"


async def test_decode_and_stream_use_the_same_conventions(tmp_path: Path) -> None:
    run = await tokstream_cli("decode", str(tmp_path / "missing.sse"), store=tmp_path)
    assert run.code == 2 and "missing.sse" in run.one_line_error()
    run = await tokstream_cli(
        "stream",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--prompt-ids",
        "1,x",
        store=tmp_path,
    )
    assert run.code == 2 and "--ids must be token IDs" in run.one_line_error()
    run = await tokstream_cli(
        "stream",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--prompt-ids",
        "1,2",
        store=tmp_path,
    )
    assert run.code == 3 and "ConnectError" in run.one_line_error()
    assert "(saved for replay: tokstream replay " in run.err
    (name,) = os.listdir(tmp_path)
    assert FailedRequest.load(tmp_path / name).prompt.tolist() == [1, 2]
