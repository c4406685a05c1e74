"""Session keys: sent as ``X-Session-ID`` and ``session_id``, defaulted by Client and Context.

vllm-router's ``consistent_hash`` policy keys on ``X-Session-ID`` first (then
``x-user-id`` ... ``x-request-id``), so a session header keeps every turn of a
conversation on one replica and a per-request ``X-Request-Id`` cannot break it.
The live routing itself is checked in ``test_live_cluster.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import tokstream
from tokstream import CompletionRequest, Done, InvalidRequest
from tokstream._tokenizer import Tokenizer
from tokstream._trio._turns import run_turn
from tokstream.context import Context
from tokstream.testing import ReplayServer

from ._transports import transport
from .test_runner import FakeClient

__all__ = ["transport"]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


# -- the request ----------------------------------------------------------------------


def test_session_id_goes_into_the_body_and_survives_a_saved_body() -> None:
    req = CompletionRequest([1, 2, 3], session_id="rollout-17")
    body = json.loads(req.encode("m"))
    assert body["session_id"] == "rollout-17"
    assert "session_id" not in json.loads(CompletionRequest([1]).encode("m"))
    assert CompletionRequest.from_body(body).session_id == "rollout-17"


@pytest.mark.parametrize("bad", ["", " padded", "tab\there", "caf\u00e9", "line\nbreak", 17])
def test_a_bad_session_id_is_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidRequest, match="session_id"):
        CompletionRequest([1], session_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="session_id"):
        tokstream.Client("http://127.0.0.1:9/v1", model="m", session_id=bad)  # type: ignore[arg-type]


# -- the client -----------------------------------------------------------------------


async def test_the_header_and_body_carry_the_session(
    transport: str, replay_server: ReplayServer
) -> None:
    url = replay_server.url("replay=basic_stream")
    async with tokstream.Client(url, model="m", transport=transport) as client:
        assert client.session_id is None
        await client.complete([1, 2], session_id="s-1", request_id="r-1")
        await client.complete([1, 2])
    first, second = replay_server.requests
    assert first.headers["x-session-id"] == "s-1"
    assert first.headers["x-request-id"] == "r-1"
    assert json.loads(first.body)["session_id"] == "s-1"
    assert "x-session-id" not in second.headers
    assert "session_id" not in json.loads(second.body)


async def test_the_client_default_session_and_a_streams_own(
    transport: str, replay_server: ReplayServer
) -> None:
    url = replay_server.url("replay=basic_stream")
    # A session header given as a plain header becomes the default, so that a
    # stream's own session replaces it rather than being sent next to it.
    for kwargs in ({"session_id": "conv-9"}, {"headers": {"X-Session-ID": "conv-9"}}):
        replay_server.requests.clear()
        async with tokstream.Client(url, model="m", transport=transport, **kwargs) as client:
            assert client.session_id == "conv-9"
            done = await client.complete([1, 2])
            assert isinstance(done, Done)
            await client.complete([1, 2], session_id="other")
        default, own = replay_server.requests
        assert default.headers["x-session-id"] == "conv-9"
        assert json.loads(default.body)["session_id"] == "conv-9"
        assert own.headers["x-session-id"] == "other"
        assert json.loads(own.body)["session_id"] == "other"


# -- the context ----------------------------------------------------------------------


def test_each_context_has_its_own_session_and_saves_it(tok: Tokenizer) -> None:
    a, b = Context(tok), Context(tok)
    assert a.session_id != b.session_id
    assert len(a.session_id) == 32
    a.add_user("hi")
    restored = Context.from_json(a.to_json(), tok)
    assert restored.session_id == a.session_id
    assert Context(tok, session_id="mine").session_id == "mine"
    legacy = a.to_dict()
    del legacy["session_id"]  # saved before sessions existed: a fresh key
    assert Context.from_dict(legacy, tok).session_id not in (a.session_id, "")
    legacy["session_id"] = 5
    with pytest.raises(tokstream.ContextError, match="session_id"):
        Context.from_dict(legacy, tok)
    with pytest.raises(InvalidRequest, match="session_id"):
        Context(tok, session_id="")


async def test_every_turn_sends_the_contexts_session(tok: Tokenizer) -> None:
    ctx = Context(tok)
    ctx.add_user("Hello")
    client = FakeClient([tok.encode("One.").tolist(), tok.encode("Two.").tolist()], delay=0)
    await run_turn(client, ctx, tools={}, max_tokens=8)
    ctx.add_user("Again")
    await run_turn(client, ctx, tools={}, max_tokens=8, session_id="override")
    assert [f["session_id"] for f in client.fields] == [ctx.session_id, "override"]


# -- which replica served a stream ------------------------------------------------------


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self):  # type: ignore[no-untyped-def,override]
        yield self.data


class _Tagged(httpx.AsyncBaseTransport):
    """Answers every request with one token (or a 503), with ``headers`` on the response."""

    def __init__(self, headers: dict[str, str], status: int) -> None:
        self.headers = headers
        self.status = status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.status != 200:
            body = b'{"error": {"message": "overloaded", "type": "Unavailable", "code": 503}}'
            return httpx.Response(self.status, headers=self.headers, stream=_Body(body))
        chunk = {
            "id": "cmpl-1",
            "choices": [{"index": 0, "text": "a", "token_ids": [7], "finish_reason": "length"}],
        }
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        headers = {"content-type": "text/event-stream", **self.headers}
        return httpx.Response(200, headers=headers, stream=_Body(body))


@pytest.mark.parametrize(
    ("replica_header", "sent", "expected"),
    [
        ({}, {"x-tokstream-replica": "r2"}, "r2"),  # the kit's header, read by default
        ({"replica_header": "X-Served-By"}, {"x-served-by": "gpu-7"}, "gpu-7"),
        ({"replica_header": None}, {"x-tokstream-replica": "r2"}, None),
        ({}, {}, None),
    ],
)
async def test_done_and_error_name_the_replica(
    replica_header: dict[str, object], sent: dict[str, str], expected: str | None, tmp_path: Path
) -> None:
    for status in (200, 503):
        async with tokstream.Client(
            "http://127.0.0.1:9/v1",
            model="m",
            transport=_Tagged(sent, status),
            failed_requests=tmp_path,
            **replica_header,  # type: ignore[arg-type]
        ) as client:
            async with client.stream([1, 2], max_tokens=1) as events:
                terminal = [e async for e in events][-1]
        assert terminal.replica == expected, terminal
        if status != 200:
            assert isinstance(terminal, tokstream.Error)
            assert terminal.saved_to is not None
            assert tokstream.FailedRequest.load(terminal.saved_to).replica == expected


def test_a_bad_replica_header_name_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="header name"):
        tokstream.Client("http://127.0.0.1:9/v1", model="m", replica_header="bad header")


class _Sequence(httpx.AsyncBaseTransport):
    """Answers with each ``(status, replica)`` in turn, as a router failing over does."""

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = answers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, replica = self.answers.pop(0)
        return await _Tagged({"x-tokstream-replica": replica}, status).handle_async_request(request)


async def test_each_attempt_names_its_replica(tmp_path: Path) -> None:
    retry = tokstream.RetryPolicy(attempts=3, backoff=0.0)
    answers = [(503, "r1"), (503, "r1"), (200, "r2")]
    async with tokstream.Client(
        "http://127.0.0.1:9/v1", model="m", transport=_Sequence(answers), retry=retry
    ) as client:
        done = await client.complete([1, 2], max_tokens=1)
    assert [(a.status, a.replica) for a in done.attempts] == [
        (503, "r1"),
        (503, "r1"),
        (None, "r2"),
    ]
    assert done.replica == "r2"

    answers = [(503, "r1"), (503, "r2")]
    retry = tokstream.RetryPolicy(attempts=2, backoff=0.0)
    async with tokstream.Client(
        "http://127.0.0.1:9/v1",
        model="m",
        transport=_Sequence(answers),
        retry=retry,
        failed_requests=tmp_path,
    ) as client:
        async with client.stream([1, 2], max_tokens=1) as events:
            error = [e async for e in events][-1]
    assert isinstance(error, tokstream.Error)
    assert [a.replica for a in error.attempts] == ["r1", "r2"] and error.replica == "r2"
    assert error.saved_to is not None
    record = tokstream.FailedRequest.load(error.saved_to)
    assert [a.replica for a in record.attempts] == ["r1", "r2"] and record.replica == "r2"
