"""``tokstream models`` and ``tokstream health``: what a server serves, and whether it is up.

``health`` asks ``GET /health`` and ``GET /v1/models``, so that it can tell
"nothing answers" (exit code 3) from "the server answers, but not healthy"
(exit code 4), and name the models when all is well.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

import tokstream

from ._common import (
    EXIT_OK,
    EXIT_SERVER,
    CommandError,
    api_key,
    check_base_url,
    timeouts,
)

__all__ = ["health_command", "models_command"]


def _client(args: argparse.Namespace) -> tokstream.Client:
    return tokstream.Client(
        check_base_url(args), model="-", api_key=api_key(args), timeouts=timeouts(args)
    )


def models_command(args: argparse.Namespace) -> int:
    """``tokstream models``."""
    return trio.run(_models, _client(args), args.json)


async def _models(client: tokstream.Client, as_json: bool) -> int:
    async with client:
        models = await client.models()
    if as_json:
        for m in models:
            entry = {"id": m.id, "max_model_len": m.max_model_len, "root": m.root}
            print(json.dumps({**entry, "owned_by": m.owned_by}))
        return EXIT_OK
    if not models:
        print(f"{client.base_url}/models lists no model")
        return EXIT_OK
    width = max(len("MODEL"), *(len(m.id) for m in models))
    print(f"{'MODEL':<{width}}  {'MAX LEN':>7}  {'OWNED BY':<8}  ROOT")
    for m in models:
        max_len = "-" if m.max_model_len is None else m.max_model_len
        print(f"{m.id:<{width}}  {max_len:>7}  {m.owned_by or '-':<8}  {m.root or '-'}")
    return EXIT_OK


def health_command(args: argparse.Namespace) -> int:
    """``tokstream health``."""
    return trio.run(_health, _client(args))


async def _health(client: tokstream.Client) -> int:
    async with client:
        healthy = await client.health()
        models = await client.models()  # raises when nothing answers: exit code 3
    names = ", ".join(m.id for m in models) or "no model"
    if not healthy:
        raise CommandError(
            f"{client.root_url}/health did not answer 200, though {client.base_url}/models "
            f"answered ({names}): the server is up but not healthy; see its log",
            EXIT_SERVER,
        )
    print(f"ok: {client.root_url} is healthy, serving {names}", file=sys.stdout)
    return EXIT_OK
