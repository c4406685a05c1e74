"""What the installer, the model builder and the server share: the home directory,
the error base class and the progress logger. Nothing here starts a process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["HOME_ENV", "SetupError", "home_dir", "log"]

HOME_ENV = "TOKSTREAM_VLLM_HOME"

log = logging.getLogger("tokstream.testing")
"""Progress lines (one per step, with elapsed seconds) at INFO level."""


def home_dir(home: Path | str | None = None) -> Path:
    """``home``, else ``$TOKSTREAM_VLLM_HOME``, else ``./.vllm``.

    The home holds ``venv/`` (CPU vLLM), ``tiny-qwen/`` (the model), ``logs/``
    and ``servers/`` (what ``python -m tokstream.testing serve`` started).
    """
    if home is not None:
        return Path(home)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.cwd() / ".vllm"


class SetupError(RuntimeError):
    """Installing vLLM, building the model or starting the server failed.

    The message says what failed and ends with the last lines of the log that
    holds the cause.

    Attributes:
        log_path: The log with the full output, if there is one.
        log_tail: Its last lines (empty if none).
    """

    def __init__(self, problem: str, log_path: Path | None = None, start: int = 0) -> None:
        self.log_path = log_path
        self.log_tail = _tail(log_path, start) if log_path is not None else ""
        message = problem
        if self.log_tail:
            message += f"\n--- last lines of {log_path} ---\n{self.log_tail}"
        super().__init__(message)


def _tail(path: Path, start: int, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path`` from byte ``start`` on, minus pip's noise."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if "is ignored: it is neither" not in line]
    return "\n".join(kept[-lines:])
