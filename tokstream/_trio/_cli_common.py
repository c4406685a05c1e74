"""What every ``tokstream`` command shares: exit codes, one-line errors, ID lists.

Exit codes (stable; scripts may test them):

====  ==========================================================================
0     success
1     an unexpected error, i.e. a bug (``--debug`` shows the traceback); also
      ``tokstream decode`` on a recording that ends in an error
2     bad input: arguments, or a file that is missing or not what was expected
3     connection: the request never got going (refused, DNS, TLS, timeouts
      before sending)
4     server: the server answered with an error (an HTTP error status, or an
      error event inside the stream)
5     stream: the stream broke after it started (dropped, stalled, not a valid
      vLLM stream)
130   interrupted (Ctrl-C)
====  ==========================================================================

Errors print one line on stderr, ``tokstream: <what happened>``, with what to
do where the message knows it; no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable

from .._exceptions import (
    APIError,
    InvalidRequest,
    OutputError,
    StreamError,
    TokstreamError,
    TransportError,
    UsageError,
)

__all__ = [
    "EXIT_BUG",
    "EXIT_CONNECT",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_STREAM",
    "CommandError",
    "common_options",
    "exit_code",
    "one_line",
    "parse_ids",
    "run_command",
]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_CONNECT = 3
EXIT_SERVER = 4
EXIT_STREAM = 5
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command cannot go on; its message is the one line the user sees.

    Args:
        message: What happened and what to do.
        code: The exit code (``EXIT_INPUT`` unless given).
    """

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def exit_code(exc: BaseException) -> int:
    """Return the exit code for a failure (see the module docstring)."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, (InvalidRequest, UsageError, OSError)):
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


def common_options() -> argparse.ArgumentParser:
    """Return the parent parser of the options every command takes (``--debug``)."""
    common = argparse.ArgumentParser(add_help=False)
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
        print("tokstream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, TokstreamError, OSError) as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, CommandError):
            message = str(exc)
        elif isinstance(exc, OSError) and exc.filename is not None:
            message = f"{exc.filename}: {exc.strerror or exc}"
        else:
            message = f"{type(exc).__name__}: {exc}"
        print(f"tokstream: {one_line(message)}", file=sys.stderr)
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
