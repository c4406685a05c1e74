"""``tokstream replay`` and ``tokstream failed``: saved failed requests from a shell.

``tokstream replay FILE [--base-url URL] [--model M] [--prompt-ids FILE] [...]``
    Resend a saved failed request, show the reply in the live view (``_view.py``),
    report success (the stats line) or the new failure, then compare the output
    with the saved partial output: ``identical prefix of N tokens``, or the
    first differing token.

``tokstream failed list [--dir DIR]``
    The saved records, newest first: time, error class, tokens received, URL, file.

``tokstream failed show FILE [--json]``
    One record in full.

FILE is a path, a file name in the store's directory, or ``latest``. The
store's directory is ``--dir``, else ``$TOKSTREAM_FAILED_DIR``, else
``$XDG_STATE_HOME/tokstream/failed``, else ``~/.local/state/tokstream/failed``.
Exit codes and error lines are ``_common``'s.
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

import tokstream
from tokstream import CompletionRequest, FailedRequest, FailedRequestStore, InvalidRecord

from ._common import (
    CommandError,
    api_key,
    check_base_url,
    one_line,
    read_ids,
    timeouts,
)
from ._stream import finish, load_tokenizer, make_view, show

__all__ = ["ENV_DIR", "list_command", "replay_command", "show_command"]

ENV_DIR = "TOKSTREAM_FAILED_DIR"
_FIRST_IDS = 12


# -- failed list / show ---------------------------------------------------------


def _directory(args: argparse.Namespace) -> Path | None:
    if args.dir:
        return Path(args.dir).expanduser()
    store = FailedRequestStore.from_environment()
    return None if store is None else store.directory


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
            record = FailedRequest.load(path)
        except InvalidRecord as exc:
            print(f"{'?':<26}  {'(unreadable)':<20} {'?':>6}  {one_line(exc)}", file=out)
            continue
        when = record.failed_at.strftime("%Y-%m-%d %H:%M:%S.%f")
        error, tokens = record.error.class_name, record.token_ids.size
        print(f"{when:<26}  {error:<20} {tokens:>6}  {record.url:<40}  {path.name}", file=out)
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
    args.base_url = args.base_url or record.base_url
    check_base_url(args)
    key = api_key(args)
    tokenizer = load_tokenizer(args)
    prompt = None
    if args.prompt_ids is not None:
        prompt = read_ids(args.prompt_ids, what="--prompt-ids")
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
    return trio.run(_replay, args, path, record, key, tokenizer, prompt, fields)


async def _replay(
    args: argparse.Namespace,
    path: Path,
    record: FailedRequest,
    key: str | None,
    tokenizer: tokstream.Tokenizer | None,
    prompt: list[int] | None,
    fields: dict[str, Any],
) -> int:
    model = args.model or record.model or "unknown"
    client = tokstream.Client(args.base_url, model=model, api_key=key, timeouts=timeouts(args))
    view = make_view(args, tokenizer, prompt or record.prompt.tolist(), show_ids=args.show_ids)
    if not args.json:
        print(
            f"replaying {path.name}: {record.error.class_name} after {record.token_ids.size} "
            f"tokens; sending to {client.completions_url} (model {model})",
            flush=True,
        )
    async with client, client.replay(record, prompt=prompt, **fields) as events:
        terminal = await show(events, view, tokenizer)
    ids = terminal.token_ids
    comparison = f"compared with the saved output: {record.compare(ids).describe()}"
    status = finish(terminal, prompt or record.prompt.tolist(), args, failed="the replay failed: ")
    if args.json:
        print(msgspec.json.encode({"event": "comparison", "text": comparison}).decode())
    else:
        print(comparison, flush=True)
    return status
