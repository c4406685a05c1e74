"""The README's quickstart runs as written (against the live CPU vLLM)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def quickstart() -> str:
    return python_blocks()[0]


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.vllm
def test_quickstart_runs_as_written(vllm_server: object) -> None:
    code = quickstart()
    url = "http://127.0.0.1:8000/v1"
    assert url in code
    code = code.replace(url, vllm_server.base_url)  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 17, proc.stdout  # 16 tokens (max_tokens) + the Done line
    assert lines[-1].startswith("length Usage(prompt_tokens=9, completion_tokens=16")
    assert "failed" not in proc.stdout


def test_testing_kit_replay_snippet_runs_as_written() -> None:
    # The testing-kit section's snippet: a recorded stream that stalls after 3 events.
    (code,) = [block for block in python_blocks() if "stall=forced_hermes,3" in block]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=README.parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "token 151667",
        "token 198",
        "token 10393",
        "StallTimeout [151667, 198, 10393]",
    ]


def test_nothing_lost_replay_snippet_runs_as_written(tmp_path: Path) -> None:
    # "Nothing lost": a dropped stream is saved, loaded and replayed in full.
    (code,) = [block for block in python_blocks() if "FailedRequest.load" in block]
    env = {**os.environ, "TOKSTREAM_FAILED_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=README.parent,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "RemoteDisconnected 5 tokens",
        "identical prefix of 5 tokens (the replay went on for 23 more)",
    ]
    assert len(os.listdir(tmp_path)) == 1
    text = README.read_text()
    for needle in ("TOKSTREAM_FAILED_DIR", "$XDG_STATE_HOME/tokstream/failed/", "tokstream replay"):
        assert needle in text
