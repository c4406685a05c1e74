"""The README's quickstart runs as written (against the live CPU vLLM)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return blocks[0]


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
