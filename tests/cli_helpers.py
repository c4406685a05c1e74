"""Running ``tokstream`` commands as subprocesses, as a user runs them.

:func:`tokstream_cli` runs ``python -m tokstream ARGS`` with the failed-request
store pointed at a test directory; :class:`Run` holds the exit code and output
and checks the one-line error convention (``tokstream/cli/_common.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

DATA = Path(__file__).parent / "data"

PROMPT = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
"""A short chat prompt (``<|im_start|>user\\nHello<|im_end|>...assistant\\n``)."""


def ids_of(name: str) -> list[int]:
    """The token IDs of a recording in ``tests/data``."""
    ids: list[int] = []
    for line in (DATA / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                ids += choice["token_ids"] or []
    return ids


def text_of(name: str) -> str:
    """The concatenated text of a recording in ``tests/data``."""
    text = ""
    for line in (DATA / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += choice.get("text") or ""
    return text


def prompt_of(name: str) -> list[int]:
    """The prompt a recording in ``tests/data`` was made with."""
    prompt: list[int] = json.loads((DATA / f"{name}.req.json").read_text())["prompt"]
    return prompt


_USER_SETTINGS = frozenset(("TOKSTREAM_BASE_URL", "TOKSTREAM_MODEL", "TOKSTREAM_API_KEY"))
"""The user's own defaults for the command line, never inherited by a test's run."""


class Run:
    """One finished command: ``code``, ``out`` and ``err``."""

    def __init__(self, result: trio.Process | object, stdout: bytes, stderr: bytes) -> None:
        self.code: int = result.returncode  # type: ignore[attr-defined]
        self.out = stdout.decode()
        self.err = stderr.decode()

    def one_line_error(self) -> str:
        """The failure's single stderr line (and no traceback)."""
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("tokstream: "), lines[0]
        return lines[0]


async def tokstream_cli(
    *args: str, store: Path | str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> Run:
    """Run ``python -m tokstream ARGS``; failed requests go to ``store``."""
    inherited = {k: v for k, v in os.environ.items() if k not in _USER_SETTINGS}
    env = {**inherited, "TOKSTREAM_FAILED_DIR": str(store), **(env or {})}
    result = await trio.run_process(
        [sys.executable, "-m", "tokstream", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return Run(result, result.stdout, result.stderr)
