"""Retries (issue 10, section 2): what a stream tries again, how long it waits, and what it shows.

Every test runs over both stream transports against a real loopback server
(``scripted_server.py``) that counts the attempts, on trio's ``autojump_clock``
so that backoffs and ``Retry-After`` waits elapse at once and can be measured
exactly.
"""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
import trio
from trio.testing import MockClock

import tokstream
from tokstream import Done, Error, RetryPolicy, Token
from tokstream.core._http_errors import retry_after_seconds
from tokstream.core._retry import classify

from ._transports import transport
from .scripted_server import Reply, serve_script, simple_response, sse_events, sse_response

__all__ = ["transport"]

PROMPT = [1, 2, 3]
IDS = [11, 12, 13, 14]
OK = Reply(sse_response(sse_events(PROMPT, IDS)))
ERROR_BODY = b'{"error": {"message": "busy", "type": "ServiceUnavailable", "code": 503}}'


def status(code: int, *headers: tuple[str, str], body: bytes = ERROR_BODY) -> Reply:
    return Reply(simple_response(code, body, headers=headers))


async def collect(client: tokstream.Client, **kw: object) -> list[tokstream.Event]:
    async with client.stream(PROMPT, max_tokens=16, **kw) as events:
        return [ev async for ev in events]


def done_of(events: list[tokstream.Event]) -> Done:
    assert isinstance(events[-1], Done), events[-1]
    return events[-1]


def error_of(events: list[tokstream.Event]) -> Error:
    assert isinstance(events[-1], Error), events[-1]
    return events[-1]


# -- the policy itself -----------------------------------------------------------


def test_the_defaults() -> None:
    p = RetryPolicy()
    assert (p.attempts, p.backoff, p.max_backoff) == (4, 0.25, 5.0)
    assert (p.rate_limit_attempts, p.rate_limit_backoff, p.max_retry_after) == (8, 5.0, 60.0)
    assert p.resume is False
    assert tokstream.Client("http://127.0.0.1:9/v1", model="m").retry == p


@pytest.mark.parametrize(
    "bad",
    [
        {"attempts": 0},
        {"attempts": 1.5},
        {"backoff": -1},
        {"max_retry_after": float("inf")},
        {"rate_limit_attempts": True},
        {"resume": "yes"},
    ],
)
def test_bad_policies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(tokstream.InvalidRequest, match="retry\\."):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_full_jitter_backoff_stays_within_its_doubling_bounds() -> None:
    policy = RetryPolicy(attempts=10)
    rng = random.Random(7)
    exc = tokstream.ConnectError("refused")
    for attempt in range(1, 10):
        bound = min(5.0, 0.25 * 2 ** (attempt - 1))
        waits = [policy.decide(exc, attempt=attempt, tokens=0, rng=rng).wait for _ in range(200)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > 0.8 * bound and min(waits) < 0.2 * bound  # spread over all of it
    assert not policy.decide(exc, attempt=10, tokens=0).retry


def test_what_is_transient() -> None:
    def kind(exc: tokstream.TokstreamError, tokens: int = 0, **kw: bool) -> str:
        return classify(exc, tokens=tokens, empty=kw.get("empty", False), cut_short=False)

    def http(code: int, retry_after: float | None = None) -> tokstream.HTTPStatusError:
        cls = tokstream._exceptions.status_error_class(code)
        return cls(
            "x", status_code=code, body_preview="", server_message="", retry_after=retry_after
        )

    for exc in (tokstream.ConnectError("x"), tokstream.ConnectTimeout("x"),
                tokstream.PoolTimeout("x"), tokstream.TransportError("x"),
                tokstream.RemoteDisconnected("x"), tokstream.StallTimeout("x"),
                tokstream.FirstTokenTimeout("x"), tokstream.RequestAborted("x"),
                http(500), http(502), http(503), http(504),
                tokstream.InBandError("x", server_message="", code=500)):  # fmt: skip
        assert kind(exc) == "transient", exc
    assert kind(tokstream.ProtocolError("x"), empty=True) == "transient"  # an empty response
    assert kind(http(429)) == kind(http(503, 2.0)) == "rate_limit"
    for exc in (http(400), http(401), http(403), http(404), http(422), http(501),
                tokstream.ProtocolError("x"), tokstream.TotalTimeout("x"),
                tokstream.InBandError("x", server_message="", code=400)):  # fmt: skip
        assert kind(exc) == "never", exc
    # After a token, only a drop may be continued (and only with resume on).
    assert kind(tokstream.RemoteDisconnected("x"), tokens=3) == "drop"
    assert kind(tokstream.InBandError("x", server_message="", code=500), tokens=3) == "never"
    assert kind(tokstream.ConnectError("x"), tokens=3) == "never"


def test_retry_after_is_read_as_seconds_a_date_or_milliseconds() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": "7"}, now) == 7.0
    assert retry_after_seconds({"retry-after": " 1.5 "}, now) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250"}, now) == 0.25
    # retry-after-ms is the more precise of the two when both are sent.
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "1"}, now) == 0.25
    date = formatdate(now + 42, usegmt=True)  # e.g. "Tue, 14 Nov 2023 22:14:02 GMT"
    assert retry_after_seconds({"retry-after": date}, now) == pytest.approx(42.0)
    assert retry_after_seconds({"retry-after": formatdate(now - 5, usegmt=True)}, now) == 0.0
    for junk in ("soon", "-3", "nan", "inf", ""):
        assert retry_after_seconds({"retry-after": junk}, now) is None
    assert retry_after_seconds({}, now) is None


# -- retried before the first token --------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        status(500, body=b"Internal Server Error"),
        status(502),
        status(503),
        status(504),
        Reply(b"", then="reset"),  # reset before a response
        Reply(b"", then="close"),  # closed without a response
        Reply(sse_response([])),  # an empty response
        Reply(sse_response([b'data: {"error": {"message": "boom", "code": 500}}\n\n'])),
    ],
    ids=["500", "502", "503", "504", "reset", "closed", "empty", "in-band"],
)
async def test_transient_failures_before_the_first_token_are_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock, failure: Reply
) -> None:
    server = await serve_script(nursery, failure, failure, OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
        stats = client.statistics()
    done = done_of(events)
    assert [e.id for e in events if isinstance(e, Token)] == IDS == done.token_ids.tolist()
    assert server.requests == 3 and server.bodies[0] == server.bodies[2]
    assert [a.number for a in done.attempts] == [1, 2, 3]
    assert done.attempts[-1].error is None and done.attempts[0].error is not None
    assert done.attempts[0].waited == 0 and all(a.waited <= 1.0 for a in done.attempts)
    assert done.diagnostics.attempts == 3
    assert done.diagnostics.retry_wait == pytest.approx(sum(a.waited for a in done.attempts))
    assert (stats.retries, stats.streams_finished, stats.streams_failed) == (2, 1, 0)


async def test_attempts_run_out_and_the_error_shows_every_one(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(503))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        t0 = trio.current_time()
        events = await collect(client, request_id="req-r")
        elapsed = trio.current_time() - t0
    err = error_of(events)
    exc = err.error
    assert isinstance(exc, tokstream.InternalServerError) and exc.status_code == 503
    assert server.requests == 4
    assert err.attempts == exc.attempts and len(exc.attempts) == 4
    first = exc.attempts[0]
    assert (first.number, first.error, first.status, first.waited, first.tokens) == (
        1, "InternalServerError", 503, 0.0, 0,
    )  # fmt: skip
    assert "busy" in first.message and "request_id=req-r" in first.message
    waits = [a.waited for a in exc.attempts]
    assert waits[1] <= 0.25 and waits[2] <= 0.5 and waits[3] <= 1.0
    assert elapsed == pytest.approx(sum(waits))  # nothing but the backoff took time
    message = str(exc)
    assert "4 attempts" in message and "RetryPolicy.attempts=4" in message
    assert f"backoff waited {sum(waits):.2f}s" in message
    assert "#1 InternalServerError (HTTP 503)" in message
    assert err.diagnostics.attempts == 4


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_client_errors_are_never_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock, code: int
) -> None:
    server = await serve_script(nursery, status(code, body=b'{"error": {"message": "no"}}'), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
    err = error_of(events)
    assert isinstance(err.error, tokstream.HTTPStatusError) and err.error.status_code == code
    assert server.requests == 1 and len(err.attempts) == 1
    assert "attempts" not in str(err.error)  # one attempt: nothing to add


async def test_an_in_band_bad_request_is_not_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    oov = b'data: {"error": {"message": "Token id 9 is out of vocabulary", "code": 400}}\n\n'
    server = await serve_script(nursery, Reply(sse_response([oov])), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
    assert isinstance(error_of(events).error, tokstream.InBandError) and server.requests == 1


async def test_a_first_token_timeout_is_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, Reply(sse_response([], end=False), then="hang"), OK)
    timeouts = tokstream.Timeouts(first_token=3.0)
    async with tokstream.Client(
        server.url(), model="m", transport=transport, timeouts=timeouts
    ) as client:
        events = await collect(client)
    done = done_of(events)
    assert done.attempts[0].error == "FirstTokenTimeout" and server.requests == 2


async def test_a_pool_timeout_is_retried(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # One connection, held for 5 s by a stream that hangs: the second stream's
    # attempts wait pool=2 s each (no backoff here), the third gets it.
    hold = Reply(sse_response(sse_events(PROMPT, IDS[:1], finish=None), end=False), then="hang")
    server = await serve_script(nursery, hold, OK)
    timeouts = tokstream.Timeouts(pool=2.0)
    limits = tokstream.Limits(max_connections=1)
    retry = RetryPolicy(backoff=0.0)
    async with tokstream.Client(
        server.url(), model="m", transport=transport, timeouts=timeouts, limits=limits, retry=retry
    ) as client:
        async with client.stream(PROMPT) as holding:
            assert isinstance(await holding.__anext__(), Token)
            t0 = trio.current_time()
            async with trio.open_nursery() as inner:

                async def release() -> None:
                    await trio.sleep(5.0)
                    await holding.aclose()

                inner.start_soon(release)
                events = await collect(client)
            assert trio.current_time() - t0 == pytest.approx(5.0)
    done = done_of(events)
    assert [a.error for a in done.attempts] == ["PoolTimeout", "PoolTimeout", None]
    assert server.requests == 2  # the attempts that timed out in the pool never left


# -- rate limits and Retry-After -----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "wait"),
    [(("retry-after", "7"), 7.0), (("retry-after-ms", "1500"), 1.5)],
)
async def test_a_rate_limit_waits_as_asked(
    transport: str,
    nursery: trio.Nursery,
    autojump_clock: MockClock,
    header: tuple[str, str],
    wait: float,
) -> None:
    server = await serve_script(nursery, status(429, header), status(503, header), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        t0 = trio.current_time()
        events = await collect(client)
        elapsed = trio.current_time() - t0
    done = done_of(events)
    assert elapsed == pytest.approx(2 * wait)
    assert [a.waited for a in done.attempts] == [0.0, wait, wait]
    assert [a.retry_after for a in done.attempts[:2]] == [wait, wait]
    assert [a.status for a in done.attempts] == [429, 503, None]


async def test_a_retry_after_date_is_waited_for(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # The date is wall-clock time; the wait is measured against it when the answer arrives.
    import time

    date = formatdate(time.time() + 30, usegmt=True)
    server = await serve_script(nursery, status(429, ("retry-after", date)), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        t0 = trio.current_time()
        done = done_of(await collect(client))
        elapsed = trio.current_time() - t0
    assert 27 <= elapsed <= 30 and done.attempts[0].retry_after == pytest.approx(elapsed)


async def test_rate_limit_errors_carry_the_headers_and_the_wait(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(429, ("retry-after", "120"), ("x-quota", "0")))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        t0 = trio.current_time()
        events = await collect(client)
        assert trio.current_time() == t0  # failed at once: no wait past the cap
    exc = error_of(events).error
    assert isinstance(exc, tokstream.RateLimitError)
    assert exc.retry_after == 120.0 and exc.headers["retry-after"] == "120"
    assert exc.headers["x-quota"] == "0"
    assert server.requests == 1
    assert "asked to wait 120s" in str(exc) and "max_retry_after=60s" in str(exc)


async def test_a_rate_limit_without_retry_after_backs_off_longer(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(429))
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
    exc = error_of(events).error
    assert server.requests == 8 and len(exc.attempts) == 8  # rate_limit_attempts
    waits = [a.waited for a in exc.attempts[1:]]
    assert waits[0] == 5.0
    assert all(5.0 <= w <= min(60.0, 5.0 * 2**k) for k, w in enumerate(waits))
    assert "RetryPolicy.rate_limit_attempts=8" in str(exc)


# -- after a token, and what turns it off --------------------------------------------


async def test_a_drop_after_a_token_is_not_retried_by_default(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    cut = Reply(sse_response(sse_events(PROMPT, IDS, finish=None)[:2], end=False), then="reset")
    server = await serve_script(nursery, cut, OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
    err = error_of(events)
    assert isinstance(err.error, tokstream.RemoteDisconnected)
    assert err.token_ids.tolist() == IDS[:2] and server.requests == 1
    assert err.attempts[0].tokens == 2
    assert "RetryPolicy(resume=True)" in str(err.error)


async def test_retry_none_on_the_client_or_the_stream(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(503), status(503), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport, retry=None) as c:
        assert isinstance(error_of(await collect(c)).error, tokstream.InternalServerError)
        assert server.requests == 1
        # A stream can still ask for its own policy.
        done = done_of(await collect(c, retry=RetryPolicy(attempts=2)))
        assert server.requests == 3 and len(done.attempts) == 2
    again = await serve_script(nursery, status(503), OK)
    async with tokstream.Client(again.url(), model="m", transport=transport) as c:
        assert isinstance(error_of(await collect(c, retry=None)).error, tokstream.HTTPStatusError)
        assert again.requests == 1
    with pytest.raises(tokstream.InvalidRequest, match="retry"):
        tokstream.Client(server.url(), model="m", retry=3)  # type: ignore[arg-type]


async def test_cancelling_during_the_backoff_stops_at_once(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(429, ("retry-after", "50")), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        t0 = trio.current_time()
        with trio.move_on_after(10.0) as scope:
            await collect(client)
        assert scope.cancelled_caught and trio.current_time() - t0 == pytest.approx(10.0)
        assert client.statistics().streams_abandoned == 1
    assert server.requests == 1


async def test_the_nursery_form_retries_and_closing_the_channel_stops_the_backoff(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    server = await serve_script(nursery, status(502), OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        async with trio.open_nursery() as inner:
            channel = client.start_stream(inner, PROMPT)
            events = [ev async for ev in channel]
        assert done_of(events).token_ids.tolist() == IDS and server.requests == 2

        slow = await serve_script(nursery, status(429, ("retry-after", "50")), OK)
        async with tokstream.Client(slow.url(), model="m", transport=transport) as other:
            async with trio.open_nursery() as inner:
                channel = other.start_stream(inner, PROMPT)
                await trio.sleep(5.0)  # the stream is in its backoff now
                t0 = trio.current_time()
                await channel.aclose()
            assert trio.current_time() - t0 < 1.0
            assert other.statistics().streams_abandoned == 1
        assert slow.requests == 1


async def test_total_bounds_the_retries_too(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    limited = status(429, ("retry-after", "20"))
    server = await serve_script(nursery, limited, limited, OK)
    timeouts = tokstream.Timeouts(total=30.0)
    async with tokstream.Client(
        server.url(), model="m", transport=transport, timeouts=timeouts
    ) as client:
        events = await collect(client)
    exc = error_of(events).error
    # The second wait of 20 s would pass total=30 s: stop, and say so.
    assert isinstance(exc, tokstream.RateLimitError) and server.requests == 2
    assert "a wait of 20.00s would pass Timeouts.total (10.00s were left)" in str(exc)


# -- what the server says: x-should-retry, 408/409 (as the openai SDK reads them) -----


@pytest.mark.parametrize(
    ("failure", "tries"),
    [
        (status(408), 2),  # a proxy's request timeout
        (status(409), 2),  # a lock timeout
        (status(400, ("x-should-retry", "true")), 2),  # the server says so
        (status(500, ("x-should-retry", "false")), 1),
        (status(429, ("x-should-retry", "false"), ("retry-after", "1")), 1),
        (status(501), 1),
    ],
    ids=["408", "409", "400-should-retry", "500-should-not", "429-should-not", "501"],
)
async def test_the_server_can_say_whether_to_retry(
    transport: str, nursery: trio.Nursery, autojump_clock: MockClock, failure: Reply, tries: int
) -> None:
    server = await serve_script(nursery, failure, OK)
    async with tokstream.Client(server.url(), model="m", transport=transport) as client:
        events = await collect(client)
    assert server.requests == tries
    assert isinstance(events[-1], Done if tries == 2 else Error)


def test_an_overflowing_retry_after_is_a_wait_too_long_not_none() -> None:
    # As the openai SDK reads it: a number too big for a float asks for too long a wait.
    assert retry_after_seconds({"retry-after": "1e400"}, 0.0) == float("inf")
    exc = tokstream.RateLimitError(
        "x", status_code=429, body_preview="", server_message="", retry_after=float("inf")
    )
    decision = RetryPolicy().decide(exc, attempt=1, tokens=0)
    assert not decision.retry and "asked to wait infs" in decision.reason
