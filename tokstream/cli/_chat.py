"""``tokstream chat``: a multi-turn conversation, token-exact, with tools, in the live view.

Each line read from stdin is a user message (a prompt ``you>`` shows on a
terminal). The reply streams in the live view; its tool calls run as the turn
loop (``tokstream.run_turn``) starts them, the moment each call closes, and
the loop goes on until a reply makes no call (or ``--max-turns``). After each
reply comes the stats line. Lines starting with ``/`` are commands:

``/save FILE``  write the context, token-exact (``Context.to_json``)
``/quit``       leave (so does end of input)
``/help``       list the commands

``--resume FILE`` restores a saved context. ``--tools module:attr`` names the
tools: ``attr`` is a dict of name to function, a list of functions, or one
function, in an importable module or a ``.py`` file. ``async def`` functions
run in the turn's nursery, plain ones in a worker thread. Their definitions
for the system prompt come from their signatures (parameter names, annotated
``str`` / ``int`` / ``float`` / ``bool`` / ``list`` / ``dict`` types, and which
have no default) and the first line of each docstring.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

import tokstream

from ._common import EXIT_OK, CommandError, describe, exit_code, open_client, sampling_fields
from ._stream import load_tokenizer, make_view
from ._view import JsonView, LiveView, make_console, stats_line

__all__ = ["chat_command", "load_tools", "tool_spec"]

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_TYPES |= {list: "array", tuple: "array", dict: "object"}

HELP = "/save FILE: save the context (token-exact) · /quit: leave · /help: this line"


def tool_spec(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """An OpenAI-style tool definition for ``fn``, from its signature and docstring."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # annotations that do not resolve: leave the types out
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema: dict[str, Any] = {}
        hint = typing.get_origin(hints.get(param.name)) or hints.get(param.name)
        if hint in _JSON_TYPES:
            schema["type"] = _JSON_TYPES[hint]
        properties[param.name] = schema
        if param.default is param.empty:
            required.append(param.name)
    doc = inspect.getdoc(fn) or ""
    function: dict[str, Any] = {"name": name}
    if doc:
        function["description"] = doc.splitlines()[0]
    function["parameters"] = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": function}


def _import(module_name: str) -> Any:
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise CommandError(f"--tools {module_name}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise CommandError(f"--tools {module_name}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules in the current directory
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise CommandError(f"--tools {module_name}: no module named {exc.name!r}") from None


def load_tools(spec: str) -> dict[str, Callable[..., Any]]:
    """The tools ``--tools module:attr`` names, by name.

    Raises:
        CommandError: No such module or attribute, or not functions (exit code 2).
    """
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise CommandError(f"--tools {spec!r}: give module:attr, e.g. my_tools:TOOLS")
    module = _import(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise CommandError(f"--tools {spec}: {module_name} has no {attr!r}") from None
    if isinstance(obj, Mapping):
        tools = dict(obj)
    elif isinstance(obj, (list, tuple)):
        tools = {getattr(fn, "__name__", repr(fn)): fn for fn in obj}
    else:
        tools = {getattr(obj, "__name__", attr): obj}
    for name, fn in tools.items():
        if not isinstance(name, str) or not callable(fn):
            raise CommandError(
                f"--tools {spec}: {name!r} is not a function; give a dict of name to "
                "function, a list of functions, or one function"
            )
    return tools


def chat_command(args: argparse.Namespace) -> int:
    """``tokstream chat``."""
    tokenizer = load_tokenizer(args)
    if tokenizer is None:
        raise CommandError("chat needs --tokenizer DIR (the model's tokenizer: its chat format)")
    tools: dict[str, Callable[..., Any]] = {}
    for spec in args.tools or ():
        tools |= load_tools(spec)
    specs = [tool_spec(name, fn) for name, fn in tools.items()]
    if args.resume:
        if args.system is not None:
            raise CommandError("--system and --resume: the saved context has its own")
        path = Path(args.resume).expanduser()
        ctx = tokstream.Context.from_json(path.read_text(), tokenizer, args.chat_format)
    else:
        ctx = tokstream.Context(tokenizer, args.chat_format)
        if args.system is not None or specs:
            ctx.add_system(args.system, tools=specs or None)
    fields = sampling_fields(args)
    tokstream.CompletionRequest.build([0], **fields)  # bad fields: exit 2, nothing sent
    return trio.run(_chat, args, ctx, tools, specs, fields)


async def _read_line(interactive: bool) -> str | None:
    def read() -> str | None:
        try:
            return input("you> ") if interactive else sys.stdin.readline() or None
        except EOFError:
            return None

    line = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
    return None if line is None else line.rstrip("\n")


async def _chat(
    args: argparse.Namespace,
    ctx: tokstream.Context,
    tools: dict[str, Callable[..., Any]],
    specs: list[dict[str, Any]],
    fields: dict[str, Any],
) -> int:
    interactive = sys.stdin.isatty()
    view = make_view(args, ctx.tokenizer, None)
    err = make_console(sys.stderr, args.color)
    client = await open_client(args)
    if interactive and isinstance(view, LiveView):
        view.line(
            f"chatting with {args.model} at {client.base_url} ({len(tools)} tools); {HELP}",
            "dim",
        )
    async with client:
        while (line := await _read_line(interactive)) is not None:
            if not line.strip():
                continue
            if line.startswith("/"):
                if not _command(line, ctx, err):
                    break
                continue
            ctx.add_user(line)
            status = await _turns(args, client, ctx, tools, specs, fields, view, err)
            if status != EXIT_OK and not interactive:
                return status
    return EXIT_OK


def _command(line: str, ctx: tokstream.Context, err: Any) -> bool:
    """Run a ``/`` command; return False to leave."""
    name, _, arg = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/save" and arg.strip():
        path = Path(arg.strip()).expanduser()
        path.write_text(ctx.to_json())
        err.print(
            f"saved the context ({len(ctx)} token IDs, {len(ctx.messages)} messages) to {path}; "
            f"resume with --resume {path}",
            style="cyan",
        )
        return True
    err.print(HELP if name == "/help" else f"unknown command {line!r}; {HELP}", style="cyan")
    return True


async def _turns(
    args: argparse.Namespace,
    client: tokstream.Client,
    ctx: tokstream.Context,
    tools: dict[str, Callable[..., Any]],
    specs: list[dict[str, Any]],
    fields: dict[str, Any],
    view: LiveView | JsonView,
    err: Any,
) -> int:
    """Run turns until a reply makes no tool call; return the exit status."""
    for _ in range(args.max_turns):
        ctx.begin_assistant(thinking=args.thinking)
        prompt = ctx.prompt_ids().copy()
        if isinstance(view, JsonView):
            view.new_reply(prompt.tolist())
        else:
            view.new_reply()
        try:
            turn = await tokstream.run_turn(
                client, ctx, tools=tools, tool_specs=specs or None, on_event=view, **fields
            )
        except tokstream.TokstreamError as exc:
            line = f"tokstream: {describe(exc, args)}"
            if exc.saved_to is not None:
                line += f" (saved for replay: tokstream replay {exc.saved_to})"
            print(line, file=sys.stderr, flush=True)
            return exit_code(exc)
        if isinstance(view, LiveView):
            err.print(stats_line(turn.done, prompt), style="cyan")
        if not turn.tool_results:
            break
    return EXIT_OK
