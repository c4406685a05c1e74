"""``tokstream replay`` and ``tokstream failed``: saved failed requests from a shell.

``tokstream replay FILE [--base-url URL] [--model M] [--api-key-env VAR] [--prompt-ids FILE]``
    Resend a saved failed request, print its tokens as they arrive, report
    success or the new failure, then compare the output with the saved partial
    output: ``identical prefix of N tokens``, or the first differing token.

``tokstream failed list [--dir DIR]``
    The saved records, newest first: time, error class, tokens received, URL, file.

``tokstream failed show FILE [--json]``
    One record in full.

FILE is a path, a file name in the store's directory, or ``latest``. The
store's directory is ``--dir``, else ``$TOKSTREAM_FAILED_DIR``, else
``$XDG_STATE_HOME/tokstream/failed``, else ``~/.local/state/tokstream/failed``.
Exit codes and error lines are ``_cli_common``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec
import trio

from .._events import Done, Error, Token
from .._exceptions import InvalidRecord
from .._failed import FailedRequest, FailedRequestStore
from .._failed._record import read_summary
from .._failed._store import ENV_DIR, default_directory
from ..core._request import CompletionRequest
from ._cli_common import CommandError, exit_code, one_line, parse_ids
from ._client import Client

__all__ = ["add_commands"]

_FIRST_IDS = 12


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``replay`` and ``failed`` to the ``tokstream`` parser's subcommands."""
    rp = sub.add_parser(
        "replay",
        parents=[common],
        help="resend a saved failed request and compare its output with the saved one",
        description="Resend a saved failed request, stream the reply, and compare it with "
        "the saved partial output.",
    )
    rp.add_argument("file", help="a saved record: a path, a name in the store, or 'latest'")
    rp.add_argument("--base-url", help="send it here instead (e.g. http://127.0.0.1:8000/v1)")
    rp.add_argument("--model", help="send this model name instead of the saved one")
    rp.add_argument("--api-key-env", metavar="VAR", help="read the API key from $VAR")
    rp.add_argument(
        "--prompt-ids",
        metavar="FILE",
        help="send these prompt IDs instead (a JSON array, or integers separated by commas "
        "or spaces; - reads stdin)",
    )
    rp.add_argument("--max-tokens", type=int, help="send this max_tokens instead")
    rp.add_argument("--ids", action="store_true", help="print each token's ID and text per line")
    rp.add_argument("--dir", help="the store's directory, to find FILE by name")
    rp.set_defaults(run=replay_command)

    failed = sub.add_parser("failed", help="list or show saved failed requests")
    fsub = failed.add_subparsers(dest="failed_command", required=True, metavar="{list,show}")
    ls = fsub.add_parser("list", parents=[common], help="list saved failed requests, newest first")
    ls.add_argument("--dir", help="the store's directory")
    ls.set_defaults(run=list_command)
    sh = fsub.add_parser("show", parents=[common], help="show one saved failed request")
    sh.add_argument("file", help="a saved record: a path, a name in the store, or 'latest'")
    sh.add_argument("--dir", help="the store's directory, to find FILE by name")
    sh.add_argument("--json", action="store_true", help="print the record's JSON")
    sh.set_defaults(run=show_command)


# -- failed list / show ---------------------------------------------------------


def _directory(args: argparse.Namespace) -> Path | None:
    if args.dir:
        return Path(args.dir).expanduser()
    try:
        return default_directory()
    except RuntimeError as exc:
        raise CommandError(f"no home directory ({exc}); pass --dir or set {ENV_DIR}") from None


def _resolve(name: str, args: argparse.Namespace) -> Path:
    """A record's path: as given if it exists, else by name in the store, or ``latest``."""
    path = Path(name).expanduser()
    if path.exists() or os.sep in name:
        return path
    directory = _directory(args)
    if directory is None:
        return path  # saving is off: report the missing file as given
    if name == "latest":
        paths = FailedRequestStore(directory).paths()
        if not paths:
            raise CommandError(f"no saved failed requests in {directory}")
        return paths[0]
    for candidate in (directory / name, directory / f"{name}.json"):
        if candidate.exists():
            return candidate
    return path


def list_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``tokstream failed list``."""
    directory = _directory(args)
    if directory is None:
        print(
            f"saving failed requests is off ({ENV_DIR}={os.environ.get(ENV_DIR)}); "
            "pass --dir DIR to list a directory",
            file=out,
        )
        return 0
    paths = FailedRequestStore(directory).paths()
    if not paths:
        print(f"no saved failed requests in {directory}", file=out)
        return 0
    print(f"{'FAILED AT (UTC)':<26}  {'ERROR':<20} {'TOKENS':>6}  {'URL':<40}  FILE", file=out)
    for path in paths:
        try:
            failed_at, error, url, tokens = read_summary(path)
        except InvalidRecord as exc:
            print(f"{'?':<26}  {'(unreadable)':<20} {'?':>6}  {one_line(exc)}", file=out)
            continue
        when = failed_at.strftime("%Y-%m-%d %H:%M:%S.%f")
        print(f"{when:<26}  {error:<20} {tokens:>6}  {url:<40}  {path.name}", file=out)
    print(f"{len(paths)} saved in {directory}, newest first", file=out)
    return 0


def show_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """``tokstream failed show``."""
    path = _resolve(args.file, args)
    record = FailedRequest.load(path)
    if args.json:
        out.write(msgspec.json.format(path.read_bytes(), indent=2).decode() + "\n")
        return 0
    err = record.error
    fields = record.body_fields()
    prompt = fields.pop("prompt", [])
    for key in ("stream", "return_token_ids", "stream_options"):
        fields.pop(key, None)
    elapsed = (record.failed_at - record.started_at).total_seconds()
    rows: list[tuple[str, object]] = [
        ("file", path),
        (
            "failed at",
            f"{record.failed_at:%Y-%m-%d %H:%M:%S.%f} UTC ({elapsed:.3f} s after it began)",
        ),
        ("url", record.url),
        ("model", record.model or "-"),
        ("request id", record.request_id or "-"),
        ("error", f"{err.class_name}: {one_line(err.message)}"),
    ]
    if err.status is not None:
        rows.append(("status", err.status))
    if err.body_preview:
        rows.append(("body", one_line(err.body_preview)))
    if err.server_message is not None:
        rows.append(
            (
                "server said",
                f"{one_line(err.server_message)} [type={err.server_type}, "
                f"code={err.code}, param={err.param}]",
            )
        )
    if err.retry_after is not None:
        rows.append(("retry after", f"{err.retry_after} s"))
    rows.append(("attempts", len(record.attempts)))
    for a in record.attempts:
        status = "-" if a.status is None else a.status
        message = "" if a.message == err.message else f": {one_line(a.message)}"
        rows.append(
            (
                f"  #{a.number}",
                f"{a.error} status={status} waited={a.waited:.3f}s tokens={a.tokens}{message}",
            )
        )
    rows += [
        ("diagnostics", record.diagnostics.describe()),
        ("prompt", f"{len(prompt)} IDs {_ids(prompt)}"),
        ("sampling", ", ".join(f"{k}={v!r}" for k, v in fields.items()) or "-"),
        ("output", f"{record.token_ids.size} tokens {_ids(record.token_ids.tolist())}"),
        ("text", repr(record.text)),
        ("logprobs", "saved" if record.logprobs is not None else "not requested"),
        ("saved by", f"tokstream {record.tokstream_version}"),
        ("replay", f"tokstream replay {path}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=out)
    return 0


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:_FIRST_IDS]))
    return f"[{shown}{', ...' if len(ids) > _FIRST_IDS else ''}]"


# -- replay -----------------------------------------------------------------------


def replay_command(args: argparse.Namespace) -> int:
    """``tokstream replay``."""
    path = _resolve(args.file, args)
    record = FailedRequest.load(path)
    if args.base_url is None and "***@" in record.url:
        raise CommandError(
            f"{path} was sent to a URL with credentials, which are never saved "
            f"({record.url}); pass --base-url"
        )
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise CommandError(f"--api-key-env {args.api_key_env}: ${args.api_key_env} is not set")
    prompt = None
    if args.prompt_ids is not None:
        prompt = parse_ids(_read_text(args.prompt_ids), what=f"--prompt-ids {args.prompt_ids}")
    fields: dict[str, object] = {}
    if args.model:
        fields["model"] = args.model
    if args.max_tokens is not None:
        fields["max_tokens"] = args.max_tokens
    # The saved body and the overrides are checked before anything is sent.
    request = record.request()
    if prompt is not None:
        request = dataclasses.replace(request, prompt=prompt)  # type: ignore[arg-type]
    CompletionRequest.build(request, **fields)
    return trio.run(_replay, args, path, record, api_key, prompt, fields)


def _read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except OSError as exc:
        raise CommandError(f"--prompt-ids {name}: {exc.strerror or exc}") from None


async def _replay(
    args: argparse.Namespace,
    path: Path,
    record: FailedRequest,
    api_key: str | None,
    prompt: list[int] | None,
    fields: dict[str, Any],
) -> int:
    out = sys.stdout
    base_url = args.base_url or record.base_url
    model = args.model or record.model or "unknown"
    saved = record.token_ids.size
    client = Client(base_url, model=model, api_key=api_key)  # checks the URL first
    print(
        f"replaying {path.name}: {record.error.class_name} after {saved} tokens; sending to "
        f"{base_url.rstrip('/')}/completions (model {fields.get('model', record.model)})",
        file=out,
        flush=True,
    )
    ids: list[int] = []
    terminal: Done | Error | None = None
    at_line_start = True
    async with client, client.replay(record, prompt=prompt, **fields) as events:
        async for event in events:
            if isinstance(event, Token):
                ids.append(event.id)
                if args.ids:
                    out.write(f"{event.id}\t{event.text!r}\n")
                elif event.text:
                    out.write(event.text)
                    at_line_start = event.text.endswith("\n")
                out.flush()
                continue
            if not at_line_start:
                out.write("\n")
            terminal = event
    assert terminal is not None  # a stream always ends with Done or Error
    comparison = record.compare(ids)
    if isinstance(terminal, Done):
        d = terminal.diagnostics
        ttft = "-" if d.time_to_first_token is None else f"{d.time_to_first_token:.3f}s"
        print(
            f"done: finish_reason={terminal.finish_reason}, {terminal.token_ids.size} tokens, "
            f"ttft {ttft}, {d.elapsed:.3f}s",
            file=out,
        )
        print(f"compared with the saved output: {comparison.describe()}", file=out, flush=True)
        return 0
    print(f"compared with the saved output: {comparison.describe()}", file=out, flush=True)
    exc = terminal.error
    where = f"; saved as {terminal.saved_to}" if terminal.saved_to is not None else ""
    print(
        f"tokstream: the replay failed: {type(exc).__name__}: {one_line(exc)}{where}",
        file=sys.stderr,
    )
    return exit_code(exc)
