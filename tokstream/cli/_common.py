"""What every ``tokstream`` command shares: exit codes, one-line errors, options, IDs.

Exit codes (stable; scripts may test them):

====  ==========================================================================
0     success
1     an unexpected error, i.e. a bug (``--debug`` shows the traceback)
2     bad input: arguments, or a file that is missing or not what was expected
3     connection: the request never got going (refused, DNS, TLS, timeouts
      before sending)
4     server: the server answered with an error (an HTTP error status, or an
      error event inside the stream; ``decode``: a recording that ends in one)
5     stream: the stream broke after it started (dropped, stalled, not a valid
      vLLM stream)
130   interrupted (Ctrl-C)
====  ==========================================================================

Errors print one line on stderr, ``tokstream: <what happened>``, with what to
do where it is known (a base URL without ``/v1`` that answered 404 gets "did
you mean .../v1?"); no traceback unless ``--debug``. Argument errors too: one
line and exit code 2, not argparse's usage block.

Only the public ``tokstream`` API is used here (an import-linter contract
checks it): the command line is a client of the library like any other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import tokstream
from tokstream import (
    APIError,
    ContextError,
    InvalidRequest,
    NotFoundError,
    OutputError,
    StreamError,
    TokstreamError,
    TransportError,
    UnknownTokenError,
    UsageError,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "EXIT_BUG",
    "EXIT_CONNECT",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_STREAM",
    "ArgumentParser",
    "CommandError",
    "add_client_options",
    "add_sampling_options",
    "api_key",
    "check_base_url",
    "common_options",
    "describe",
    "exit_code",
    "one_line",
    "open_client",
    "parse_ids",
    "read_ids",
    "run_command",
    "sampling_fields",
    "timeouts",
]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_CONNECT = 3
EXIT_SERVER = 4
EXIT_STREAM = 5
EXIT_INTERRUPTED = 130

ENV_BASE_URL = "TOKSTREAM_BASE_URL"
"""Read for ``--base-url`` when it is not given (``make serve`` prints the line to set it)."""
ENV_MODEL = "TOKSTREAM_MODEL"
"""Read for ``--model`` when it is not given (else the server's first served model)."""
ENV_API_KEY = "TOKSTREAM_API_KEY"
"""The API key's variable when ``--api-key-env`` is not given (the key is never printed)."""
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
"""Where ``make serve`` puts the tiny CPU vLLM when port 8000 is free."""


class CommandError(Exception):
    """A command cannot go on; its message is the one line the user sees.

    Args:
        message: What happened and what to do.
        code: The exit code (``EXIT_INPUT`` unless given).
    """

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tokstream").strip()
        where = f"{command}: " if command else ""
        print(f"tokstream: {where}{message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def exit_code(exc: BaseException) -> int:
    """Return the exit code for a failure (see the module docstring)."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, (InvalidRequest, UsageError, ContextError, UnknownTokenError, OSError)):
        return EXIT_INPUT
    if isinstance(exc, TransportError):
        return EXIT_CONNECT
    if isinstance(exc, APIError):
        return EXIT_SERVER
    if isinstance(exc, (StreamError, OutputError)):
        return EXIT_STREAM
    return EXIT_BUG


def one_line(text: object) -> str:
    """Return ``text`` on one line (runs of whitespace, newlines included, become a space)."""
    return " ".join(str(text).split())


def describe(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """The one line (without the ``tokstream:`` prefix) that reports ``exc``.

    It adds what to do where the command knows better than the library: a 404
    from a base URL without ``/v1`` asks "did you mean .../v1?", and a refused
    connection to the default URL says how to start a server.
    """
    if isinstance(exc, CommandError):
        return one_line(exc)
    if isinstance(exc, OSError) and not isinstance(exc, TokstreamError):
        if exc.filename is not None:
            return one_line(f"{exc.filename}: {exc.strerror or exc}")
        return one_line(exc)
    if isinstance(exc, InvalidRequest):
        return one_line(exc)  # it names the field and the value; the class adds nothing
    message = f"{type(exc).__name__}: {one_line(exc)}"
    base_url = getattr(args, "base_url", None) if args is not None else None
    if isinstance(exc, NotFoundError) and base_url and not base_url.rstrip("/").endswith("/v1"):
        message += f"; did you mean {base_url.rstrip('/')}/v1?"
    elif (
        isinstance(exc, TransportError)
        and args is not None
        and getattr(args, "base_url_from", None) == "default"
    ):
        message += (
            f"; no --base-url was given and ${ENV_BASE_URL} is not set, so {DEFAULT_BASE_URL} "
            "was tried: start a server there with `make serve`, or pass --base-url"
        )
    return message


def common_options() -> ArgumentParser:
    """Return the parent parser of the options every command takes (``--debug``)."""
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    return common


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; turn its failure into one line on stderr and an exit code."""
    debug = bool(getattr(args, "debug", False))
    try:
        return command(args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("\ntokstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, TokstreamError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"tokstream: {describe(exc, args)}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:
        if debug:
            raise
        print(
            f"tokstream: unexpected {type(exc).__name__}: {one_line(exc)} "
            "(a bug; run again with --debug for the traceback, and report it)",
            file=sys.stderr,
        )
        return EXIT_BUG


# -- token IDs --------------------------------------------------------------------

_FILE_NAME = re.compile(r"[^\s,\[\]]*\.[A-Za-z]\w*")


def parse_ids(text: str, *, what: str) -> list[int]:
    """Parse token IDs: a JSON array, or integers separated by commas and/or whitespace.

    Raises:
        CommandError: Not a list of non-negative integers (exit code 2).
    """
    text = text.strip()
    problem = CommandError(
        f"{what} must be token IDs: a JSON array or integers separated by commas "
        f"or spaces (got {text[:40]!r})"
    )
    try:
        values = json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
    except ValueError:
        raise problem from None
    if not isinstance(values, list) or any(isinstance(v, (bool, float)) for v in values):
        raise problem
    try:
        ids = [int(v) for v in values]
    except (ValueError, TypeError):
        raise problem from None
    if not ids:
        raise CommandError(f"{what} holds no token IDs")
    if any(i < 0 for i in ids):
        raise CommandError(f"{what}: token IDs must be non-negative")
    return ids


def read_ids(value: str, *, what: str) -> list[int]:
    """Token IDs from ``-`` (stdin), a file, or the argument itself (``1,2,3``).

    A value that names an existing file is read as one; otherwise a value made
    only of digits, commas, spaces and brackets is the IDs themselves.

    Raises:
        CommandError: A missing file, or text that is not token IDs (exit code 2).
    """
    if value == "-":
        return parse_ids(sys.stdin.read(), what=f"{what} -")
    path = Path(value).expanduser()
    if path.is_file():
        try:
            return parse_ids(path.read_text(), what=f"{what} {value}")
        except OSError as exc:
            raise CommandError(f"{what} {value}: {exc.strerror or exc}") from None
    if os.sep in value or _FILE_NAME.fullmatch(value):
        raise CommandError(
            f"{what} {value}: no such file (give a file of token IDs, - for stdin, or the IDs "
            "themselves, e.g. 151644,872,198)"
        )
    return parse_ids(value, what=what)


# -- the server: --base-url, --model, the key, timeouts ------------------------------


def add_client_options(
    parser: argparse.ArgumentParser,
    *,
    model: bool = True,
    base_url_default: str = f"${ENV_BASE_URL}, else {DEFAULT_BASE_URL}",
    model_default: str = f"${ENV_MODEL}, else the server's first model",
) -> None:
    """Add ``--base-url``, ``--model`` (if ``model``), ``--api-key-env`` and the timeouts."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"the server's OpenAI base URL, with /v1 (default: {base_url_default})",
    )
    if model:
        group.add_argument(
            "--model", metavar="NAME", help=f"the served model name (default: {model_default})"
        )
    group.add_argument(
        "--api-key-env",
        metavar="VAR",
        help=f"read the API key from $VAR (default: ${ENV_API_KEY} if set); never printed",
    )
    group.add_argument(
        "--connect-timeout", type=float, metavar="S", help="seconds to connect (default 10)"
    )
    group.add_argument(
        "--stall-timeout",
        type=float,
        metavar="S",
        help="seconds of silence tolerated once the request is sent (default 120)",
    )
    group.add_argument(
        "--first-token-timeout",
        type=float,
        metavar="S",
        help="seconds from sending to the first token (default: none)",
    )


def check_base_url(args: argparse.Namespace) -> str:
    """Resolve ``--base-url`` (flag, environment, default) and check it; return it.

    Sets ``args.base_url`` and ``args.base_url_from`` (``"flag"``, ``"env"`` or
    ``"default"``), which :func:`describe` uses for its hints.

    Raises:
        CommandError: Not an http(s) URL (exit code 2), with the URL it likely meant.
    """
    if args.base_url:
        url, source = args.base_url, "flag"
    elif os.environ.get(ENV_BASE_URL):
        url, source = os.environ[ENV_BASE_URL], "env"
    else:
        url, source = DEFAULT_BASE_URL, "default"
    where = "--base-url" if source == "flag" else f"${ENV_BASE_URL}"
    if source == "default":
        where = "the default base URL"
    if not url.startswith(("http://", "https://")):
        guess = "http://" + url.split("://", 1)[-1]
        if not guess.rstrip("/").endswith("/v1"):
            guess = guess.rstrip("/") + "/v1"
        raise CommandError(
            f"{where} {url!r} must start with http:// or https:// (did you mean {guess}?)"
        )
    args.base_url, args.base_url_from = url, source
    return str(url)


def api_key(args: argparse.Namespace) -> str | None:
    """The API key from ``--api-key-env`` (or ``$TOKSTREAM_API_KEY``), or ``None``.

    Raises:
        CommandError: ``--api-key-env VAR`` names a variable that is not set.
    """
    if getattr(args, "api_key_env", None):
        key = os.environ.get(args.api_key_env)
        if not key:
            raise CommandError(f"--api-key-env {args.api_key_env}: ${args.api_key_env} is not set")
        return key
    return os.environ.get(ENV_API_KEY) or None


def timeouts(args: argparse.Namespace) -> tokstream.Timeouts:
    """The :class:`tokstream.Timeouts` the timeout flags ask for (defaults elsewhere)."""
    fields: dict[str, float] = {}
    for flag, name in (
        ("connect_timeout", "connect"),
        ("stall_timeout", "stall"),
        ("first_token_timeout", "first_token"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            fields[name] = value
    return tokstream.Timeouts(**fields)


async def open_client(args: argparse.Namespace) -> tokstream.Client:
    """A :class:`tokstream.Client` for the server options, its model resolved.

    ``--model``, else ``$TOKSTREAM_MODEL``, else the first model the server
    lists (``GET /v1/models``, as ``vllm complete`` does). The caller closes
    the client (``async with``).

    Raises:
        CommandError, InvalidRequest: Bad options (exit code 2).
        TokstreamError: Listing the models failed (connection, HTTP status).
    """
    base_url = check_base_url(args)
    key = api_key(args)
    options: dict[str, Any] = {"api_key": key, "timeouts": timeouts(args)}
    model = getattr(args, "model", None) or os.environ.get(ENV_MODEL)
    if not model:
        async with tokstream.Client(base_url, model="-", **options) as probe:
            listed = await probe.models()
        if not listed:
            raise CommandError(f"{base_url}/models lists no model; pass --model", EXIT_SERVER)
        model = listed[0].id
    args.model = model
    return tokstream.Client(base_url, model=model, **options)


# -- sampling -------------------------------------------------------------------------


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Add the request fields: sampling, ``--priority``, ``--logprobs``, ``--extra-body``."""
    group = parser.add_argument_group("request")
    group.add_argument(
        "--max-tokens", type=int, default=256, metavar="N", help="default 256 (>= 1)"
    )
    group.add_argument("--temperature", type=float, metavar="T", help="0 is greedy")
    group.add_argument("--top-p", type=float, metavar="P")
    group.add_argument("--top-k", type=int, metavar="K")
    group.add_argument("--seed", type=int)
    group.add_argument(
        "--stop", action="append", metavar="TEXT", help="a stop string (repeat for more)"
    )
    group.add_argument(
        "--priority",
        type=int,
        help="scheduling priority, lower runs earlier (the server needs "
        "--scheduling-policy priority, else it is ignored)",
    )
    group.add_argument(
        "--logprobs",
        action="store_true",
        help="ask for each sampled token's log-probability (shown with --show-ids, and in --json)",
    )
    group.add_argument(
        "--extra-body",
        metavar="JSON",
        help="more body fields as a JSON object, e.g. '{\"ignore_eos\": true}'",
    )


def sampling_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the sampling options ask for (only what was given).

    Raises:
        CommandError: ``--extra-body`` is not a JSON object (exit code 2).
    """
    fields: dict[str, Any] = {"max_tokens": args.max_tokens}
    for name in ("temperature", "top_p", "top_k", "seed", "priority"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.stop:
        fields["stop"] = tuple(args.stop)
    if args.logprobs:
        fields["logprobs"] = 0
    if args.extra_body is not None:
        try:
            extra = json.loads(args.extra_body)
        except ValueError as exc:
            raise CommandError(f"--extra-body is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise CommandError(f"--extra-body must be a JSON object (got {args.extra_body!r})")
        fields["extra_body"] = extra
    return fields
