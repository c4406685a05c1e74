"""Shared fixtures. ``async def`` tests run under trio (pytest-trio, ``trio_mode``).

Take pytest-trio's ``autojump_clock`` fixture to run a test on
``trio.testing.MockClock(autojump_threshold=0)``, so timeouts elapse instantly,
and ``replay_server`` for a loopback server replaying recorded vLLM streams.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hypothesis import HealthCheck, settings

from .replay_server import ReplayServer

if TYPE_CHECKING:
    from tokstream.testing import VLLMServer

DATA = Path(__file__).parent / "data"

# No test may fail on timing: hypothesis's per-example deadline and its
# too-slow health check would turn a loaded CI machine into a red run.
settings.register_profile("tokstream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tokstream")


@pytest.fixture
async def replay_server(nursery: trio.Nursery) -> ReplayServer:
    """A loopback HTTP/1.1 server replaying recorded vLLM streams (see ``replay_server.py``).

    It runs in the test's nursery and stops when the test ends.
    """
    server = ReplayServer()
    await nursery.start(server.serve)
    return server


@pytest.fixture
def data_dir() -> Path:
    """The directory of recorded vLLM streams and error bodies."""
    return DATA


# -- the live CPU vLLM server (tokstream.testing) ----------------------------

ROOT = Path(__file__).resolve().parent.parent
VLLM_HOME = Path(os.environ.get("TOKSTREAM_VLLM_HOME") or ROOT / ".vllm")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen3 model dir (real Qwen tokenizer.json); built once, no vLLM needed."""
    from tokstream.testing import ensure_model

    return ensure_model(VLLM_HOME)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path) -> Iterator[VLLMServer]:
    """One live CPU vLLM server for the whole session (tests marked ``vllm``).

    If it cannot start, every test using it fails (never skips), with the server
    log's tail in the message. ``make test`` installs vLLM first (``make vllm``).
    """
    yield from _serve(tiny_model_dir, "pytest-vllm.log")


@pytest.fixture(scope="module")
def vllm_server_serial(tiny_model_dir: Path) -> Iterator[VLLMServer]:
    """A second live server, per module: ``--max-num-seqs 1`` makes requests queue
    (for priority), and ``--max-logprobs 1000`` allows chunks big enough to fill the
    socket buffers (for merged chunks)."""
    yield from _serve(
        tiny_model_dir,
        "pytest-vllm-serial.log",
        extra_args=("--max-num-seqs", "1", "--max-logprobs", "1000"),
    )


def _serve(model_dir: Path, log_name: str, **options: Any) -> Iterator[VLLMServer]:
    from tokstream.testing import ServerStartError, VLLMServer

    log_path = VLLM_HOME / "logs" / log_name
    server = VLLMServer(home=VLLM_HOME, log_path=log_path, **options)
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(f"the live vLLM server could not start (try `make vllm`): {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
