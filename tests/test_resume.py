"""Resume after a drop (issue 10, section 3), against a real loopback server.

The server plays vLLM: the first attempt streams some tokens and the
connection breaks; the continuation must arrive as the prompt plus exactly the
IDs received, with ``max_tokens`` reduced by their number, and the caller sees
one unbroken stream and one ``Done``. The live test against the CPU vLLM is
``test_live_resume.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, RetryPolicy, Token

from ._transports import transport
from .scripted_server import Reply, serve_script, simple_response, sse_events, sse_response

__all__ = ["transport"]

PROMPT = [1, 2, 3]
IDS = [11, 12, 13, 14, 15, 16, 17, 18]


def cut_after(k: int, then: str = "reset") -> Reply:
    """The first ``k`` tokens of IDS, then the connection breaks mid-body."""
    events = sse_events(PROMPT, IDS, finish=None)[:k]
    return Reply(sse_response(events, end=False, extra=b'1f\r\ndata: {"id"'), then=then)


def continuation(received: list[int], rest: list[int], **kw: object) -> Reply:
    """vLLM's answer to the continuation: its prompt echo is the prompt plus ``received``."""
    return Reply(sse_response(sse_events([*PROMPT, *received], rest, **kw)))  # type: ignore[arg-type]


async def collect(client: tokstream.Client, **kw: object) -> list[tokstream.Event]:
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0.0)  # greedy: resumable without asking for more
    async with client.stream(PROMPT, **kw) as events:
        return [ev async for ev in events]


@pytest.mark.parametrize("then", ["reset", "close"])
async def test_a_dropped_stream_is_continued_and_spliced(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock, then: str
) -> None:
    server = await serve_script(nursery, cut_after(3, then), continuation(IDS[:3], IDS[3:]))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client, resume=True, temperature=0.0, request_id="req-s")
        stats = client.statistics()
    # One unbroken sequence of tokens and one Done.
    tokens = [e for e in events if isinstance(e, Token)]
    assert [t.id for t in tokens] == IDS
    assert "".join(t.text for t in tokens) == "".join(f"<{i}>" for i in IDS)
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    done = events[-1]
    assert isinstance(done, Done)
    assert done.token_ids.tolist() == IDS and done.finish_reason == "length"
    assert done.prompt_token_ids is not None and done.prompt_token_ids.tolist() == PROMPT
    assert done.splices == (3,)
    assert [(a.number, a.error, a.tokens) for a in done.attempts] == [
        (1, "RemoteDisconnected", 3),
        (2, None, 5),
    ]
    # The usage is the whole stream's: the continuation's prompt held the 3 IDs.
    assert done.usage == tokstream.Usage(3, 8, 11)
    # What the continuation asked for: the prompt plus the IDs received, 3 fewer tokens.
    first, second = server.bodies
    assert first["prompt"] == PROMPT and first["max_tokens"] == 8
    assert second["prompt"] == PROMPT + IDS[:3] and second["max_tokens"] == 5
    assert {k: v for k, v in first.items() if k not in ("prompt", "max_tokens")} == {
        k: v for k, v in second.items() if k not in ("prompt", "max_tokens")
    }
    assert server.header(1, "x-request-id") == "req-s"
    assert (stats.retries, stats.resumes, stats.streams_finished) == (1, 1, 1)


async def test_several_drops_and_a_failed_continuation(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    second_cut = Reply(
        sse_response(sse_events([*PROMPT, *IDS[:2]], IDS[2:5], finish=None), end=False),
        then="reset",
    )
    server = await serve_script(
        nursery,
        cut_after(2),
        Reply(simple_response(502, b"bad gateway")),  # the continuation fails before a token
        second_cut,
        continuation(IDS[:5], IDS[5:]),
    )
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client, retry=RetryPolicy(resume=True, attempts=5))
    done = events[-1]
    assert isinstance(done, Done) and done.token_ids.tolist() == IDS
    assert [e.id for e in events if isinstance(e, Token)] == IDS
    assert done.splices == (2, 5)
    assert [a.error for a in done.attempts] == [
        "RemoteDisconnected", "InternalServerError", "RemoteDisconnected", None,
    ]  # fmt: skip
    assert [b["prompt"] for b in server.bodies] == [
        PROMPT, PROMPT + IDS[:2], PROMPT + IDS[:2], PROMPT + IDS[:5],
    ]  # fmt: skip
    assert [b["max_tokens"] for b in server.bodies] == [8, 6, 6, 3]


async def test_the_nursery_form_resumes_too(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, cut_after(4), continuation(IDS[:4], IDS[4:]))
    async with tokstream.Client(
        server.url(), model="m", transport=transport, retry=RetryPolicy(resume=True)
    ) as client:
        async with trio.open_nursery() as inner:
            channel = client.start_stream(inner, PROMPT, max_tokens=8, seed=3)
            events = [ev async for ev in channel]
    assert [e.id for e in events if isinstance(e, Token)] == IDS
    assert isinstance(events[-1], Done) and events[-1].splices == (4,)


async def test_an_abort_and_a_stall_are_resumed(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    aborted = Reply(sse_response(sse_events(PROMPT, IDS[:2], finish="abort")))
    stalled = Reply(
        sse_response(sse_events([*PROMPT, *IDS[:2]], IDS[2:4], finish=None), end=False),
        then="hang",
    )
    server = await serve_script(nursery, aborted, stalled, continuation(IDS[:4], IDS[4:]))
    timeouts = tokstream.Timeouts(stall=5.0)
    async with tokstream.Client(
        server.url(), model="m", transport=transport, timeouts=timeouts
    ) as client:
        events = await collect(client, resume=True)
    done = events[-1]
    assert isinstance(done, Done) and done.token_ids.tolist() == IDS
    assert [a.error for a in done.attempts] == ["RequestAborted", "StallTimeout", None]


async def test_resume_is_off_by_default_and_the_error_says_how_to_turn_it_on(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, cut_after(3))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
        also = await collect(client, resume=False, retry=RetryPolicy(resume=True))
    for err in (events[-1], also[-1]):
        assert isinstance(err, Error) and isinstance(err.error, tokstream.RemoteDisconnected)
        assert err.token_ids.tolist() == IDS[:3]
        assert "RetryPolicy(resume=True)" in str(err.error)
    assert server.requests == 2  # one per stream: no continuation


async def test_a_continuation_that_is_not_one_is_refused(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # The server echoes a different prefix: it did not continue this stream.
    wrong = Reply(sse_response(sse_events([*PROMPT, 99, 98, 97], IDS[3:])))
    server = await serve_script(nursery, cut_after(3), wrong)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client, resume=True)
    err = events[-1]
    assert isinstance(err, Error) and type(err.error) is tokstream.ProtocolError
    assert "did not continue this stream" in str(err.error)
    assert err.token_ids.tolist() == IDS[:3]  # nothing of the wrong continuation was kept
    assert [e.id for e in events if isinstance(e, Token)] == IDS[:3]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"extra_body": {"structured_outputs": {"regex": "a+"}}},
            "extra_body['structured_outputs'] steers",
        ),
        ({"max_tokens": 3}, "all max_tokens=3 tokens had arrived"),
    ],
)
async def test_what_cannot_be_resumed_is_not(
    transport: str,
    nursery: trio.Nursery,
    autojump_clock: MockClock,
    fields: dict[str, object],
    reason: str,
) -> None:
    server = await serve_script(nursery, cut_after(3), continuation(IDS[:3], IDS[3:]))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client, resume=True, **fields)
    err = events[-1]
    assert isinstance(err, Error) and isinstance(err.error, tokstream.RemoteDisconnected)
    assert f"not resumed: {reason}" in str(err.error) and server.requests == 1


async def test_min_tokens_shrinks_with_the_continuation(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, cut_after(3), continuation(IDS[:3], IDS[3:]))
    async with tokstream.Client(server.url(), model="m") as client:
        await collect(client, resume=True, extra_body={"min_tokens": 5})
    assert [b["min_tokens"] for b in server.bodies] == [5, 2]


# -- when a drop is resumed: the sampling, and what a continuation cannot carry -----------


@pytest.mark.parametrize(
    ("fields", "policy", "resumed"),
    [
        ({"temperature": 0.0}, RetryPolicy(resume=True), True),
        ({"top_k": 1, "temperature": 0.8}, RetryPolicy(resume=True), True),
        ({"temperature": 0.8, "seed": 7}, RetryPolicy(resume=True), True),
        ({"temperature": 0.8}, RetryPolicy(resume=True), False),
        ({}, RetryPolicy(resume=True), False),  # the server's default temperature samples
        ({"temperature": 0.8}, RetryPolicy(resume=True, resume_unseeded=True), True),
        ({"temperature": 0.0, "stop": "END"}, RetryPolicy(resume=True), False),
        ({"temperature": 0.0, "extra_body": {"presence_penalty": 0.5}}, None, False),
        ({"temperature": 0.0, "extra_body": {"frequency_penalty": 0.1}}, None, False),
        ({"temperature": 0.0, "extra_body": {"truncate_prompt_tokens": 9}}, None, False),
        ({"temperature": 0.0, "extra_body": {"repetition_penalty": 1.2}}, None, True),
        ({"temperature": 0.0, "stop_token_ids": (5,)}, None, True),
    ],
)
async def test_only_a_reproducible_continuation_is_resumed(
    nursery: trio.Nursery,
    autojump_clock: MockClock,
    fields: dict[str, object],
    policy: RetryPolicy | None,
    resumed: bool,
) -> None:
    server = await serve_script(nursery, cut_after(3), continuation(IDS[:3], IDS[3:]))
    async with tokstream.Client(
        server.url(), model="m", retry=policy or RetryPolicy(resume=True)
    ) as client:
        async with client.stream(PROMPT, max_tokens=8, **fields) as stream:
            events = [ev async for ev in stream]
    end = events[-1]
    assert [e.id for e in events if isinstance(e, Token)] == (IDS if resumed else IDS[:3])
    assert isinstance(end, Done if resumed else Error)
    assert server.requests == (2 if resumed else 1)
    if not resumed:
        assert isinstance(end, Error) and "not resumed: " in str(end.error)
        assert end.saved_to is not None  # the final failure is saved, resume or not


def test_why_a_stream_is_not_resumed() -> None:
    from tokstream.core._retry import resume_blocker

    def blocker(received: int = 3, **fields: object) -> str | None:
        return resume_blocker(tokstream.CompletionRequest.build(PROMPT, **fields), received)

    assert blocker(temperature=0.0) is None
    assert "without a seed" in (blocker(temperature=0.7) or "")
    assert "temperature=0 or a seed" in (blocker() or "")
    assert "stop strings" in (blocker(temperature=0.0, stop=("a", "b")) or "")
    assert "all max_tokens=3" in (blocker(3, temperature=0.0, max_tokens=3) or "")
    assert "all max_tokens=16" in (blocker(16, temperature=0.0, max_tokens=None) or "")
    guided = blocker(temperature=0.0, extra_body={"guided_json": {}})
    assert guided is not None and "grammar" in guided


def test_the_continuation_request() -> None:
    from tokstream.core._retry import continuation as cont

    received = np.array([7, 8], dtype=np.int32)
    base = tokstream.CompletionRequest.build(PROMPT, max_tokens=8, seed=1, temperature=0.5)
    nxt = cont(base, received)
    assert nxt.prompt.tolist() == [*PROMPT, 7, 8] and nxt.max_tokens == 6
    assert (nxt.seed, nxt.temperature) == (1, 0.5)
    assert base.prompt.tolist() == PROMPT  # the caller's request is untouched
    with_min = dataclasses.replace(base, extra_body={"min_tokens": 1, "logit_bias": {"5": 1}})
    assert dict(cont(with_min, received).extra_body) == {"min_tokens": 0, "logit_bias": {"5": 1}}
