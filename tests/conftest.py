"""Test harness: run ``async def`` tests under trio, and share fixtures.

``async def test_...`` functions run in a fresh ``trio.run``. Mark a test with
``@pytest.mark.autojump`` to run it on ``trio.testing.MockClock(autojump_threshold=0)``
so timeouts elapse instantly.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tokstream.vllm_cpu import VLLMServer

DATA = Path(__file__).parent / "data"

# No test may fail on timing: hypothesis's per-example deadline and its
# too-slow health check would turn a loaded CI machine into a red run.
settings.register_profile("tokstream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tokstream")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    clock: Any = None
    if pyfuncitem.get_closest_marker("autojump") is not None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(functools.partial(fn, **kwargs), clock=clock)
    return True


@pytest.fixture
def data_dir() -> Path:
    """The directory of recorded vLLM streams and error bodies."""
    return DATA


# -- the live CPU vLLM server (tokstream.vllm_cpu) ----------------------------

ROOT = Path(__file__).resolve().parent.parent
VLLM_HOME = Path(os.environ.get("TOKSTREAM_VLLM_HOME") or ROOT / ".vllm")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen3 model dir (real Qwen tokenizer.json); built once, no vLLM needed."""
    from tokstream.vllm_cpu import ensure_model

    return ensure_model(VLLM_HOME / "tiny-qwen")


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
        max_num_seqs=1,
        extra_args=("--max-logprobs", "1000"),
    )


def _serve(model_dir: Path, log_name: str, **options: Any) -> Iterator[VLLMServer]:
    from tokstream.vllm_cpu import ServerStartError, VLLMServer

    log_path = VLLM_HOME / "logs" / log_name
    server = VLLMServer(venv=VLLM_HOME / "venv", model_dir=model_dir, log_path=log_path, **options)
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(f"the live vLLM server could not start (try `make vllm`): {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
