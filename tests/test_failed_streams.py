"""Failed streams are saved, say where, keep secrets out, and replay.

Each failure kind runs against a real loopback server replaying vLLM's bytes
(``replay_server``): the record must hold the exact body the server received,
the error, and the IDs that arrived; ``client.replay(record)`` must resend the
same body.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, FailedRequest, FailedRequestStore, Token
from tokstream.testing import ReplayServer, open_replay_server

from ._transports import transport

__all__ = ["transport"]

PROMPT = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]


async def failing(client: tokstream.Client, **fields: object) -> Error:
    async with client.stream(PROMPT, max_tokens=64, temperature=0.0, **fields) as events:
        got = [event async for event in events]
    assert isinstance(got[-1], Error), got[-1]
    assert [e.id for e in got if isinstance(e, Token)] == got[-1].token_ids.tolist()
    return got[-1]


@pytest.mark.parametrize(
    ("scenario", "cls", "tokens", "status"),
    [
        ("status=400,prompt_too_long", tokstream.BadRequestError, 0, 400),
        ("status=503,prompt_too_long", tokstream.InternalServerError, 0, 503),
        ("sse=oov_token_id_beyond_embedding", tokstream.InBandError, 0, None),
        ("replay=midstream_error_internal", tokstream.InBandError, 25, None),
        ("close=forced_hermes,7", tokstream.RemoteDisconnected, 7, None),
        ("junk", tokstream.ProtocolError, 0, None),
    ],
)
async def test_every_failure_kind_is_saved_with_the_exact_body(
    transport: str,
    replay_server: ReplayServer,
    tmp_path: Path,
    scenario: str,
    cls: type[tokstream.TokstreamError],
    tokens: int,
    status: int | None,
    autojump_clock: MockClock,
) -> None:
    url = replay_server.url(scenario)
    async with tokstream.Client(
        url, model="tiny-qwen", transport=transport, failed_requests=tmp_path
    ) as client:
        err = await failing(client, seed=7, request_id="req-42")
    assert type(err.error) is cls
    assert err.saved_to is not None and err.save_error is None
    assert err.saved_to.parent == tmp_path and err.error.saved_to == err.saved_to
    assert any(str(err.saved_to) in note for note in err.error.__notes__)
    assert os.listdir(tmp_path) == [err.saved_to.name]
    record = FailedRequest.load(err.saved_to)
    assert record.body == replay_server.requests[-1].body  # byte for byte
    assert record.url == url + "/completions" and record.model == "tiny-qwen"
    assert record.request_id == "req-42"
    assert record.error.class_name == cls.__name__ and record.error.status == status
    assert record.error.message == str(err.error)
    if status is not None:
        assert record.error.body_preview and "maximum context length" in record.error.body_preview
    assert record.token_ids.size == tokens
    assert record.token_ids.tolist() == err.token_ids.tolist() and record.text == err.text
    assert record.diagnostics == err.diagnostics
    # Only the final failure is saved (one file), with every attempt: a 503 is
    # retried (4 attempts by default), the others are not.
    tries = 4 if status == 503 else 1
    assert len(replay_server.requests) == tries
    assert [a.error for a in record.attempts] == [cls.__name__] * tries
    assert [a.number for a in record.attempts] == list(range(1, tries + 1))
    assert [a.waited for a in record.attempts] == [a.waited for a in err.attempts]
    assert record.diagnostics.attempts == tries


async def test_a_stall_is_saved(
    autojump_clock: MockClock, replay_server: ReplayServer, tmp_path: Path
) -> None:
    timeouts = tokstream.Timeouts(stall=5.0)
    async with tokstream.Client(
        replay_server.url("stall=forced_hermes,3"),
        model="tiny-qwen",
        timeouts=timeouts,
        failed_requests=tmp_path,
    ) as client:
        err = await failing(client)
    assert isinstance(err.error, tokstream.StallTimeout)
    record = FailedRequest.load(err.saved_to)  # type: ignore[arg-type]
    assert record.error.class_name == "StallTimeout" and record.token_ids.size == 3
    assert record.diagnostics.elapsed >= 5.0


async def test_a_refused_connection_is_saved(tmp_path: Path) -> None:
    async with tokstream.Client(
        "http://127.0.0.1:9/v1", model="tiny-qwen", failed_requests=tmp_path
    ) as client:
        err = await failing(client)
    assert isinstance(err.error, tokstream.ConnectError)
    record = FailedRequest.load(err.saved_to)  # type: ignore[arg-type]
    assert json.loads(record.body)["prompt"] == PROMPT


async def test_start_stream_saves_too(replay_server: ReplayServer, tmp_path: Path) -> None:
    async with tokstream.Client(
        replay_server.url("close=forced_hermes,4"), model="m", failed_requests=tmp_path
    ) as client:
        async with trio.open_nursery() as nursery:
            channel = client.start_stream(nursery, PROMPT, max_tokens=64)
            events = [event async for event in channel]
    err = events[-1]
    assert isinstance(err, Error) and err.saved_to is not None
    assert FailedRequest.load(err.saved_to).token_ids.tolist() == err.token_ids.tolist()


async def test_success_and_cancellation_save_nothing(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    async with tokstream.Client(
        replay_server.url("replay=forced_hermes"), model="m", failed_requests=tmp_path
    ) as client:
        done = await client.complete(PROMPT, max_tokens=64)
        assert isinstance(done, Done)
    async with tokstream.Client(
        replay_server.url("stall=forced_hermes,3"), model="m", failed_requests=tmp_path
    ) as client:
        with trio.move_on_after(0.2):
            async with client.stream(PROMPT) as events:
                async for _ in events:
                    pass
        async with client.stream(PROMPT) as events:
            await events.__anext__()  # left early: abandoned, not failed
    assert os.listdir(tmp_path) == []


async def test_saving_off_saves_nothing(replay_server: ReplayServer, tmp_path: Path) -> None:
    async with tokstream.Client(
        replay_server.url("junk"), model="m", failed_requests=False
    ) as client:
        err = await failing(client)
    assert err.saved_to is None and err.save_error is None


async def test_replay_resends_the_saved_body(
    transport: str, replay_server: ReplayServer, tmp_path: Path
) -> None:
    async with tokstream.Client(
        replay_server.url("close=forced_hermes,5"), model="tiny-qwen", failed_requests=tmp_path
    ) as client:
        err = await failing(client, seed=3, logprobs=0, extra_body={"logit_bias": {"42": -1.0}})
    record = FailedRequest.load(err.saved_to)  # type: ignore[arg-type]
    # Another base URL and default model: the saved body (its model included) goes there.
    async with tokstream.Client(
        replay_server.url("replay=forced_hermes"), model="other", transport=transport
    ) as client:
        async with client.replay(record) as events:
            got = [event async for event in events]
        sent = replay_server.requests[-1]
        assert json.loads(sent.body) == json.loads(record.body)
        assert isinstance(got[-1], Done)
        comparison = record.compare(got[-1].token_ids)
        assert comparison.reproduced and comparison.common_prefix == 5
        # Overrides: another prompt and another model.
        async with client.replay(record, prompt=[1, 2, 3], model="tiny-2") as events:
            async for _ in events:
                pass
        body = json.loads(replay_server.requests[-1].body)
        assert body["prompt"] == [1, 2, 3] and body["model"] == "tiny-2"
        assert body["seed"] == 3 and body["logit_bias"] == {"42": -1.0}


async def test_no_secret_reaches_a_file_or_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """API key, URL password and a key header are planted; the server echoes the key back,
    and the Basic credential that the URL's userinfo becomes (base64, as sent)."""
    secret = "PLANTED-SECRET-9f3b"
    basic = base64.b64encode(f"me:pw-{secret}".encode()).decode()
    recordings = tmp_path / "recordings"
    (recordings / "errors").mkdir(parents=True)
    echo = {
        "error": {
            "message": f"invalid key sk-{secret}; Authorization: Basic {basic}; user {basic}",
            "type": "AuthError",
            "code": 401,
        }
    }
    (recordings / "errors" / "echo.body").write_text(json.dumps(echo))
    (recordings / "errors" / "echo_sse.body").write_text(
        f"data: {json.dumps(echo)}\n\ndata: [DONE]\n\n"
    )
    store = tmp_path / "store"
    caplog.set_level(logging.DEBUG)
    errors = []
    async with open_replay_server(recordings) as server:
        for scenario in ("status=401,echo", "sse=echo_sse", "junk"):
            base = server.url(scenario).replace("http://", f"http://me:pw-{secret}@")
            async with tokstream.Client(
                base,
                model="m",
                api_key=f"sk-{secret}",
                headers={"X-Api-Key": f"hdr-{secret}"},
                failed_requests=store,
            ) as client:
                errors.append(await failing(client, extra_body={"user": f"sk-{secret}"}))
    async with tokstream.Client(
        f"http://me:pw-{secret}@127.0.0.1:9/v1", model="m", failed_requests=store
    ) as client:
        errors.append(await failing(client))
    assert [type(e.error).__name__ for e in errors] == [
        "AuthenticationError",
        "InBandError",
        "ProtocolError",
        "ConnectError",
    ]
    assert all(e.saved_to is not None for e in errors)
    written = [p for p in store.rglob("*") if p.is_file()]
    assert len(written) == 4
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
        assert basic.encode() not in path.read_bytes(), path
        assert secret not in path.name
    assert any("saved a failed request" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text and basic not in caplog.text


async def test_a_store_that_cannot_write_never_hides_the_error(
    replay_server: ReplayServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the directory should be")
    store = FailedRequestStore(blocker / "failed")
    async with tokstream.Client(
        replay_server.url("close=forced_hermes,6"),
        model="m",
        api_key="sk-KEEP-OUT",
        failed_requests=store,
    ) as client:
        err = await failing(client)
        with pytest.raises(tokstream.RemoteDisconnected) as info:
            await client.complete(PROMPT, max_tokens=64)
    assert isinstance(err.error, tokstream.RemoteDisconnected)  # the stream's own error
    assert err.token_ids.size == 6 and err.saved_to is None
    assert err.save_error is not None and str(blocker) in err.save_error
    assert any("could not save the failed request" in n for n in info.value.__notes__)
    assert info.value.saved_to is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not save" in warnings[0].getMessage()
    assert "sk-KEEP-OUT" not in caplog.text


async def test_logprobs_of_a_partial_stream_are_saved(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    async with tokstream.Client(
        replay_server.url("close=forced_hermes_logprobs,6"), model="m", failed_requests=tmp_path
    ) as client:
        err = await failing(client, logprobs=0)
    assert err.logprobs is not None and err.logprobs.size == err.token_ids.size > 0
    record = FailedRequest.load(err.saved_to)  # type: ignore[arg-type]
    assert record.logprobs is not None
    assert np.array_equal(record.logprobs, err.logprobs, equal_nan=True)
