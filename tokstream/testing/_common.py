"""Shared bits of the live-server tooling: default locations and progress lines.

Nothing here touches the network or starts processes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOME_ENV", "Reporter", "default_home", "print_reporter", "tail_text"]

HOME_ENV = "TOKSTREAM_VLLM_HOME"
"""Environment variable naming the directory that holds the venv, model and logs."""

Reporter = Callable[[str], None]
"""Receives one human-readable progress line at a time."""


def default_home() -> Path:
    """Return the directory for the vLLM venv, the tiny model and the server logs.

    ``$TOKSTREAM_VLLM_HOME`` if set, else ``.vllm`` in the current directory
    (the project root under ``make``; git-ignored).
    """
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.cwd() / ".vllm"


def print_reporter(line: str) -> None:
    """A :data:`Reporter` that prints to stderr, flushed, so progress shows live."""
    print(line, file=sys.stderr, flush=True)


def tail_text(path: Path, lines: int = 30, max_chars: int = 6000) -> str:
    """Return the last ``lines`` lines of a text file (lenient decoding), or ``""``."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-max_chars * 4 :].decode("utf-8", errors="replace")
    out = "\n".join(text.splitlines()[-lines:])
    return out[-max_chars:]


@contextmanager
def timed_step(report: Reporter | None, label: str) -> Iterator[None]:
    """Report ``label``, run the block, then report its elapsed seconds."""
    t0 = time.monotonic()
    if report:
        report(f"{label} ...")
    yield
    if report:
        report(f"{label}: done in {time.monotonic() - t0:.1f} s")
