"""Test harness: run ``async def`` tests under trio, and share fixtures.

``async def test_...`` functions run in a fresh ``trio.run``. Mark a test with
``@pytest.mark.autojump`` to run it on ``trio.testing.MockClock(autojump_threshold=0)``
so timeouts elapse instantly.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

DATA = Path(__file__).parent / "data"


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
