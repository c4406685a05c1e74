"""Install and run vllm-router, the Rust router that spreads requests over vLLM replicas.

Theory of operation:

* :func:`ensure_router` pip-installs :data:`ROUTER_PACKAGE` into its own venv,
  ``<home>/router`` (about 130 MB, 10 s), next to the kit's vLLM. Its own venv,
  because vLLM's venv is a pinned set that a repair rebuilds, and one install
  serves every checkout that shares the home. It is idempotent.
* :class:`VLLMRouter` runs ``<home>/router/bin/vllm-router`` on ``127.0.0.1``
  in a new session, like :class:`~tokstream.testing.VLLMServer`, and stops it
  by PID. It needs its workers healthy (it checks them once at startup) and is
  ready in about a second.
* The router always gets its own Prometheus port: its default, 29000, would
  make a second router on the machine fail.
* :data:`FAILOVER_ARGS` are the circuit-breaker settings measured to make the
  first request after a replica dies succeed on a live one (see its docstring).

Everything here blocks, as in ``_server.py``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ._common import home_dir, log
from ._install import InstallError, _base_python, _Steps
from ._server import (
    HOST,
    ServerStartError,
    _die_with_parent,
    _http_get,
    fetch_metrics,
    free_port,
    health_ok,
    stop_process_tree,
)

__all__ = ["FAILOVER_ARGS", "ROUTER_PACKAGE", "VLLMRouter", "ensure_router", "router_binary"]

ROUTER_PACKAGE = "vllm-router==0.1.17"
_VERSION = ROUTER_PACKAGE.partition("==")[2]
_MARKER = ".tokstream-router-ok"

FAILOVER_ARGS: tuple[str, ...] = ("--cb-failure-threshold", "2")
"""Open a replica's circuit after 2 failures instead of 10.

With consistent hashing a session maps to one replica, and the router retries
a failed request on whatever the ring picks, which is the same replica until
its circuit opens. Measured on this machine with a replica killed (SIGKILL):

* defaults (``--cb-failure-threshold 10``, 5 retries): the first two requests
  of sessions on the dead replica got HTTP 500 after about 0.4 s each (6
  attempts each), then the circuit opened and the next ones succeeded;
* ``2``: the router's own second attempt opens the circuit and its third goes
  to a live replica: the first request succeeds (about 0.1 s extra);
* ``1`` does the same, but a single failed attempt (a stale keep-alive
  connection, say) would evict a healthy replica for ``--cb-timeout-duration-secs``
  (60 s), so 2 it is.

The dead replica's circuit half-opens after 60 s (one probe request, retried
elsewhere if it fails); the health checker (every 60 s, 3 failures) marks it
unhealthy after about 3 minutes. Those stay at their defaults: a 2-core
machine under load can be slow to answer ``/health``.
"""


def router_binary(home: Path | str | None = None) -> Path:
    """Where :func:`ensure_router` puts the ``vllm-router`` command."""
    return home_dir(home) / "router" / "bin" / "vllm-router"


def _installed_version(python: Path) -> str | None:
    code = "import importlib.metadata as m; print(m.version('vllm-router'))"
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_router(home: Path | str | None = None) -> Path:
    """Install :data:`ROUTER_PACKAGE` into ``<home>/router`` unless it is already there.

    The first run takes about 10 s and 130 MB (a Rust binary and its Python
    launcher); afterwards this takes well under a second.

    Args:
        home: The kit's home directory (default: ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``).

    Returns:
        The ``vllm-router`` command.

    Raises:
        InstallError: A step failed; the message names it and shows pip's output.
    """
    root = home_dir(home)
    venv = root / "router"
    python = venv / "bin" / "python"
    binary = router_binary(root)
    if (venv / _MARKER).is_file() and binary.is_file():
        if _installed_version(python) == _VERSION:
            log.info("router: %s is already set up (vllm-router %s)", venv, _VERSION)
            return binary
        (venv / _MARKER).unlink()
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "router-install.log"
    log_path.write_bytes(b"")
    steps = _Steps(log_path, total=3)
    if python.exists():
        steps.skip("create venv", f"{venv} exists")
    else:
        steps.run("create venv", [_base_python(), "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    steps.run(f"install {ROUTER_PACKAGE}", [*pip, "install", "-q", ROUTER_PACKAGE])
    steps.run("check vllm-router", [str(binary), "--help"])
    if _installed_version(python) != _VERSION:
        raise InstallError("check vllm-router", f"{ROUTER_PACKAGE} is not what pip installed", None)
    (venv / _MARKER).write_text(json.dumps({"vllm-router": _VERSION}) + "\n")
    log.info("router: ready in %.0f s (%s)", time.monotonic() - t0, binary)
    return binary


class VLLMRouter:
    """vllm-router on 127.0.0.1 in front of ``worker_urls`` (blocking start and stop).

    Use it as a context manager or call :meth:`start` and :meth:`stop`. It
    needs :func:`ensure_router` to have run, and every worker healthy when it
    starts. :class:`~tokstream.testing.VLLMCluster` starts replicas and one of
    these in front of them.

    Args:
        worker_urls: The replicas' root URLs (``http://127.0.0.1:PORT``, no ``/v1``).
        home: The kit's home directory (where ``router/`` is installed).
        port: The router's port; a free one if omitted.
        policy: ``--policy``. ``consistent_hash`` routes every request that
            carries the same ``X-Session-ID`` header to the same replica.
        failover_args: Circuit-breaker settings (default :data:`FAILOVER_ARGS`).
        extra_args: More vllm-router arguments, appended last.
        log_path: The router's log (default: ``<home>/logs/router-PORT.log``).
        startup_timeout: Seconds to wait for the router's ``/health``.
        die_with_parent: SIGTERM the router when this process dies.
    """

    def __init__(
        self,
        worker_urls: Sequence[str],
        *,
        home: Path | str | None = None,
        port: int | None = None,
        policy: str = "consistent_hash",
        failover_args: Sequence[str] = FAILOVER_ARGS,
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        startup_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> None:
        if not worker_urls:
            raise ValueError("a router needs at least one worker URL")
        self._home = home_dir(home)
        self.worker_urls = tuple(url.rstrip("/") for url in worker_urls)
        self.policy = policy
        self._requested_port = port
        self._args = (*failover_args, *extra_args)
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._prometheus_port = 0
        self._t0 = 0.0
        self.startup_seconds: float | None = None
        """Seconds from launch to the first healthy ``/health`` (after :meth:`start`)."""

    @property
    def port(self) -> int:
        """The router's port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the router has not been started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: where ``/health`` and ``/workers`` live."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the base URL to give ``tokstream.Client``."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int:
        """The router's PID (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the router has not been started")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The router's log file."""
        return self._log_path or self._home / "logs" / f"router-{self.port}.log"

    def command(self, port: int, prometheus_port: int) -> list[str]:
        """The argv that starts the router on ``port``."""
        return [
            str(router_binary(self._home)),
            *("--host", HOST, "--port", str(port), "--worker-urls", *self.worker_urls),
            *("--policy", self.policy),
            *("--prometheus-host", HOST, "--prometheus-port", str(prometheus_port)),
            *self._args,
        ]

    def is_running(self) -> bool:
        """Whether the router process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def workers(self) -> list[dict[str, Any]]:
        """``GET /workers``: each worker's ``url``, ``is_healthy``, ``load``, ... (blocking).

        ``is_healthy`` is the health checker's verdict (slow to change); an open
        circuit does not show here.
        """
        status, body = _http_get(self.root_url, "/workers", 30.0)
        if status != 200:
            raise OSError(f"GET {self.root_url}/workers answered {status}")
        workers: list[dict[str, Any]] = json.loads(body)["workers"]
        return workers

    def metrics(self) -> dict[str, float]:
        """The router's own Prometheus metrics (from its separate metrics port).

        The router's ``/metrics`` on its main port is proxied to *one* worker;
        read each replica's own ``/metrics`` for engine figures.
        """
        return fetch_metrics(f"http://{HOST}:{self._prometheus_port}")

    def start(self) -> VLLMRouter:
        """Launch the router and block until its ``/health`` answers 200.

        Returns:
            ``self``.

        Raises:
            ServerStartError: vllm-router is not installed, the port is taken,
                the process exited, or it was not healthy in time; whatever
                started is stopped, and the message ends with the log's tail.
            RuntimeError: The router is already running.
        """
        self.launch()
        return self.wait_ready()

    def launch(self) -> VLLMRouter:
        """Spawn the router and return at once; :meth:`wait_ready` finishes the start.

        For workers served by this very thread (a trio ``ReplayServer``), launch
        here, then ``await trio.to_thread.run_sync(router.wait_ready)``.
        Raises as :meth:`start` does for what can be checked before it runs.
        """
        if self._proc is not None:
            raise RuntimeError(f"the router is already running (PID {self._proc.pid})")
        binary = router_binary(self._home)
        if not binary.is_file():
            raise ServerStartError(
                f"vllm-router is not installed in {binary.parent.parent}; run `make router` "
                "or `python -m tokstream.testing install-router`"
            )
        self._port = self._requested_port or free_port()
        self._prometheus_port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        self._t0 = time.monotonic()
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                self.command(self._port, self._prometheus_port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self._die_with_parent and main_thread else None,
            )
        log.info(
            "router: starting vllm-router on %s:%d (PID %d, %d workers, log %s) ...",
            *(HOST, self._port, self._proc.pid, len(self.worker_urls), self.log_path),
        )
        return self

    def wait_ready(self) -> VLLMRouter:
        """Block until the launched router's ``/health`` answers 200 (all workers healthy).

        Returns:
            ``self``.

        Raises:
            ServerStartError: As for :meth:`start`; the router is stopped first.
            RuntimeError: :meth:`launch` was not called.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError("the router was not launched")
        try:  # whatever ends the wait (a failure, Ctrl-C) stops the router first
            self._wait_until_healthy(proc)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._t0
        log.info("router: ready on %s in %.1f s", self.base_url, self.startup_seconds)
        return self

    def _wait_until_healthy(self, proc: subprocess.Popen[bytes]) -> None:
        while not health_ok(self.root_url):
            if (rc := proc.poll()) is not None:
                problem = f"vllm-router exited with status {rc} during startup"
                raise ServerStartError(problem, self.log_path, rc)
            if time.monotonic() > self._t0 + self._startup_timeout:
                problem = f"vllm-router was not healthy within {self._startup_timeout:.0f} s"
                raise ServerStartError(f"{problem} ({self.root_url}/health)", self.log_path)
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the router (SIGTERM, then SIGKILL after ``timeout``); a no-op if stopped."""
        proc, self._proc = self._proc, None
        if proc is not None:
            log.info("router: stopping PID %d", proc.pid)
            killed = stop_process_tree(proc.pid, timeout=timeout, popen=proc)
            log.info(
                "router: stopped PID %d%s", proc.pid, f"; SIGKILLed {killed}" if killed else ""
            )

    def __enter__(self) -> VLLMRouter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid} url={self.base_url}" if self._proc else "stopped"
        return f"<VLLMRouter {self.policy} workers={len(self.worker_urls)} {state}>"
