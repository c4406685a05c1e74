"""Tests of tokstream.vllm_cpu that need no vLLM: tokenizer, model dir, process control."""

from __future__ import annotations

import json
import os
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

from tokstream.vllm_cpu import (
    ENDOFTEXT_ID,
    IM_END_ID,
    THINK_ID,
    TOOL_CALL_ID,
    InstallError,
    ServerStartError,
    VLLMServer,
    ensure_model,
    forced_grammar,
    forcing_body,
    free_port,
)
from tokstream.vllm_cpu.install import _Context, _run
from tokstream.vllm_cpu.model import (
    ADDED_TOKENS,
    QWEN_SPLIT_PATTERN,
    load_tiktoken_ranks,
    qwen_tiktoken_path,
)
from tokstream.vllm_cpu.server import _stat, process_family

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
        mergeable_ranks=load_tiktoken_ranks(qwen_tiktoken_path()),
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


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET | st.characters(codec="utf-8"), max_size=40).map("".join))
def test_matches_tiktoken(tok: Tokenizer, reference: tiktoken.Encoding, text: str) -> None:
    normalized = unicodedata.normalize("NFC", text)
    ours = tok.encode(text, add_special_tokens=False).ids
    assert ours == reference.encode(normalized, allowed_special="all")
    assert tok.decode(ours, skip_special_tokens=False) == normalized


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


def test_ensure_model_is_idempotent_and_rebuilds_on_change(tmp_path: Path) -> None:
    out = ensure_model(tmp_path / "m", max_model_len=2048)
    tokenizer_json = out / "tokenizer.json"
    first = tokenizer_json.stat().st_mtime_ns
    assert ensure_model(out, max_model_len=2048) == out
    assert tokenizer_json.stat().st_mtime_ns == first
    ensure_model(out, max_model_len=1024)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 1024
    assert tokenizer_json.stat().st_mtime_ns != first


# -- forcing --------------------------------------------------------------------


def test_forced_grammar_and_body() -> None:
    assert forced_grammar([151667, 198, 10]) == "start: <[151667]> <[198]> <[10]>"
    body = forcing_body([9707, 1879])
    assert body == {
        "structured_outputs": {"grammar": "start: <[9707]> <[1879]>"},
        "logit_bias": {"151643": -100},
    }
    end_on_call_end = forcing_body([1], end_with=151658, stop_token_ids=[151658])
    assert end_on_call_end["logit_bias"] == {"151643": -100, "151645": -100}


@pytest.mark.parametrize("ids", [[], [1, IM_END_ID], [ENDOFTEXT_ID], [-1]])
def test_forced_grammar_refuses_bad_ids(ids: list[int]) -> None:
    with pytest.raises(ValueError):
        forced_grammar(ids)


def test_forcing_body_refuses_stop_id_in_stop_token_ids() -> None:
    with pytest.raises(ValueError, match="151658"):
        forcing_body([5, 151658], stop_token_ids=[151658])


# -- install --------------------------------------------------------------------


def test_install_step_failure_names_step_and_shows_output(tmp_path: Path) -> None:
    log = tmp_path / "install.log"
    ctx = _Context(log=log, report=None, total=1)
    script = "import sys; print('resolver says: no matching distribution'); sys.exit(3)"
    with pytest.raises(InstallError) as info:
        _run(ctx, 1, "install torch==2.13.0+cpu", [sys.executable, "-c", script])
    assert info.value.step == "install torch==2.13.0+cpu"
    assert "no matching distribution" in info.value.output_tail
    assert "install torch==2.13.0+cpu" in str(info.value)
    assert "no matching distribution" in str(info.value)


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
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    return venv


def _server(venv: Path, **kwargs: object) -> VLLMServer:
    return VLLMServer(
        venv=venv,
        model_dir=venv.parent / "model",
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
            [sys.executable, "-m", "tokstream.vllm_cpu", "stop", str(sleeper.pid)],
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
        [sys.executable, "-m", "tokstream.vllm_cpu", "status"],
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
    (tmp_path / "tiny-qwen").mkdir()
    (tmp_path / "tiny-qwen" / "config.json").write_text("{}")
    cli = [sys.executable, "-m", "tokstream.vllm_cpu"]
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
