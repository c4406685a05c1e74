"""Live integration tests against a real vLLM (CPU, tiny random-weight Qwen3).

Every test here talks to a real server that tokstream.testing started: the
session's ``vllm_server`` or this module's ``vllm_server_serial``
(``--max-num-seqs 1``). Output is made deterministic by greedy decoding or by
forcing exact token IDs with a structured-outputs grammar of token references.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from tokenizers import Tokenizer

import tokstream
from tokstream import Done, Error, Token
from tokstream.testing import (
    IM_END_ID,
    THINK_END_ID,
    THINK_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    VLLMServer,
    forcing_body,
)

from ._transports import transport

__all__ = ["transport"]  # the fixture the stream tests run over (trio and httpx)

pytestmark = pytest.mark.vllm

PROMPT_TEXT = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"

HERMES_REPLY = (
    "<think>\nThe user wants the weather in Paris. I should call get_weather.\n</think>\n\n"
    "Let me check the weather for you.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
CODER_REPLY = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "</function>\n</tool_call>"
)
UTF8_REPLY = "Météo à Paris : ensoleillé ☀️ 23 °C 🫠 巴黎的天气很好 👍🏽 日本語も"

TIMEOUTS = tokstream.Timeouts(connect=5.0, stall=60.0, first_token=None)


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def prompt(tok: Tokenizer) -> np.ndarray[Any, np.dtype[np.int32]]:
    return np.asarray(tok.encode(PROMPT_TEXT).ids, dtype=np.int32)


def encode(tok: Tokenizer, text: str) -> list[int]:
    ids: list[int] = tok.encode(text, add_special_tokens=False).ids
    return ids


def client_for(server: VLLMServer, **kwargs: Any) -> tokstream.Client:
    return tokstream.Client(
        server.base_url, model=server.model, api_key=None, timeouts=TIMEOUTS, **kwargs
    )


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


def metrics_http() -> httpx.AsyncClient:
    """An HTTP client for ``/metrics`` that keeps no connection open between requests.

    The timeout is generous: while the engine streams ~23 KB logprob chunks the
    API server can take seconds to answer on a loaded 2-core machine.
    """
    return httpx.AsyncClient(
        limits=httpx.Limits(max_keepalive_connections=0), timeout=httpx.Timeout(60.0)
    )


async def metric(server: VLLMServer, name: str, http: httpx.AsyncClient) -> float:
    """The value of a gauge on the server's Prometheus ``/metrics`` (summed over labels)."""
    response = await http.get(server.root_url + "/metrics")
    response.raise_for_status()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]
    assert values, f"{name} not found on {server.root_url}/metrics"
    return sum(values)


async def wait_for_gauge(
    server: VLLMServer, name: str, value: float, http: httpx.AsyncClient, reads: int = 3000
) -> None:
    """Poll a gauge until it reads ``value``; vLLM sets gauges once per engine step.

    A single read can lag the stream (a CI run read ``num_requests_running`` 0 after 5
    tokens had arrived), so a state is awaited, bounded by a number of reads, never timed.
    """
    seen = []
    for _ in range(reads):
        seen.append(await metric(server, name, http))
        if seen[-1] == value:
            return
        await trio.sleep(0.01)
    raise AssertionError(f"{name} never read {value} in {reads} reads; last reads {seen[-5:]}")


async def wait_for_generation(
    server: VLLMServer, before: float, http: httpx.AsyncClient, reads: int = 3000
) -> None:
    """Poll until the engine's generated-token counter has passed ``before`` + 5.

    The counter (``vllm:generation_tokens_total``) proves the request is being
    generated; the ``num_requests_running`` gauge once read 0 throughout a running
    stream on a loaded CI machine, so it is not the premise. Bounded by reads.
    """
    for _ in range(reads):
        if await metric(server, "vllm:generation_tokens_total", http) >= before + 5:
            return
        await trio.sleep(0.01)
    raise AssertionError(f"no generation seen on the server in {reads} reads")


async def wait_until_generation_stops(
    server: VLLMServer, http: httpx.AsyncClient, quiet_reads: int = 20, reads: int = 3000
) -> None:
    """Poll until the generated-token counter holds still for ``quiet_reads`` reads in a row.

    Engine steps on the tiny model take a few ms, so 20 unchanged reads 10 ms apart
    mean nothing is being generated any more. Bounded by a number of reads.
    """
    last, still = -1.0, 0
    for _ in range(reads):
        value = await metric(server, "vllm:generation_tokens_total", http)
        still = still + 1 if value == last else 0
        if still >= quiet_reads:
            return
        last = value
        await trio.sleep(0.01)
    raise AssertionError(f"the server was still generating after {reads} reads")


def established_connections(port: int) -> int:
    """ESTABLISHED TCP connections from this process to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


# -- 1. round trip -------------------------------------------------------------------


async def test_round_trip_numpy_prompt_echo_and_usage(
    transport: str, vllm_server: VLLMServer, prompt: np.ndarray[Any, np.dtype[np.int32]]
) -> None:
    async with (
        client_for(vllm_server, transport=transport) as client,
        client.stream(
            prompt,
            max_tokens=12,
            temperature=0.0,
            top_p=1.0,
            request_id="live-round-trip",
            extra_body={"ignore_eos": True},
        ) as events,
    ):
        tokens, terminal = await collect(events)
    done = expect_done(terminal)
    assert done.prompt_token_ids is not None
    assert done.prompt_token_ids.dtype == np.int32
    assert np.array_equal(done.prompt_token_ids, prompt)
    ids = [t.id for t in tokens]
    assert len(ids) == 12 and done.finish_reason == "length"
    assert done.token_ids.tolist() == ids
    assert done.usage is not None
    assert done.usage.prompt_tokens == len(prompt)
    assert done.usage.completion_tokens == len(ids)
    assert done.usage.total_tokens == len(prompt) + len(ids)
    assert done.text == "".join(t.text for t in tokens)


# -- 2. exact forced IDs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "markers"),
    [
        (HERMES_REPLY, [THINK_ID, THINK_END_ID, TOOL_CALL_ID, TOOL_CALL_END_ID]),
        (CODER_REPLY, [TOOL_CALL_ID, TOOL_CALL_END_ID]),
        (UTF8_REPLY, []),
    ],
    ids=["hermes", "qwen3-coder", "utf8"],
)
async def test_forced_ids_stream_exactly(
    transport: str,
    vllm_server: VLLMServer,
    tok: Tokenizer,
    prompt: np.ndarray[Any, np.dtype[np.int32]],
    reply: str,
    markers: list[int],
) -> None:
    forced = encode(tok, reply)
    assert all(m in forced for m in markers)  # the markers are single IDs
    async with (
        client_for(vllm_server, transport=transport) as client,
        client.stream(
            prompt,
            max_tokens=len(forced) + 8,
            temperature=0.0,
            top_p=1.0,
            extra_body=forcing_body(forced),
        ) as events,
    ):
        tokens, terminal = await collect(events)
    done = expect_done(terminal)
    assert [t.id for t in tokens] == [*forced, IM_END_ID]
    assert done.token_ids.tolist() == [*forced, IM_END_ID]
    assert (done.finish_reason, done.stop_reason) == ("stop", None)
    expected_text = tok.decode(forced, skip_special_tokens=False)
    assert expected_text == reply
    assert "".join(t.text for t in tokens) == expected_text
    assert done.text == expected_text
    assert tokens[-1].text == ""  # the EOS chunk carries no text
    if reply is UTF8_REPLY:
        # Byte-piece tokens are held back until their character completes.
        held_back = [t for t in tokens[:-1] if t.text == ""]
        assert held_back, "expected UTF-8 hold-back chunks with empty text"


# -- 3. merged chunks ----------------------------------------------------------------


async def test_merged_chunks_deliver_every_id_once_in_order(
    transport: str,
    vllm_server_serial: VLLMServer,
    tok: Tokenizer,
    prompt: np.ndarray[Any, np.dtype[np.int32]],
) -> None:
    # vLLM merges pending deltas into one chunk when the reader falls behind. Stall
    # reading after the first event while ~23 KB chunks (1000 top logprobs each,
    # ~7 MB in all) fill the socket buffers, so the server's writer blocks and
    # deltas pile up.
    base = encode(tok, "The quick brown fox jumps over the lazy dog. 日本語 🫠 ")
    forced = (base * (300 // len(base) + 1))[:300]
    # With httpx, a small receive buffer makes the server block sooner; the trio
    # transport leaves the kernel's, which does not grow while nothing is read.
    chosen: Any = transport
    if transport == "httpx":
        chosen = httpx.AsyncHTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)]
        )
    async with client_for(vllm_server_serial, transport=chosen, max_event_size=1 << 28) as c:
        stream = c.stream(
            prompt,
            max_tokens=len(forced) + 4,
            temperature=0.0,
            logprobs=1000,
            extra_body={**forcing_body(forced), "return_tokens_as_token_ids": True},
        )
        async with stream as events, metrics_http() as http:
            first = await events.__anext__()
            # Fall behind on purpose: read nothing more until the engine has
            # generated every token, however fast or slow this machine is.
            with trio.fail_after(300):  # a hang guard, not a timing assertion
                while True:
                    if await metric(vllm_server_serial, "vllm:num_requests_running", http) == 0:
                        break
                    await trio.sleep(0.1)
            tokens, terminal = await collect(events)
    assert isinstance(first, Token)
    tokens.insert(0, first)
    done = expect_done(terminal)
    ids = [t.id for t in tokens]
    assert ids == [*forced, IM_END_ID]
    assert done.token_ids.tolist() == ids
    assert done.usage is not None and done.usage.completion_tokens == len(ids)
    assert done.logprobs is not None and len(done.logprobs) == len(ids)
    # The premise: far fewer SSE events than tokens, so chunks did carry many IDs.
    assert done.diagnostics.sse_events < len(ids) // 2, done.diagnostics.describe()
    assert "".join(t.text for t in tokens) == tok.decode(forced, skip_special_tokens=False)


# -- 4. priority ---------------------------------------------------------------------

PRIORITY_ATTEMPTS = 3


async def test_lower_priority_value_queued_later_runs_first(
    transport: str, vllm_server_serial: VLLMServer, prompt: np.ndarray[Any, np.dtype[np.int32]]
) -> None:
    """With one slot busy, C (priority 0) queued after B (priority 10) runs first.

    The premise is that a blocker A holds the only slot (``--max-num-seqs 1``)
    until B and C are both queued. A is as long as the context allows, but on a
    loaded machine it can still end first (once in CI, 3000 tokens of A ran out
    before a ``/metrics`` poll saw B waiting). Then the scenario has not happened, so it
    is run again from the start, up to :data:`PRIORITY_ATTEMPTS` times; the order
    assertion itself is never relaxed.
    """
    server = vllm_server_serial
    greedy: dict[str, Any] = {"max_tokens": 4, "temperature": 0.0}
    blocker_tokens = 4096 - len(prompt)  # the whole context (--max-model-len 4096)

    async def waiting(http: httpx.AsyncClient) -> float | None:
        with trio.move_on_after(5):  # a stalled poll is retried, not waited out
            return await metric(server, "vllm:num_requests_waiting", http)
        return None

    async def attempt(
        index: int,
    ) -> tuple[list[str], dict[str, Done | Error]] | None:
        """One run of the scenario; ``None`` if A ended before B and C were queued."""
        first_token_order: list[str] = []
        terminals: dict[str, Done | Error] = {}
        a_running = trio.Event()

        async def run(name: str, priority: int, **fields: Any) -> None:
            async with client.stream(
                prompt,
                priority=priority,
                request_id=f"live-priority-{index}-{name}",
                extra_body={"ignore_eos": True},
                **fields,
            ) as events:
                async for event in events:
                    if isinstance(event, Token) and name not in first_token_order:
                        first_token_order.append(name)
                        if name == "A":
                            a_running.set()
                    elif not isinstance(event, Token):
                        terminals[name] = event

        async def queued(count: int) -> bool:
            """Wait until ``count`` requests wait; False if the blocker ended first."""
            with trio.fail_after(120):  # a hang guard, not a timing assertion
                while await waiting(http) != count:
                    if "A" in terminals:
                        return False
                    await trio.sleep(0.02)
            return "A" not in terminals

        async with client_for(server, transport=transport) as client, metrics_http() as http:
            async with trio.open_nursery() as nursery:
                blocker = trio.CancelScope()

                async def run_blocker() -> None:
                    # top_p < 1 makes each step slow (~30 ms here), so A holds the
                    # only slot for a long time, even on a loaded machine.
                    with blocker:
                        await run("A", 10, max_tokens=blocker_tokens, temperature=1.0, top_p=0.5)

                nursery.start_soon(run_blocker)
                await a_running.wait()
                nursery.start_soon(functools.partial(run, "B", 10, **greedy))
                premise = await queued(1)
                if premise:
                    nursery.start_soon(functools.partial(run, "C", 0, **greedy))
                    premise = await queued(2)
                blocker.cancel()  # free the slot: the scheduler now picks by priority
            # Nothing is left behind on the server for the next attempt or test.
            with trio.fail_after(120):  # a hang guard, not a timing assertion
                while True:
                    if await metric(server, "vllm:num_requests_running", http) == 0:
                        break
                    await trio.sleep(0.05)
        return (first_token_order, terminals) if premise else None

    for index in range(PRIORITY_ATTEMPTS):
        outcome = await attempt(index)
        if outcome is not None:
            break
    else:
        pytest.fail(
            f"the blocker ended before B and C were queued, {PRIORITY_ATTEMPTS} times: "
            "this machine is too loaded to set up the priority scenario"
        )
    first_token_order, terminals = outcome
    assert first_token_order == ["A", "C", "B"]
    for name in ("B", "C"):
        done = expect_done(terminals[name])
        assert len(done.token_ids) == 4


# -- 5. cancellation -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["async-with", "nursery"])
async def test_cancel_aborts_the_request_on_the_server(
    transport: str, vllm_server: VLLMServer, prompt: np.ndarray[Any, np.dtype[np.int32]], form: str
) -> None:
    server = vllm_server
    fields: dict[str, Any] = {
        "max_tokens": 3000,
        "temperature": 0.0,
        "extra_body": {"ignore_eos": True},
    }
    async with client_for(server, transport=transport) as client, metrics_http() as http:
        assert await metric(server, "vllm:num_requests_running", http) == 0
        generated_before = await metric(server, "vllm:generation_tokens_total", http)
        received = 0
        if form == "async-with":
            with trio.CancelScope() as scope:
                async with client.stream(prompt, **fields) as events:
                    async for event in events:
                        received += isinstance(event, Token)
                        if received == 5:
                            await wait_for_generation(server, generated_before, http)
                            assert established_connections(server.port) == 1
                            scope.cancel()
            assert scope.cancelled_caught
        else:
            async with trio.open_nursery() as nursery:
                channel = client.start_stream(nursery, prompt, **fields)
                async for event in channel:
                    received += isinstance(event, Token)
                    if received == 5:
                        await wait_for_generation(server, generated_before, http)
                        assert established_connections(server.port) == 1
                        nursery.cancel_scope.cancel()
                        break
        await wait_for_gauge(server, "vllm:num_requests_running", 0, http)
        await wait_until_generation_stops(server, http)
        # Proof of an abort rather than a natural end, with no clock: the request stopped
        # far short of the 3000 tokens that ignore_eos would otherwise have produced.
        # (How fast the abort lands is measured by `make bench`, not asserted here.)
        generated = await metric(server, "vllm:generation_tokens_total", http) - generated_before
        assert 5 <= generated < 3000
        assert received == 5
        stats = client.statistics()
        assert (stats.streams_open, stats.streams_abandoned) == (0, 1)
        assert established_connections(server.port) == 0


# -- 6. errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error_class", "status", "message"),
    [
        ("prompt-too-long", tokstream.BadRequestError, 400, "maximum context length is 4096"),
        ("unknown-model", tokstream.NotFoundError, 404, "`no-such-model` does not exist"),
        ("oov-token-id", tokstream.InBandError, None, "Token id 200000 is out of vocabulary"),
        ("bad-regex", tokstream.InBandError, None, "unclosed group"),
    ],
)
async def test_server_errors_map_to_the_right_class(
    transport: str,
    vllm_server: VLLMServer,
    prompt: np.ndarray[Any, np.dtype[np.int32]],
    case: str,
    error_class: type[tokstream.APIError],
    status: int | None,
    message: str,
) -> None:
    fields: dict[str, Any] = {"max_tokens": 4, "temperature": 0.0}
    request: Any = prompt
    if case == "prompt-too-long":
        request = np.full(5000, 9707, dtype=np.int32)
    elif case == "unknown-model":
        fields["model"] = "no-such-model"
    elif case == "oov-token-id":
        request = [9707, 200000]
    else:
        fields["extra_body"] = {"structured_outputs": {"regex": "(unclosed"}}
    async with (
        client_for(vllm_server, transport=transport) as client,
        client.stream(request, **fields) as events,
    ):
        tokens, terminal = await collect(events)
    assert tokens == []
    assert isinstance(terminal, Error), terminal
    assert type(terminal.error) is error_class, repr(terminal.error)
    assert message in terminal.error.server_message
    assert message in str(terminal.error)
    if status is None:
        assert not isinstance(terminal.error, tokstream.HTTPStatusError)
    else:
        assert isinstance(terminal.error, tokstream.HTTPStatusError)
        assert terminal.error.status_code == status


# -- 7. concurrency ------------------------------------------------------------------


async def test_sixteen_concurrent_streams_each_exact(
    transport: str,
    vllm_server: VLLMServer,
    tok: Tokenizer,
    prompt: np.ndarray[Any, np.dtype[np.int32]],
) -> None:
    # Each stream has its own prompt (checked through the echo) and its own forced
    # reply, several of the same length, so any crossed wires show up as wrong IDs.
    prompts = [
        np.concatenate([prompt, np.asarray(encode(tok, f"Request {i}: {'é' * i}🫠"), np.int32)])
        for i in range(16)
    ]
    replies = [
        f"<think>\nStream {i}.\n</think>\n\nThe answer is {i * 7919} ({'é' * (i % 3)}🫠)."
        for i in range(16)
    ]
    expected = [encode(tok, reply) for reply in replies]
    assert len({tuple(e) for e in expected}) == 16
    results: dict[int, tuple[list[Token], Done | Error]] = {}

    async def run(i: int) -> None:
        async with client.stream(
            prompts[i],
            max_tokens=len(expected[i]) + 4,
            temperature=0.0,
            request_id=f"live-concurrent-{i}",
            extra_body=forcing_body(expected[i]),
        ) as events:
            results[i] = await collect(events)

    async with client_for(vllm_server, transport=transport) as client:
        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(run, i)
        stats = client.statistics()
    assert sorted(results) == list(range(16))
    for i, (tokens, terminal) in results.items():
        done = expect_done(terminal)
        assert [t.id for t in tokens] == [*expected[i], IM_END_ID], f"stream {i}"
        assert done.token_ids.tolist() == [*expected[i], IM_END_ID]
        assert done.prompt_token_ids is not None
        assert np.array_equal(done.prompt_token_ids, prompts[i]), f"stream {i} echo"
        assert done.text == replies[i]
    assert (stats.streams_finished, stats.streams_failed, stats.streams_open) == (16, 0, 0)


# -- 8. server facts -----------------------------------------------------------------


async def test_models_and_health(transport: str, vllm_server: VLLMServer) -> None:
    async with client_for(vllm_server, transport=transport) as client:
        models = await client.models()
        assert [m.id for m in models] == ["tiny-qwen"]
        assert models[0].max_model_len == 4096
        assert await client.health() is True
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # bound, not listening
        async with tokstream.Client(
            nobody, model="tiny-qwen", timeouts=TIMEOUTS, transport=transport
        ) as client:
            assert await client.health() is False
