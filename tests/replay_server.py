"""The replay server now lives in the testing kit (``tokstream.testing.ReplayServer``).

This module keeps ``from .replay_server import DATA, ReplayServer`` working.
"""

from __future__ import annotations

from pathlib import Path

from tokstream.testing import ReplayServer

__all__ = ["DATA", "ReplayServer"]

DATA = Path(__file__).parent / "data"
