"""The Makefile as a new user meets it: `make help`, quiet set-up, `make demo ARGS=...`.

Each test runs make for real, on recipes that cannot touch the project's own
``.venv`` (a fake venv directory, ``-n`` dry runs, or ``help``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_make_help_lists_every_target_and_is_the_default() -> None:
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert phony
    for run in (make("help"), make()):
        assert run.returncode == 0, run.stderr
        listed = re.findall(r"^  make (\S+)", run.stdout, re.M)
        assert sorted(listed) == sorted(phony.group(1).split()), run.stdout
    assert "ARGS=" in run.stdout and "PORT=" in run.stdout


def test_demo_with_a_base_url_sets_up_no_local_vllm() -> None:
    local = make("-n", "-o", "venv", "demo")
    assert "tokstream.testing install" in local.stdout  # CPU vLLM, then the model
    remote = make("-n", "-o", "venv", "demo", "ARGS=--base-url http://my-host:8000/v1 --model m")
    assert remote.returncode == 0, remote.stderr
    assert "tokstream.testing" not in remote.stdout
    assert remote.stdout.strip().endswith(
        "examples/demo.py --base-url http://my-host:8000/v1 --model m"
    )


def _fake_venv(tmp_path: Path, pip_exit: int) -> Path:
    """A venv whose python is a script: pip prints what pip prints, then exits."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'echo "Collecting httpx>=0.28"\n'
        'echo "  Downloading httpx-0.28.1-py3-none-any.whl (73 kB)"\n'
        'echo "  !! ********** Please be careful with folders ... **********" >&2\n'
        f"exit {pip_exit}\n"
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return venv


def test_venv_setup_prints_one_line_per_step(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, 0)
    run = make("venv", f"VENV={venv}")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("setup: .venv: installing tokstream and its dev tools")
    assert re.fullmatch(r"setup: \.venv ready in \d+ s \(pip's output: .*/setup\.log\)", lines[1])
    assert len(lines) == 2 and run.stderr == ""  # pip's lines and warnings went to the log
    log = (venv / "setup.log").read_text()
    assert "Collecting httpx" in log and "Please be careful" in log
    assert (venv / ".installed").exists()


def test_venv_setup_failure_shows_the_end_of_pips_output(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, 1)
    run = make("venv", f"VENV={venv}")
    assert run.returncode != 0
    assert "Collecting httpx" in run.stdout  # the tail of the log, to see why
    assert f"setup: pip failed; its whole output is in {venv}/setup.log" in run.stdout
    assert not (venv / ".installed").exists()
