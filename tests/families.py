"""Real tokenizers for the model families, and vLLM's parsers as the reference (not tests).

* :func:`family_dir` / :func:`load_family`: the family's real tokenizer from
  the testing kit (``tokstream.testing.family_tokenizer_dir`` /
  ``family_tokenizer``; Kimi K2, GLM-4.5 and MiniMax M2 are the kit's test
  tokenizers: a real vocabulary plus their documented markers).
* :func:`reference` runs ``tests/vllm_reference.py`` in the CPU vLLM venv (one
  subprocess for a whole batch of jobs: importing vLLM takes ~25 s) and caches
  each answer on disk under ``<vllm home>/reference-cache``, keyed by the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tokstream import Tokenizer
from tokstream.testing import family_tokenizer, family_tokenizer_dir

HERE = Path(__file__).parent


def family_dir(family: str, home: Path) -> Path:
    """The family's Hugging Face tokenizer directory (for vLLM's parsers)."""
    return family_tokenizer_dir(family, home=home)


def load_family(family: str, home: Path) -> Tokenizer:
    """The family's tokenizer."""
    return family_tokenizer(family, home=home)


def reference(
    jobs: list[dict[str, Any]], home: Path, *, cache: bool = True
) -> list[list[dict[str, Any]]]:
    """vLLM's answers to ``jobs`` (see ``tests/vllm_reference.py``), cached on disk
    (``cache=False``: always run, and store nothing; for timings).

    Raises:
        RuntimeError: The vLLM venv is missing or the reference run failed.
    """
    cached = cache
    cache_dir = home / "reference-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    runner = (HERE / "vllm_reference.py").read_bytes()
    keys = [
        hashlib.sha256(runner + json.dumps(job, sort_keys=True).encode()).hexdigest()
        for job in jobs
    ]
    todo = [i for i, k in enumerate(keys) if not cached or not (cache_dir / f"{k}.json").is_file()]
    if todo:
        python = home / "venv" / "bin" / "python"
        if not python.is_file():
            raise RuntimeError(f"no CPU vLLM venv at {python}: run `make vllm` first")
        proc = subprocess.run(
            [str(python), str(HERE / "vllm_reference.py")],
            input=json.dumps([jobs[i] for i in todo]),
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"vLLM reference run failed:\n{proc.stderr[-3000:]}")
        answers = json.loads(proc.stdout)
        if not cached:
            return list(answers)
        for i, answer in zip(todo, answers, strict=True):
            (cache_dir / f"{keys[i]}.json").write_text(json.dumps(answer))
    return [json.loads((cache_dir / f"{k}.json").read_text()) for k in keys]
