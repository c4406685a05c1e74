"""``python -m tokstream.testing``: install, run and stop the kit's vLLM servers and clusters.

Commands::

    install            install CPU vLLM into <home>/venv (idempotent)
    install-router     install vllm-router into <home>/router (idempotent)
    model              build the tiny model dir <home>/tiny-qwen (idempotent)
    serve [--port N | --prefer-port N]
                       start a server, wait until healthy, print its PID (it keeps running)
    cluster [-n N] [--port P]
                       start N servers (default 2) and vllm-router in front of them,
                       print the URLs and PIDs (they keep running)
    stop PID...        stop a server `serve` started, or a whole cluster by its router's PID
    stop --all         stop every server and cluster `serve` and `cluster` started from <home>
    status             show the install, the model, and what `serve` and `cluster` started

``<home>`` is ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``. Progress goes to stderr;
``serve`` prints only the PID on stdout, so ``PID=$(python -m tokstream.testing
serve)`` works in a shell. ``cluster`` prints one line per process,
``router|backend-I URL PID N``, the router first. Arguments after ``serve --``
go to vLLM, after ``cluster --`` to vllm-router. Every stop goes by PID, checked
against the process's start time and command line, never by name.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from ._cluster import VLLMCluster
from ._common import SetupError, home_dir, log
from ._install import ensure_vllm, is_installed
from ._model import ensure_model
from ._router import ensure_router, router_binary
from ._server import (
    SERVER_MODULE,
    VLLMServer,
    _stat,
    health_ok,
    process_family,
    stop_process_tree,
)

_ROUTER_NAMES = (b"vllm-router", b"vllm::router")  # argv, and the title it sets itself


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_server(pid: int) -> bool:
    return SERVER_MODULE.encode() in _cmdline(pid)


def _is_router(pid: int) -> bool:
    return any(name in _cmdline(pid) for name in _ROUTER_NAMES)


def _start_time(pid: int) -> int | None:
    st = _stat(pid)
    return st[2] if st else None


def _same_process(entry: dict[str, Any]) -> bool:
    """Whether the process a state file names still runs (same PID and start time)."""
    started = entry.get("start_time")
    return started is None or _start_time(entry["pid"]) == started


def _record(kind: str, pid: int, state: dict[str, Any]) -> None:
    (home_dir() / kind).mkdir(parents=True, exist_ok=True)
    (home_dir() / kind / f"{pid}.json").write_text(json.dumps(state) + "\n")


def _install(args: argparse.Namespace) -> int:
    ensure_vllm()
    return 0


def _model(args: argparse.Namespace) -> int:
    ensure_model()
    return 0


def _install_router(args: argparse.Namespace) -> int:
    ensure_router()
    return 0


def _server_state(server: VLLMServer) -> dict[str, Any]:
    return {
        "pid": server.pid,
        "start_time": _start_time(server.pid),
        "base_url": server.base_url,
        "log": str(server.log_path),
    }


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serve(args: argparse.Namespace) -> int:
    port = args.port
    if port is None and args.prefer_port is not None:
        if _port_is_free(args.prefer_port):
            port = args.prefer_port
        else:
            log.info("serve: port %d is taken; using a free port", args.prefer_port)
    server = VLLMServer(
        port=port, extra_args=args.extra, startup_timeout=args.timeout, die_with_parent=False
    )
    log.info("serve: starting vLLM (about 35 s on 2 CPU cores) ...")
    server.start()
    _record("servers", server.pid, _server_state(server))
    log.info(
        "serve: ready on %s (model %s) in %.1f s; log %s; stop with: "
        "python -m tokstream.testing stop %d",
        *(server.base_url, server.model, server.startup_seconds, server.log_path, server.pid),
    )
    print(server.pid, flush=True)
    return 0


def _cluster(args: argparse.Namespace) -> int:
    if not router_binary().is_file():
        ensure_router()
    cluster = VLLMCluster(
        args.n,
        port=args.port,
        router_args=args.extra,
        startup_timeout=args.timeout,
        die_with_parent=False,
    )
    log.info("cluster: starting %d vLLM replicas (about 45 s each on 2 CPU cores) ...", args.n)
    cluster.start()
    router = cluster.router
    state = {
        "router": {
            "pid": router.pid,
            "start_time": _start_time(router.pid),
            "base_url": router.base_url,
            "log": str(router.log_path),
        },
        "backends": [_server_state(b) for b in cluster.backends],
    }
    _record("clusters", router.pid, state)
    log.info(
        "cluster: ready: %s in front of %d replicas; stop with: python -m tokstream.testing "
        "stop %d (or stop --all)",
        *(router.base_url, len(cluster.backends), router.pid),
    )
    print(f"router {router.base_url} PID {router.pid}")
    for i, backend in enumerate(cluster.backends):
        print(f"backend-{i} {backend.base_url} PID {backend.pid}", flush=True)
    return 0


def _stop_one(pid: int, timeout: float, what: str) -> None:
    killed = stop_process_tree(pid, timeout=timeout)
    log.info(
        "stop: stopped %s %d and its children%s",
        what,
        pid,
        f"; SIGKILLed {killed}" if killed else "",
    )


def _stop_cluster(state_file: Path, timeout: float) -> None:
    """Stop the router, then every replica, of the cluster a state file records."""
    state = json.loads(state_file.read_text())
    entries = [("router", state["router"], _is_router)]
    entries += [(f"replica {i}", b, _is_server) for i, b in enumerate(state["backends"])]
    for what, entry, is_kind in entries:
        pid = entry["pid"]
        if not process_family(pid) or not _same_process(entry):
            log.info("stop: %s %d is not running", what, pid)
        elif not is_kind(pid):
            log.info("stop: skipping %s PID %d: it is not what the cluster started", what, pid)
        else:
            _stop_one(pid, timeout, what)
    state_file.unlink(missing_ok=True)


def _stop_server(pid: int, timeout: float) -> int:
    state_file = home_dir() / "servers" / f"{pid}.json"
    entry = json.loads(state_file.read_text()) if state_file.is_file() else {"pid": pid}
    if not process_family(pid) or not _same_process(entry):
        log.info("stop: %d is not running", pid)
        state_file.unlink(missing_ok=True)
        return 0
    if not _is_server(pid):
        log.info("stop: refusing: PID %d is not a vLLM API server or a cluster's router", pid)
        return 1
    killed = stop_process_tree(pid, timeout=timeout)
    state_file.unlink(missing_ok=True)
    log.info("stop: stopped %d and its children%s", pid, f"; SIGKILLed {killed}" if killed else "")
    return 0


def _stop(args: argparse.Namespace) -> int:
    if not args.pid and not args.all:
        log.info("stop: name a PID (a server, or a cluster's router), or --all")
        return 2
    clusters = home_dir() / "clusters"
    status = 0
    if args.all:
        for state_file in sorted(clusters.glob("*.json")):
            _stop_cluster(state_file, args.timeout)
        for state_file in sorted((home_dir() / "servers").glob("*.json")):
            status |= _stop_server(int(state_file.stem), args.timeout)
        log.info("stop: nothing left that `serve` or `cluster` started in %s", home_dir())
    for pid in args.pid:
        if (clusters / f"{pid}.json").is_file():
            _stop_cluster(clusters / f"{pid}.json", args.timeout)
        else:
            status |= _stop_server(pid, args.timeout)
    return status


def _status(args: argparse.Namespace) -> int:
    home = home_dir()
    print(f"home:   {home}")
    print(f"vllm:   {'installed' if is_installed() else 'not installed'} ({home / 'venv'})")
    model = home / "tiny-qwen"
    print(f"model:  {'present' if (model / 'config.json').is_file() else 'missing'} ({model})")
    servers = sorted((home / "servers").glob("*.json"))
    if not servers:
        print("server: none started by `serve`")
    for path in servers:
        state = json.loads(path.read_text())
        alive = _is_server(state["pid"]) and _same_process(state)
        print(f"server: PID {state['pid']} {state['base_url']} {_health(state, alive)}")
        if not alive:
            path.unlink(missing_ok=True)
    router = router_binary(home)
    print(f"router: {'installed' if router.is_file() else 'not installed'} ({router})")
    for path in sorted((home / "clusters").glob("*.json")):
        state = json.loads(path.read_text())
        entry = state["router"]
        alive = _is_router(entry["pid"]) and _same_process(entry)
        print(f"cluster: router PID {entry['pid']} {entry['base_url']} {_health(entry, alive)}")
        for i, backend in enumerate(state["backends"]):
            up = _is_server(backend["pid"]) and _same_process(backend)
            where = f"PID {backend['pid']} {backend['base_url']}"
            print(f"cluster:   replica {i} {where} {_health(backend, up)}")
        if not alive and not any(
            _is_server(b["pid"]) and _same_process(b) for b in state["backends"]
        ):
            path.unlink(missing_ok=True)
    return 0


def _health(entry: dict[str, Any], alive: bool) -> str:
    up = alive and health_ok(entry["base_url"].removesuffix("/v1"))
    return f"{'healthy' if up else ('running' if alive else 'gone')} (log {entry['log']})"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tokstream.testing",
        description="Install, build and run the tiny CPU vLLM that tokstream tests against.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install CPU vLLM into <home>/venv").set_defaults(func=_install)
    sub.add_parser("install-router", help="install vllm-router into <home>/router").set_defaults(
        func=_install_router
    )
    sub.add_parser("model", help="build the tiny model dir").set_defaults(func=_model)
    p = sub.add_parser("serve", help="start a server and print its PID")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument(
        "--prefer-port", type=int, default=None, help="this port if it is free, else a free one"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("extra", nargs="*", help="vLLM arguments (after --)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("cluster", help="start N servers and vllm-router; print URLs and PIDs")
    p.add_argument("-n", type=int, default=2, help="the number of vLLM replicas (default 2)")
    p.add_argument("--port", type=int, default=None, help="the router's port (default: a free one)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each /health")
    p.add_argument("extra", nargs="*", help="vllm-router arguments (after --)")
    p.set_defaults(func=_cluster)
    p = sub.add_parser("stop", help="stop servers or clusters by PID, with their children")
    p.add_argument("pid", type=int, nargs="*", help="a server's PID, or a cluster's router PID")
    p.add_argument("--all", action="store_true", help="everything serve/cluster started here")
    p.add_argument("--timeout", type=float, default=20.0)
    p.set_defaults(func=_stop)
    sub.add_parser("status", help="show install, model and servers").set_defaults(func=_status)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        status: int = args.func(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
