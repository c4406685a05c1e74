"""pytest fixtures for code that uses tokstream: a live CPU vLLM, and recorded streams.

Enable it in your top-level ``conftest.py`` (it needs pytest-trio)::

    pytest_plugins = ["tokstream.testing.pytest_plugin"]

Fixtures:

* ``vllm_home`` (session): the kit's home, ``$TOKSTREAM_VLLM_HOME`` or
  ``<rootdir>/.vllm``. Install vLLM there first: ``python -m tokstream.testing
  install``.
* ``tiny_model_dir`` (session): ``<home>/tiny-qwen``, built if needed (no vLLM
  needed): ``tokenizer.json`` for ``tokstream.Tokenizer.load``.
* ``vllm_server`` (session): a running :class:`~tokstream.testing.VLLMServer`.
  If it cannot start, every test using it fails (never skips) with the end of
  the server log.
* ``vllm_cluster`` (module): a running :class:`~tokstream.testing.VLLMCluster`,
  two replicas behind vllm-router. Module scope bounds its lifetime: with the
  session's server that makes three servers (about 11 GB) while a module that
  uses it runs, and the cluster is gone before the next module starts. It
  fails, never skips, if it cannot start (install the router first:
  ``python -m tokstream.testing install-router``).
* ``replay_recordings``: the directory the replay server reads. It is ``None``
  here; override it in your ``conftest.py`` to return your recordings' directory.
* ``replay_server`` (for trio tests): a running :class:`~tokstream.testing.ReplayServer`
  in the test's nursery.

* ``family_vllm_server`` (module): a live server of a family's tiny model,
  ``<home>/tiny-<family>``; parametrize it indirectly with family names,
  ``@pytest.mark.parametrize("family_vllm_server", ["gpt-oss"], indirect=True)``.
  pytest keeps one family's server at a time (about 4 GB each).

It registers the ``vllm`` marker: mark the tests that need the live server and
leave them out with ``-m "not vllm"``. For a server or cluster with other
options, write a fixture with :func:`serving`::

    @pytest.fixture(scope="module")
    def queueing_cluster(vllm_home):
        yield from serving(VLLMCluster(home=vllm_home, backend_args=("--max-num-seqs", "1")))
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
import trio

from ._cluster import VLLMCluster
from ._common import HOME_ENV, SetupError
from ._model import ensure_model
from ._replay import ReplayServer
from ._server import VLLMServer

__all__ = ["serving"]


class _Service(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Service)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``vllm`` marker."""
    config.addinivalue_line("markers", "vllm: needs the live CPU vLLM (tokstream.testing)")


def serving(server: _S) -> Iterator[_S]:
    """Start ``server``, yield it, then stop it: the body of a server or cluster fixture.

    Use it as ``yield from serving(VLLMServer(home=vllm_home, extra_args=[...]))``,
    or with a :class:`~tokstream.testing.VLLMCluster` or
    :class:`~tokstream.testing.VLLMRouter`. One that cannot start fails the
    test (``pytest.fail``, never a skip) with its log's tail.
    """
    what = type(server).__name__
    try:
        server.start()
    except SetupError as exc:
        hint = "`make vllm`" if isinstance(server, VLLMServer) else "`make vllm router`"
        pytest.fail(f"the live {what} could not start (try {hint}): {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_home(pytestconfig: pytest.Config) -> Path:
    """The kit's home directory: ``$TOKSTREAM_VLLM_HOME``, else ``<rootdir>/.vllm``."""
    return Path(os.environ.get(HOME_ENV) or pytestconfig.rootpath / ".vllm")


@pytest.fixture(scope="session")
def tiny_model_dir(vllm_home: Path) -> Path:
    """The tiny Qwen3 model directory (the real Qwen ``tokenizer.json``), built once."""
    return ensure_model(vllm_home)


@pytest.fixture(scope="session")
def vllm_server(vllm_home: Path, tiny_model_dir: Path) -> Iterator[VLLMServer]:
    """One live CPU vLLM for the whole session; its log is ``<home>/logs/pytest-vllm.log``."""
    yield from serving(VLLMServer(home=vllm_home, log_path=vllm_home / "logs" / "pytest-vllm.log"))


@pytest.fixture(scope="module")
def vllm_cluster(vllm_home: Path, tiny_model_dir: Path) -> Iterator[VLLMCluster]:
    """Two live CPU vLLM replicas behind vllm-router, for one test module.

    Logs: ``<home>/logs/pytest-cluster/`` (``backend-I.log``, ``router.log``).
    """
    yield from serving(VLLMCluster(home=vllm_home, log_dir=vllm_home / "logs" / "pytest-cluster"))


@pytest.fixture
def replay_recordings() -> Path | None:
    """The directory of ``NAME.sse`` and ``errors/NAME.body`` recordings; override it."""
    return None


@pytest.fixture
async def replay_server(nursery: trio.Nursery, replay_recordings: Path | None) -> ReplayServer:
    """A loopback server replaying ``replay_recordings``; it stops when the test ends."""
    server = ReplayServer(replay_recordings)
    await nursery.start(server.serve)
    return server


@pytest.fixture(scope="module")
def family_vllm_server(request: pytest.FixtureRequest, vllm_home: Path) -> Iterator[VLLMServer]:
    """A live server of ``ensure_model(home, family=request.param)``, per module and family."""
    family = getattr(request, "param", None)
    if not isinstance(family, str):
        pytest.fail(
            "family_vllm_server needs a family: parametrize it with indirect=True", pytrace=False
        )
    model_dir = ensure_model(vllm_home, family=family)
    log_path = vllm_home / "logs" / f"pytest-vllm-{family}.log"
    yield from serving(VLLMServer(home=vllm_home, model_dir=model_dir, log_path=log_path))
