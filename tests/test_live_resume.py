"""Resume after a drop, against the live CPU vLLM (issue 10, section 3).

A proxy in front of the server cuts the first response mid-way (after a few
SSE events); every later connection passes through. With
``RetryPolicy(resume=True)`` the client sends the prompt plus the IDs it
received, with ``max_tokens`` reduced by their number, and splices the
continuation on:

* greedy: the spliced stream is exactly the uninterrupted one (IDs, text,
  usage), with one ``Done`` and one unbroken run of ``Token`` events;
* seeded: the result is what the continuation request gives when sent by hand,
  and the same drop gives the same IDs again (reproducible).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pytest
import trio

import tokstream
from tokstream import Done, Error, RetryPolicy, Token
from tokstream.testing import VLLMServer

pytestmark = pytest.mark.vllm

PROMPT = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
TIMEOUTS = tokstream.Timeouts(connect=5.0, stall=60.0)
MAX_TOKENS = 24
CUT_AT_EVENT = 7  # the 7th SSE event (6 token events arrived, the prompt echo on the first)


class FirstDropProxy:
    """A TCP proxy to the server that cuts the first ``drops`` responses at their Nth SSE event."""

    def __init__(self, target: str, cut_at_event: int, drops: int = 1) -> None:
        url = urlsplit(target)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.path = url.path
        self.cut_at_event = cut_at_event
        self.drops = drops
        self.listen_port = 0
        self.connections = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}{self.path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.listen_port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        cut = self.drops > 0
        self.drops -= 1
        upstream = await trio.open_tcp_stream(self.host, self.port)
        async with downstream, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                while data := await downstream.receive_some(65536):
                    await upstream.send_all(data)

            nursery.start_soon(requests)
            seen = 0
            while data := await upstream.receive_some(65536):
                start = 0
                while cut and (i := data.find(b"data: ", start)) >= 0:
                    seen += 1
                    if seen == self.cut_at_event:
                        await downstream.send_all(data[:i])
                        nursery.cancel_scope.cancel()
                        return
                    start = i + 1
                await downstream.send_all(data)
            nursery.cancel_scope.cancel()


async def through_proxy(
    server: VLLMServer, **fields: object
) -> tuple[list[tokstream.Event], FirstDropProxy]:
    proxy = FirstDropProxy(server.base_url, CUT_AT_EVENT)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with tokstream.Client(
            proxy.base_url,
            model=server.model,
            timeouts=TIMEOUTS,
            retry=RetryPolicy(resume=True),
            failed_requests=False,
        ) as client:
            async with client.stream(PROMPT, **fields) as stream:
                events = [event async for event in stream]
        nursery.cancel_scope.cancel()
    return events, proxy


def spliced_done(events: list[tokstream.Event]) -> Done:
    done = events[-1]
    assert isinstance(done, Done), done
    assert sum(isinstance(e, (Done, Error)) for e in events) == 1
    # One unbroken run of tokens: each ID once, in order, and their text.
    tokens = [e for e in events if isinstance(e, Token)]
    assert [t.id for t in tokens] == done.token_ids.tolist()
    assert "".join(t.text for t in tokens) == done.text
    (k,) = done.splices
    assert 0 < k < MAX_TOKENS
    assert [(a.number, a.error, a.tokens) for a in done.attempts] == [
        (1, "RemoteDisconnected", k),
        (2, None, MAX_TOKENS - k),
    ]
    assert done.prompt_token_ids is not None and done.prompt_token_ids.tolist() == PROMPT
    return done


async def test_a_greedy_stream_dropped_mid_way_resumes_exactly(vllm_server: VLLMServer) -> None:
    fields = {
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "logprobs": 0,
        "extra_body": {"ignore_eos": True},
    }
    async with tokstream.Client(
        vllm_server.base_url, model=vllm_server.model, timeouts=TIMEOUTS
    ) as client:
        reference = await client.complete(PROMPT, **fields)
    events, proxy = await through_proxy(vllm_server, **fields)
    done = spliced_done(events)
    assert proxy.connections == 2
    assert done.token_ids.tolist() == reference.token_ids.tolist()
    assert done.text == reference.text
    assert done.finish_reason == reference.finish_reason == "length"
    assert done.usage == reference.usage
    # The continuation's log-probabilities are computed on the same prefix.
    assert done.logprobs is not None and reference.logprobs is not None
    assert len(done.logprobs) == MAX_TOKENS
    np.testing.assert_allclose(done.logprobs, reference.logprobs, rtol=1e-3, atol=1e-3)


async def test_a_seeded_stream_dropped_mid_way_resumes_reproducibly(
    vllm_server: VLLMServer,
) -> None:
    fields = {
        "max_tokens": MAX_TOKENS,
        "temperature": 1.0,
        "seed": 1234,
        "extra_body": {"ignore_eos": True},
    }
    first, _ = await through_proxy(vllm_server, **fields)
    again, _ = await through_proxy(vllm_server, **fields)
    done = spliced_done(first)
    (k,) = done.splices
    assert spliced_done(again).token_ids.tolist() == done.token_ids.tolist()
    ids = done.token_ids.tolist()
    async with tokstream.Client(
        vllm_server.base_url, model=vllm_server.model, timeouts=TIMEOUTS
    ) as client:
        # Before the splice: the seeded stream's own start.
        whole = await client.complete(PROMPT, **fields)
        assert whole.token_ids.tolist()[:k] == ids[:k]
        # After it: exactly what the continuation request gives.
        rest = await client.complete(
            [*PROMPT, *ids[:k]], **{**fields, "max_tokens": MAX_TOKENS - k}
        )
    assert rest.token_ids.tolist() == ids[k:]
