"""The ``tokstream`` command line, run as a user runs it: a subprocess, with exit codes.

Every command runs against the replay server (recorded vLLM streams over a real
loopback socket); ``test_live_cli.py`` runs them against the live CPU vLLM.
Failures must be one line on stderr, no traceback, with the exit code of their
kind (``tokstream/cli/_common.py``: 2 input, 3 connection, 4 server, 5 stream,
130 interrupted). ``replay`` and ``failed`` have ``test_cli_failed.py``.
"""

from __future__ import annotations

import argparse
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
from tokstream.cli._common import describe
from tokstream.testing import ReplayServer

from .cli_helpers import DATA, ids_of, prompt_of, text_of, tokstream_cli

HERMES_PROMPT = ",".join(map(str, prompt_of("forced_hermes")))
STATS = re.compile(
    r"^done: 28 tokens · finish stop · ttft \d+\.\d{3} s · [\d.]+ tok/s · \d+\.\d{3} s · "
    r"prompt echo verified$"
)
TOOLS_FILE = str(Path(__file__).parent / "cli_tools.py")
TOOLS = TOOLS_FILE + ":TOOLS"
COMMANDS = ("generate", "chat", "models", "health", "decode", "replay", "failed")


# -- help and version ----------------------------------------------------------------


async def test_version_and_help(tmp_path: Path) -> None:
    run = await tokstream_cli("--version", store=tmp_path)
    assert run.code == 0 and run.out.strip() == f"tokstream {tokstream.__version__}"
    run = await tokstream_cli("--help", store=tmp_path)
    assert run.code == 0
    for command in COMMANDS:
        assert re.search(rf"^    {command}\b", run.out, re.M), command
    assert "exit codes:" in run.out and "TOKSTREAM_BASE_URL" in run.out
    for command in [*COMMANDS, "failed list", "failed show"]:
        run = await tokstream_cli(*command.split(), "--help", store=tmp_path)
        assert run.code == 0, run.err
        assert "``" not in run.out and ":class:" not in run.out, run.out  # no RST markup
        assert run.out.startswith(f"usage: tokstream {command}")


# -- generate ------------------------------------------------------------------------


async def test_generate_parses_the_reply_live(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "generate",
        *("--base-url", url, "--ids", HERMES_PROMPT, "--tokenizer", str(tiny_model_dir)),
        store=tmp_path,
    )
    assert run.code == 0, run.err
    # Thinking and text as they streamed; the call on a line of its own, not its raw tags.
    # Each section starts a line (the blank lines around the tags are the model's).
    assert run.out == 'thinking: plan\nHello \n[tool call #0] get_weather({"city": "Paris"}) ok\n'
    (stats,) = run.err.splitlines()
    assert STATS.match(stats), stats
    body = replay_server.requests[-1].json()
    assert body["model"] == "tiny-qwen"  # no --model: the server's first model
    assert body["prompt"] == prompt_of("forced_hermes") and body["max_tokens"] == 256


async def test_generate_without_a_tokenizer_shows_the_servers_text(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "generate", "--base-url", url, "--ids", HERMES_PROMPT, "--model", "m", store=tmp_path
    )
    assert run.code == 0, run.err
    assert run.out == text_of("forced_hermes") + "\n"
    assert STATS.match(run.err.strip()), run.err
    assert replay_server.requests[-1].json()["model"] == "m"


async def test_generate_show_ids_gives_one_row_per_token(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    args = ["generate", "--base-url", url, "--ids", HERMES_PROMPT, "--show-ids"]
    run = await tokstream_cli(*args, "--tokenizer", str(tiny_model_dir), store=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    rows = [line.split(None, 2) for line in lines if not line.startswith("[")]
    assert [int(r[0]) for r in rows] == list(range(1, 29))
    assert [int(r[1]) for r in rows] == ids_of("forced_hermes")
    # With a tokenizer each row has the token's own text (the server sends it per chunk).
    assert rows[0][2] == '"<think>"' and rows[24][2] == '"Paris"'
    assert rows[-1][2] == '"<|im_end|>"'
    # The call shows the moment it closes: right after its closing tag, before <|im_end|>.
    assert lines[-2] == '[tool call #0] get_weather({"city": "Paris"}) ok'


async def test_generate_json_emits_one_object_per_event(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    args = ["generate", "--base-url", url, "--ids", "-", "--json"]
    run = await tokstream_cli(
        *args,
        "--tokenizer",
        str(tiny_model_dir),
        store=tmp_path,
        stdin=json.dumps(prompt_of("forced_hermes")).encode(),
    )
    assert run.code == 0, run.err
    assert run.err == ""  # the stats are in the done event
    events = [json.loads(line) for line in run.out.splitlines()]
    tokens = [e for e in events if e["event"] == "token"]
    assert [e["id"] for e in tokens] == ids_of("forced_hermes")
    assert [e["index"] for e in tokens] == list(range(1, 29))
    assert "".join(e["text"] for e in events if e["event"] == "thinking") == "\nplan\n"
    (call,) = [e for e in events if e["event"] == "tool_call"]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert call["status"] == "ok"
    done = events[-1]
    assert done["event"] == "done" and done["tokens"] == 28 and done["finish_reason"] == "stop"
    assert done["prompt_echo"] == "verified" and done["token_ids"] == ids_of("forced_hermes")
    assert done["usage"]["completion_tokens"] == 28


async def test_generate_encodes_a_text_prompt_and_sends_every_field(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "generate",
        *("--base-url", url, "--prompt", "Hello world", "--tokenizer", str(tiny_model_dir)),
        *("--max-tokens", "9", "--temperature", "0.5", "--top-p", "0.9", "--top-k", "5"),
        *("--seed", "3", "--stop", "x", "--stop", "y", "--priority", "2", "--logprobs"),
        *("--extra-body", '{"ignore_eos": true}', "--api-key-env", "MY_KEY"),
        store=tmp_path,
        env={"MY_KEY": "sk-CLI-SECRET"},
    )
    assert run.code == 0, run.err
    request = replay_server.requests[-1]
    body = request.json()
    assert body["prompt"] == [9707, 1879]  # "Hello world", sent as is
    assert body["max_tokens"] == 9 and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["top_k"] == 5 and body["seed"] == 3 and body["stop"] == ["x", "y"]
    assert body["priority"] == 2 and body["logprobs"] == 0 and body["ignore_eos"] is True
    assert request.headers["authorization"] == "Bearer sk-CLI-SECRET"
    assert "sk-CLI-SECRET" not in run.out + run.err
    # The recording was made with another prompt: the echo check says so.
    assert run.err.strip().endswith("prompt echo DIFFERS")


async def test_color_only_on_a_terminal_or_when_asked(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    args = ["generate", "--base-url", url, "--ids", HERMES_PROMPT, "--tokenizer"]
    plain = await tokstream_cli(*args, str(tiny_model_dir), store=tmp_path)
    assert "\x1b" not in plain.out + plain.err
    colored = await tokstream_cli(*args, str(tiny_model_dir), "--color", "always", store=tmp_path)
    assert colored.code == 0
    assert "\x1b[2mplan\x1b[0m" in colored.out  # thinking, dimmed
    assert re.search(r"\x1b\[1;33m\[tool call #0\] get_weather", colored.out)


# -- errors: one line, the right exit code, nothing sent ------------------------------

INPUT_ERRORS = [
    (["generate", "--ids", "1,x"], "--ids must be token IDs"),
    (["generate", "--ids", "1.5,2"], "--ids must be token IDs"),
    (["generate", "--ids", "/nonexistent/ids.txt"], "--ids /nonexistent/ids.txt: no such file"),
    (["generate", "--ids", "ids.txt"], "--ids ids.txt: no such file"),
    (
        ["generate", "--ids", "1,2", "--base-url", "localhost:8000/v1"],
        "--base-url 'localhost:8000/v1' must start with http:// or https:// "
        "(did you mean http://localhost:8000/v1?)",
    ),
    (["generate", "--ids", "1,2", "--max-tokens", "0"], "invalid max_tokens=0: must be at least 1"),
    (["generate", "--ids", "1,2", "--max-tokens", "x"], "invalid int value: 'x'"),
    (["generate", "--ids", "1,2", "--temperature", "-1"], "temperature"),
    (["generate", "--ids", "1,2", "--extra-body", "{nope"], "--extra-body is not JSON"),
    (["generate", "--ids", "1,2", "--extra-body", "[1]"], "--extra-body must be a JSON object"),
    (["generate", "--prompt", "hi"], "--prompt needs --tokenizer DIR"),
    (["generate", "--prompt", "hi", "--tokenizer", "/nonexistent/tok"], "/nonexistent/tok"),
    (["generate"], "one of the arguments --prompt --ids/--prompt-ids is required"),
    (["generate", "--ids", "1", "--api-key-env", "TOKSTREAM_TEST_UNSET"], "is not set"),
    (["decode", "/nonexistent/x.sse"], "/nonexistent/x.sse: No such file or directory"),
    (["chat"], "the following arguments are required: --tokenizer"),
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("args", "needle"), INPUT_ERRORS)
async def test_bad_input_is_one_line_and_exit_2(
    replay_server: ReplayServer, tmp_path: Path, args: list[str], needle: str
) -> None:
    # A reachable server, so that only the input can be at fault, and nothing may be sent.
    url = replay_server.url("replay=forced_hermes")
    env = {"TOKSTREAM_BASE_URL": url, "TOKSTREAM_MODEL": "m"}
    run = await tokstream_cli(*args, store=tmp_path, env=env)
    assert run.code == 2, run.err
    assert needle in run.one_line_error()
    assert replay_server.requests == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tools", "no_such_module_xyz:TOOLS"], "no module named 'no_such_module_xyz'"),
        (["--tools", TOOLS_FILE], "give module:attr"),
        (["--tools", TOOLS_FILE + ":NOPE"], "has no 'NOPE'"),
        (["--tools", TOOLS_FILE + ":threading"], "is not a function"),
        (["--resume", "/nonexistent/ctx.json"], "/nonexistent/ctx.json"),
        (["--resume", TOOLS_FILE], "not a saved context"),
        (["--chat-format", "nope"], "nope"),
    ],
)
async def test_chat_bad_input_is_one_line_and_exit_2(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path, args: list[str], needle: str
) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli(
        "chat",
        *("--base-url", url, "--tokenizer", str(tiny_model_dir), *args),
        store=tmp_path,
        stdin=b"hi\n",
    )
    assert run.code == 2, run.err
    assert needle in run.one_line_error()
    assert replay_server.requests == []


async def test_a_base_url_without_v1_gets_a_hint(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    # The recorded 404 body is vLLM's; the URL lacks /v1, so the hint says what to try.
    root = replay_server.url("status=404,unknown_model").removesuffix("/v1")
    for model in ([], ["--model", "m"]):  # the 404 comes from /models, then /completions
        run = await tokstream_cli(
            "generate", "--base-url", root, "--ids", "1,2", *model, store=tmp_path
        )
        assert run.code == 4
        line = run.one_line_error()
        assert line.startswith("tokstream: NotFoundError: HTTP 404 from ")
        assert f"did you mean {root}/v1?" in line
    with_v1 = replay_server.url("status=404,unknown_model")
    run = await tokstream_cli("generate", "--base-url", with_v1, "--ids", "1", store=tmp_path)
    assert run.code == 4 and "did you mean" not in run.one_line_error()


@pytest.mark.parametrize(
    ("scenario", "code", "cls"),
    [
        ("refused", 3, "ConnectError"),
        ("status=400,prompt_too_long", 4, "BadRequestError"),
        ("status=500,text", 4, "InternalServerError"),
        ("sse=oov_token_id_beyond_embedding", 4, "InBandError"),
        ("close=forced_hermes,3", 5, "RemoteDisconnected"),
        ("junk", 5, "ProtocolError"),
    ],
)
async def test_generate_failures_exit_by_kind_and_are_saved(
    replay_server: ReplayServer, tmp_path: Path, scenario: str, code: int, cls: str
) -> None:
    url = "http://127.0.0.1:9/v1" if scenario == "refused" else replay_server.url(scenario)
    run = await tokstream_cli(
        "generate", "--base-url", url, "--model", "m", "--ids", "1,2", store=tmp_path
    )
    assert run.code == code, run.err
    line = run.one_line_error()
    assert line.startswith(f"tokstream: {cls}: ")
    (saved,) = os.listdir(tmp_path)
    assert line.endswith(f" (saved for replay: tokstream replay {tmp_path / saved})")
    if scenario.startswith("close="):
        assert run.out.startswith("<think>")  # what arrived was shown before the error


def test_connection_hint_for_the_default_url() -> None:
    exc = tokstream.ConnectError("cannot connect to http://127.0.0.1:8000/v1/completions")
    default = argparse.Namespace(base_url="http://127.0.0.1:8000/v1", base_url_from="default")
    assert "start a server there with `make serve`, or pass --base-url" in describe(exc, default)
    given = argparse.Namespace(base_url="http://127.0.0.1:8000/v1", base_url_from="flag")
    assert "make serve" not in describe(exc, given)


# -- models, health ------------------------------------------------------------------


async def test_models_lists_the_served_models(replay_server: ReplayServer, tmp_path: Path) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli("models", "--base-url", url, store=tmp_path)
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "MODEL      MAX LEN  OWNED BY  ROOT",
        "tiny-qwen     4096  vllm      /models/tiny",
    ]
    run = await tokstream_cli("models", "--base-url", url, "--json", store=tmp_path)
    assert json.loads(run.out) == {
        "id": "tiny-qwen",
        "max_model_len": 4096,
        "root": "/models/tiny",
        "owned_by": "vllm",
    }
    run = await tokstream_cli("models", "--base-url", "http://127.0.0.1:9/v1", store=tmp_path)
    assert run.code == 3 and "ConnectError" in run.one_line_error()


async def _unhealthy_server(task_status: trio.TaskStatus[int]) -> None:
    """Answers /v1/models, but /health with 503 (a server still loading, or sick)."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some()
        path = request.split()[1]
        body = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
        status = b"200 OK" if path.endswith(b"/models") else b"503 Service Unavailable"
        head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        await stream.send_all(head % (status, len(body)) + b"connection: close\r\n\r\n" + body)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_health_tells_down_from_unhealthy(
    replay_server: ReplayServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    url = replay_server.url("replay=forced_hermes")
    run = await tokstream_cli("health", "--base-url", url, store=tmp_path)
    assert run.code == 0, run.err
    root = url.removesuffix("/v1")
    assert run.out.strip() == f"ok: {root} is healthy, serving tiny-qwen"
    run = await tokstream_cli("health", "--base-url", "http://127.0.0.1:9/v1", store=tmp_path)
    assert run.code == 3 and "ConnectError" in run.one_line_error()
    port = await nursery.start(_unhealthy_server)
    run = await tokstream_cli("health", "--base-url", f"http://127.0.0.1:{port}/v1", store=tmp_path)
    assert run.code == 4
    assert "/health did not answer 200" in run.one_line_error() and "(m)" in run.err


# -- decode --------------------------------------------------------------------------


async def test_decode_shows_a_recording_token_by_token(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = DATA / "forced_hermes.sse"
    run = await tokstream_cli("decode", str(path), store=tmp_path)
    assert run.code == 0, run.err
    rows = [line.split(None, 2) for line in run.out.splitlines()]
    assert [int(r[1]) for r in rows] == ids_of("forced_hermes")
    assert run.err == "done: 28 tokens · finish stop\n"  # a recording: no timing, no request
    # Through stdin, with the tokenizer: each token's own text, and the call as it closes.
    run = await tokstream_cli(
        "decode", "-", "--tokenizer", str(tiny_model_dir), store=tmp_path, stdin=path.read_bytes()
    )
    assert run.code == 0, run.err
    assert '[tool call #0] get_weather({"city": "Paris"}) ok' in run.out
    assert run.out.splitlines()[0].split() == ["1", "151667", '"<think>"']
    run = await tokstream_cli("decode", str(path), "--json", store=tmp_path)
    events = [json.loads(line) for line in run.out.splitlines()]
    assert [e["id"] for e in events if e["event"] == "token"] == ids_of("forced_hermes")


async def test_decode_exits_by_the_recorded_errors_kind(tmp_path: Path) -> None:
    run = await tokstream_cli("decode", str(DATA / "midstream_error_internal.sse"), store=tmp_path)
    assert run.code == 4
    assert run.one_line_error().startswith("tokstream: InBandError: ")
    assert os.listdir(tmp_path) == []  # a recording is not a request: nothing to save


# -- chat ----------------------------------------------------------------------------


async def test_chat_runs_tools_saves_and_resumes_token_exact(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("replay=forced_hermes")
    saved = tmp_path / "ctx.json"
    base = ["chat", "--base-url", url, "--tokenizer", str(tiny_model_dir), "--max-turns", "1"]
    stdin = f"What's the weather in Paris?\n/save {saved}\n".encode()
    run = await tokstream_cli(
        *base, "--tools", TOOLS, "--system", "Be brief.", store=tmp_path, stdin=stdin
    )
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert '[tool call #0] get_weather({"city": "Paris"}) ok' in lines
    assert "  > running get_weather (call #0, at token 27; the model is still writing)" in lines
    (result,) = [line for line in lines if "get_weather returned" in line]
    # The plain-function tool ran, in a worker thread, and its result went to the model.
    assert '"sky": "sunny"' in result and '"in_worker_thread": true' in result
    assert re.search(r"^done: 28 tokens · finish stop .* prompt echo DIFFERS$", run.err, re.M)
    assert "saved the context (" in run.err and f"to {saved}" in run.err

    tok = tokstream.Tokenizer.load(tiny_model_dir)
    first = tokstream.Context.from_json(saved.read_text(), tok)
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "tool"]
    assert first.messages[2].sampled_ids.tolist() == ids_of("forced_hermes")
    system = first.messages[0].text
    assert '"name": "get_weather"' in system and '"required": ["city"]' in system
    assert "Current weather for a city." in system and '"name": "get_time"' in system
    # The request carried the context's prompt; the reply follows it, verbatim.
    sent = replay_server.requests[-1].json()["prompt"]
    assert first.prompt_ids()[: len(sent)].tolist() == sent
    assert first.prompt_ids()[len(sent) : len(sent) + 28].tolist() == ids_of("forced_hermes")

    again = tmp_path / "ctx2.json"
    run = await tokstream_cli(
        *base,
        "--tools",
        TOOLS,
        "--resume",
        str(saved),
        store=tmp_path,
        stdin=f"And tomorrow?\n/save {again}\n/quit\nnever read\n".encode(),
    )
    assert run.code == 0, run.err
    second = tokstream.Context.from_json(again.read_text(), tok)
    assert [m.role for m in second.messages][:4] == ["system", "user", "assistant", "tool"]
    assert [m.role for m in second.messages][4:] == ["user", "assistant", "tool"]
    n = len(first.prompt_ids())
    assert second.prompt_ids()[:n].tolist() == first.prompt_ids().tolist()  # token-exact
    posts = [r for r in replay_server.requests if r.method == "POST"]
    assert len(posts) == 2  # one turn per run; nothing after /quit


async def test_chat_stream_failure_exits_by_kind(
    replay_server: ReplayServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    url = replay_server.url("close=forced_hermes,5")
    run = await tokstream_cli(
        *("chat", "--base-url", url, "--tokenizer", str(tiny_model_dir), "--model", "m"),
        store=tmp_path,
        stdin=b"hi\nnever sent\n",
    )
    assert run.code == 5
    assert run.one_line_error().startswith("tokstream: RemoteDisconnected: ")
    assert [r.method for r in replay_server.requests] == ["POST"]


# -- Ctrl-C ---------------------------------------------------------------------------


async def test_interrupt_mid_stream_exits_130_and_hangs_up(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    url = replay_server.url("stall=forced_hermes,3")
    args = ["generate", "--base-url", url, "--model", "m", "--ids", "1,2", "--show-ids"]
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tokstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TOKSTREAM_FAILED_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        with trio.fail_after(60):
            while out.count(b"\n") < 3:  # the 3 tokens before the stall
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
    assert [int(line.split()[1]) for line in out.decode().splitlines()] == ids_of("forced_hermes")[
        :3
    ]
    assert os.listdir(tmp_path) == []  # an interrupted stream is not a failure to save
