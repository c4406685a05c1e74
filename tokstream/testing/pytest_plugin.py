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
* ``replay_recordings``: the directory the replay server reads. It is ``None``
  here; override it in your ``conftest.py`` to return your recordings' directory.
* ``replay_server`` (for trio tests): a running :class:`~tokstream.testing.ReplayServer`
  in the test's nursery.

* ``family_vllm_server`` (module): a live server of a family's tiny model,
  ``<home>/tiny-<family>``; parametrize it indirectly with family names,
  ``@pytest.mark.parametrize("family_vllm_server", ["gpt-oss"], indirect=True)``.
  pytest keeps one family's server at a time (about 4 GB each).

It registers the ``vllm`` marker: mark the tests that need the live server and
leave them out with ``-m "not vllm"``. For a server with other options, write
a fixture with :func:`serving`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ._common import HOME_ENV
from ._model import ensure_model
from ._replay import ReplayServer
from ._server import ServerStartError, VLLMServer

__all__ = ["serving"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``vllm`` marker."""
    config.addinivalue_line("markers", "vllm: needs the live CPU vLLM (tokstream.testing)")


def serving(server: VLLMServer) -> Iterator[VLLMServer]:
    """Start ``server``, yield it, then stop it: the body of a server fixture.

    Use it as ``yield from serving(VLLMServer(home=vllm_home, extra_args=[...]))``.
    A server that cannot start fails the test (``pytest.fail``) with its log's tail.
    """
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(f"the live vLLM server could not start (try `make vllm`): {exc}", pytrace=False)
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
