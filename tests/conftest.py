"""Shared fixtures. ``async def`` tests run under trio (pytest-trio, ``trio_mode``).

The project dogfoods its testing kit: ``tokstream.testing.pytest_plugin`` gives
``vllm_server`` (the session's live CPU vLLM), ``tiny_model_dir`` and
``replay_server`` (a loopback server replaying ``tests/data``; its scenarios are
listed in ``tokstream/testing/_replay.py``). Take pytest-trio's
``autojump_clock`` to run a test on ``trio.testing.MockClock(autojump_threshold=0)``,
so timeouts elapse instantly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tokstream.testing import VLLMServer

pytest_plugins = ["tokstream.testing.pytest_plugin"]

DATA = Path(__file__).parent / "data"

# No test may fail on timing: hypothesis's per-example deadline and its
# too-slow health check would turn a loaded CI machine into a red run.
settings.register_profile("tokstream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tokstream")


@pytest.fixture(scope="session", autouse=True)
def failed_requests_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Failed requests go to a temporary directory, never to the real home.

    Set in the environment for the whole session, so that clients built by
    tests, examples and subprocesses (the CLI, README snippets) all save there.
    ``XDG_STATE_HOME`` moves too, for code that resolves the default itself.
    """
    root = tmp_path_factory.mktemp("state")
    saved = {name: os.environ.get(name) for name in ("TOKSTREAM_FAILED_DIR", "XDG_STATE_HOME")}
    os.environ["XDG_STATE_HOME"] = str(root)
    os.environ["TOKSTREAM_FAILED_DIR"] = str(root / "tokstream" / "failed")
    yield root / "tokstream" / "failed"
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def replay_recordings() -> Path:
    """The recorded vLLM streams (``NAME.sse``) and error bodies (``errors/NAME.body``)."""
    return DATA


@pytest.fixture
def data_dir() -> Path:
    """The directory of recorded vLLM streams and error bodies."""
    return DATA


@pytest.fixture(scope="module")
def vllm_server_serial(vllm_home: Path, tiny_model_dir: Path) -> Iterator[VLLMServer]:
    """A second live server, per module: ``--max-num-seqs 1`` makes requests queue
    (for priority), and ``--max-logprobs 1000`` allows chunks big enough to fill the
    socket buffers (for merged chunks)."""
    from tokstream.testing.pytest_plugin import serving  # after pytest registered the plugin

    log_path = vllm_home / "logs" / "pytest-vllm-serial.log"
    args = ("--max-num-seqs", "1", "--max-logprobs", "1000")
    yield from serving(VLLMServer(home=vllm_home, extra_args=args, log_path=log_path))
