"""Every file in ``examples/`` runs, as a user runs it, against the live CPU vLLM.

Each example runs as a subprocess against the session's server (``--base-url``,
``--model``, ``--tokenizer``), and its exit status and output are checked; an
example that replays recorded streams (:data:`RECORDED`) runs without one. An
example with no entry in :data:`CHECKS` fails the suite, so none goes untested.
``make demo``'s own path (no ``--base-url``: it starts and stops its own
server) runs once more, to prove it leaves no process behind. The examples in
:data:`CLUSTER_EXAMPLES` run against this module's ``vllm_cluster`` instead, in
the last test, so the cluster starts after the demo's own server has stopped
(three servers at most, with the session's).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tokstream.testing import VLLMCluster, VLLMServer
from tokstream.testing._server import process_family

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def check_demo(out: str) -> None:
    # The first call closes at token 67; its tool starts right then, mid-stream.
    assert "> call #0 get_weather(" in out
    assert "> tool get_weather started at token 67 (the model is still writing)" in out
    assert "tool ran mid-stream yes" in out
    assert out.index("> tool get_weather started at token 67") < out.index("  68       198")
    assert out.index("> tool get_time started at token 87") < out.index("> Done after 88 tokens")
    assert "turn 2:" in out and "It is sunny and 21 °C in Paris" in out
    assert "system -> user -> assistant -> tool -> tool -> assistant" in out
    assert out.count("echo verified     yes") == 2
    assert "forced IDs exact  yes" in out
    assert 'tool call: {"name": "get_weather", "arguments": {"city": "Paris"}}' in out
    assert "  151657  tool" in out and "  151667  think" in out
    assert "demo: all checks passed" in out
    assert "demo: the replies are forced: the tiny model has random weights" in out


def check_stream_tokens(out: str) -> None:
    done = re.search(r"^done: (\d+) tokens, finish (length|stop)$", out, re.M)
    assert done, out
    assert len(re.findall(r"^token +\d+  ", out, re.M)) == int(done.group(1))
    assert "prompt echo verified: yes" in out


def check_agent_loop(out: str) -> None:
    assert out.count("echo verified: yes") == 2
    # The first tool starts right after its call closes, before the second call closes.
    assert out.index("[tool get_weather started at token") < out.index("[call #1 closed: get_time")
    assert "[tool get_time returned Paris: 14:05]" in out
    assert "It is sunny and 21 °C in Paris; the time is 14:05." in out
    assert "system -> user -> assistant -> tool -> tool -> assistant" in out
    assert "mask exact: yes" in out
    assert "agent loop: all checks passed" in out


def check_cancel(out: str) -> None:
    assert re.search(r"^1\. timeout: cancelled after \d+ of 2000 tokens$", out, re.M)
    assert (
        "2. nursery: cancelled after 10 tokens; vllm:num_requests_running while streaming: 1" in out
    )
    assert out.count("server aborted it (vllm:num_requests_running back to 0): yes") == 2
    assert "cancel: all checks passed" in out


def check_replay_failed(out: str) -> None:
    assert "1. failed: InBandError: the server said: " in out and "1000000" in out
    assert "3. replayed as saved: InBandError" in out
    assert "4. replayed with the prompt corrected: Done, 8 tokens" in out
    assert out.count(": yes\n") == 4 and "check:" in out and ": NO" not in out
    assert "replay_failed: all checks passed" in out


def check_rl_rollout(out: str) -> None:
    rows = re.findall(r"^rollout +\d+ \(priority +(\d+)\): .* echo ok$", out, re.M)
    assert len(rows) == 16 and sorted(set(rows)) == ["0", "10"], out
    assert re.search(r"^batch: input_ids int32\[16, \d+\], loss_mask bool\[16, \d+\]", out, re.M)
    assert out.count(": yes\n") == 4 and ": NO" not in out
    assert "rl_rollout: all checks passed" in out


def check_multi_turn(out: str) -> None:
    assert out.count("prompt == echoed: ok") == 5
    assert out.count("earlier replies unchanged: ok") == 5
    assert out.count(", non-canonical split), mask == sampled") == 2
    assert "final request: echoed context incl. every reply: ok" in out
    assert "MISMATCH" not in out
    assert "all checks passed" in out


def check_gptoss_agent_turn(out: str) -> None:
    assert out.count("echo verified     yes") == 2
    assert out.count("sampled IDs exact yes") == 2
    assert "call #0 get_weather({'city': 'Tokyo'}) ok" in out
    assert "leaf tool_call  21 IDs  '<|start|>assistant<|channel|>commentary to=" in out
    assert "content           'It is sunny and 24 °C in Tokyo (東京).'" in out
    assert "system -> user -> assistant -> tool -> assistant" in out
    assert "gpt-oss agent turn: all checks passed" in out


def check_rollouts_cluster(out: str) -> None:
    assert re.search(r"router http://127\.0\.0\.1:\d+/v1, 2 replicas: 0 at http://", out), out
    for phase in ("with affinity", "without"):
        section = out.split(phase, 1)[1]
        assert section.count("echo ok") >= 8, section
    affine = out.split("with affinity", 1)[1].split("without", 1)[0]
    rows = re.findall(
        r"^  rollout \d \(priority +\d+\): replicas ([\d ]+?)  echo ok$", affine, re.M
    )
    assert len(rows) == 8, affine
    for row in rows:
        assert len(row.split()) == 4 and len(set(row.split())) == 1, row  # one replica each
    assert "priority  0" in out and "priority 10" in out
    rates = [int(r) for r in re.findall(r"cluster: (\d+)% of prompt tokens", out)]
    assert len(rates) == 2 and rates[0] > rates[1], rates
    for check in (
        "every prompt echoed exactly: yes",
        "prefix-cache hit rate higher with affinity: yes",
        "each rollout stayed on one replica: yes",
    ):
        assert f"check: {check}" in out
    assert "all checks passed" in out


CHECKS: dict[str, Callable[[str], None]] = {
    "agent_loop.py": check_agent_loop,
    "cancel.py": check_cancel,
    "demo.py": check_demo,
    "multi_turn.py": check_multi_turn,
    "replay_failed.py": check_replay_failed,
    "rl_rollout.py": check_rl_rollout,
    "rollouts_cluster.py": check_rollouts_cluster,
    "stream_tokens.py": check_stream_tokens,
}
"""What each example must print, run against the live server. A new example gets
an entry here or in :data:`RECORDED`, or the suite fails."""

RECORDED: dict[str, Callable[[str], None]] = {
    "gptoss_agent_turn.py": check_gptoss_agent_turn,
}
"""Examples that replay recorded streams (no server): what each must print."""

CLUSTER_EXAMPLES = frozenset({"rollouts_cluster.py"})
"""Examples that need a routed cluster (``--base-url`` of its router)."""


def run_example(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_every_example_is_run_by_a_test() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted({**CHECKS, **RECORDED})


@pytest.mark.parametrize("name", sorted({**CHECKS, **RECORDED}))
def test_every_example_says_how_to_run_it_first(name: str) -> None:
    doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert doc is not None
    first = doc.split("\n\n", 2)
    assert first[1].startswith("Run it"), first[1]  # right after the one-line summary
    assert f".venv/bin/python examples/{name}" in first[2].split("\n\n")[0]
    if name not in RECORDED:
        assert "--base-url" in first[2].split("\n\n")[0]


@pytest.mark.parametrize("name", sorted({**CHECKS, **RECORDED}))
def test_an_example_outside_the_venv_says_how_to_run_it(name: str, tmp_path: Path) -> None:
    # A Python without tokstream (the interpreter this venv was made from, isolated).
    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-I", "-c", "import tokstream"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{base} has tokstream installed")
    proc = subprocess.run(
        [base, "-I", str(EXAMPLES / name)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tokstream is not installed here: run `make")
    assert ".venv/bin/python" in proc.stderr


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_example_runs(name: str) -> None:
    proc = run_example(name, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    RECORDED[name](proc.stdout)


@pytest.mark.vllm
@pytest.mark.parametrize("name", sorted(set(CHECKS) - CLUSTER_EXAMPLES))
def test_example_runs_against_the_live_server(
    vllm_server: VLLMServer, tiny_model_dir: Path, name: str
) -> None:
    args = ["--base-url", vllm_server.base_url, "--model", vllm_server.model]
    proc = run_example(name, *args, "--tokenizer", str(tiny_model_dir), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    CHECKS[name](proc.stdout)


@pytest.mark.vllm
def test_demo_starts_and_stops_its_own_server() -> None:
    # `make demo`'s own path: no --base-url, so the demo starts a second tiny server,
    # runs the turns and must stop that server with every process it spawned.
    proc = run_example("demo.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_demo(proc.stdout)
    started = re.search(r"server: starting vLLM on 127\.0\.0\.1:\d+ \(PID (\d+),", proc.stderr)
    assert started, proc.stderr
    pid = int(started.group(1))
    assert re.search(r"server: ready on http://127\.0\.0\.1:\d+/v1 in ", proc.stderr)
    assert f"server: stopping PID {pid}" in proc.stderr
    assert f"server: stopped PID {pid}" in proc.stderr
    # No live process is left in the server's session, nor below it, the moment the
    # demo has exited; and once init has reaped any zombie, the group is empty.
    assert process_family(pid) == {}
    deadline = time.monotonic() + 5.0
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"process group {pid} outlived the demo"
        time.sleep(0.1)


# Last in the module: the module-scoped cluster starts here and stops at the module's end.
@pytest.mark.vllm
@pytest.mark.parametrize("name", sorted(CLUSTER_EXAMPLES))
def test_example_runs_against_a_live_cluster(
    vllm_cluster: VLLMCluster, tiny_model_dir: Path, name: str
) -> None:
    args = ["--base-url", vllm_cluster.base_url, "--model", vllm_cluster.model]
    proc = run_example(name, *args, "--tokenizer", str(tiny_model_dir), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    CHECKS[name](proc.stdout)


@pytest.mark.vllm
def test_ctrl_c_while_make_demo_starts_its_server_stops_it(tmp_path: Path) -> None:
    # As a terminal does: SIGINT to make's whole process group, while vLLM starts.
    make = ["make", "--no-print-directory", "-C", str(EXAMPLES.parent), "-o", "venv", "demo"]
    proc = subprocess.Popen(
        make,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    err = ""
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # until the server's PID is known
            err += line
            started = re.search(r"server: starting vLLM on 127\.0\.0\.1:\d+ \(PID (\d+),", line)
            if started:
                break
        assert started, err
        pid = int(started.group(1))
        assert process_family(pid)  # it runs
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err += rest
    assert "Traceback" not in err, err
    assert f"server: stopped PID {pid}" in err
    assert "demo: interrupted" in err
    assert process_family(pid) == {}  # vLLM and everything it spawned: gone
