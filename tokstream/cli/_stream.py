"""``tokstream generate`` and ``tokstream decode``: one stream, shown live.

``generate`` sends a prompt (text with ``--tokenizer``, or token IDs) to a
server and shows the reply in the live view (``_view.py``); ``decode`` shows a
recorded SSE body the same way, without a server. Both end with the stats line
(stderr) or the stream's error, on one line, with its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

import tokstream
from tokstream import Done, Error, Event, TokstreamError

from ._common import (
    EXIT_OK,
    CommandError,
    describe,
    exit_code,
    open_client,
    read_ids,
    sampling_fields,
)
from ._view import JsonView, LiveView, make_console, stats_line

__all__ = ["decode_command", "finish", "generate_command", "load_tokenizer", "make_view", "show"]


def load_tokenizer(args: argparse.Namespace) -> tokstream.Tokenizer | None:
    """``--tokenizer``'s tokenizer, or ``None`` without one.

    Raises:
        TokenizerNotFoundError: No tokenizer there (exit code 2).
    """
    path = getattr(args, "tokenizer", None)
    if not path:
        return None
    return tokstream.Tokenizer.load(Path(path).expanduser())


def make_view(
    args: argparse.Namespace,
    tokenizer: tokstream.Tokenizer | None,
    prompt: Sequence[int] | None,
    *,
    show_ids: bool | None = None,
) -> LiveView | JsonView:
    """The view the output options ask for."""
    if getattr(args, "json", False):
        return JsonView(sys.stdout, prompt)
    return LiveView(
        make_console(sys.stdout, args.color),
        tokenizer=tokenizer,
        show_ids=args.show_ids if show_ids is None else show_ids,
        parsed=tokenizer is not None,
        logprobs=bool(getattr(args, "logprobs", False)),
    )


async def show(
    events: AsyncIterable[Event],
    view: LiveView | JsonView,
    tokenizer: tokstream.Tokenizer | None,
    *,
    first_event: Callable[[], object] | None = None,
) -> Done | Error:
    """Feed a stream's events to ``view`` (through the response parser with a tokenizer).

    Args:
        events: The stream's events.
        view: Where they go.
        tokenizer: With one, tokens also go through ``tokstream.ResponseParser``
            and its events (thinking, text, tool calls) go to the view too.
        first_event: Called once, before the first event is shown.

    Returns:
        The stream's ``Done`` or ``Error``.
    """

    def on_event(event: object) -> None:
        nonlocal first_event
        if first_event is not None:
            first_event()
            first_event = None
        view(event)

    if tokenizer is None:
        async for event in events:
            on_event(event)
    else:
        parser = tokstream.ResponseParser(tokenizer)
        async with tokstream.open_reply(events, parser, on_event=on_event) as handle:
            with contextlib.suppress(TokstreamError):  # the view got it; finish() reports it
                await handle.result()
    if view.terminal is None:
        raise AssertionError("a stream always ends with Done or Error")
    return view.terminal


def finish(
    terminal: Done | Error,
    prompt: Sequence[int] | None,
    args: argparse.Namespace,
    err: Console | None = None,
    *,
    failed: str = "",
) -> int:
    """Report how a stream ended: the stats line, or the error's one line; the exit code.

    ``failed`` starts the error line (e.g. ``"the replay failed: "``).
    """
    err = err or make_console(sys.stderr, getattr(args, "color", "auto"))
    if isinstance(terminal, Done):
        if not getattr(args, "json", False):
            err.print(stats_line(terminal, prompt), style="cyan")
        return EXIT_OK
    exc = terminal.error
    line = f"tokstream: {failed}{describe(exc, args)}"
    if terminal.saved_to is not None:
        line += f" (saved for replay: tokstream replay {terminal.saved_to})"
    elif terminal.save_error is not None:
        line += f" (not saved for replay: {terminal.save_error})"
    print(line, file=sys.stderr, flush=True)
    return exit_code(exc)


# -- generate ------------------------------------------------------------------------


def add_output_options(parser: argparse.ArgumentParser, *, ids_default: bool = False) -> None:
    """Add ``--show-ids``, ``--json`` and ``--color``."""
    group = parser.add_argument_group("output")
    if not ids_default:
        group.add_argument(
            "--show-ids",
            action="store_true",
            help="one row per token: index, ID, its own text (and log-probability)",
        )
    group.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    group.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour: on a terminal (auto, the default; NO_COLOR turns it off), always, never",
    )


def prompt_ids(
    args: argparse.Namespace, tokenizer: tokstream.Tokenizer | None
) -> tuple[list[int], str]:
    """The prompt's IDs, from ``--ids`` or ``--prompt`` (with ``--tokenizer``); and a label."""
    if args.ids is not None:
        return read_ids(args.ids, what="--ids"), "--ids"
    if tokenizer is None:
        raise CommandError("--prompt needs --tokenizer DIR (the model's tokenizer), or give --ids")
    ids = tokenizer.encode(args.prompt).tolist()
    if not ids:
        raise CommandError("--prompt is empty")
    return [int(i) for i in ids], "--prompt"


def generate_command(args: argparse.Namespace) -> int:
    """``tokstream generate``."""
    tokenizer = load_tokenizer(args)
    prompt, _ = prompt_ids(args, tokenizer)
    fields = sampling_fields(args)
    tokstream.CompletionRequest.build(prompt, **fields)  # bad fields: exit 2, nothing sent
    return trio.run(_generate, args, tokenizer, prompt, fields)


async def _generate(
    args: argparse.Namespace,
    tokenizer: tokstream.Tokenizer | None,
    prompt: list[int],
    fields: dict[str, Any],
) -> int:
    view = make_view(args, tokenizer, prompt)
    client = await open_client(args)
    err = make_console(sys.stderr, args.color)
    with contextlib.ExitStack() as stack:
        first_event = None
        if isinstance(view, LiveView) and err.is_terminal:
            waiting = stack.enter_context(
                err.status(f"waiting for the first token from {client.base_url} ...")
            )
            first_event = waiting.stop
        async with client, client.stream(prompt, **fields) as events:
            terminal = await show(events, view, tokenizer, first_event=first_event)
    return finish(terminal, prompt, args, err)


# -- decode --------------------------------------------------------------------------


def decode_command(args: argparse.Namespace) -> int:
    """``tokstream decode``."""
    tokenizer = load_tokenizer(args)
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as f:
            data = f.read()
    decoder = tokstream.StreamDecoder()
    events = [*decoder.feed(data), *decoder.finish()]
    view = make_view(args, tokenizer, None, show_ids=True)
    terminal = trio.run(show, _aiter(events), view, tokenizer)
    return finish(terminal, None, args)


async def _aiter(events: Iterable[Event]) -> Any:
    for event in events:
        yield event
