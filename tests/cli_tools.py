"""Tools for ``tokstream chat --tools tests/cli_tools.py:TOOLS`` in the CLI tests.

``get_weather`` is a plain function (run in a worker thread by the turn loop),
``get_time`` an ``async def``: both kinds of tool a user may write.
"""

from __future__ import annotations

import threading

import trio
import trio.lowlevel


def get_weather(city: str, unit: str = "C") -> dict[str, object]:
    """Current weather for a city."""
    worker = threading.current_thread() is not threading.main_thread()
    return {"city": city, "sky": "sunny", "temp": 21, "unit": unit, "in_worker_thread": worker}


async def get_time(city: str) -> str:
    """Local time in a city."""
    await trio.lowlevel.checkpoint()
    return f"{city}: 14:05"


TOOLS = [get_weather, get_time]
