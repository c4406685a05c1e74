"""Failed requests against the live CPU vLLM: saved, then replayed with ``tokstream replay``.

* An out-of-vocabulary prompt ID fails inside the stream; the record replays to
  the same failure, then succeeds once ``--prompt-ids`` corrects the prompt.
* A greedy (and a seeded) stream dropped mid-way by a proxy is saved with the
  tokens that arrived; replaying it against the server reproduces them
  ("identical prefix of N tokens").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

import tokstream
from tokstream import Error, FailedRequest, Token
from tokstream.testing import VLLMServer

pytestmark = pytest.mark.vllm

PROMPT = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]
TIMEOUTS = tokstream.Timeouts(connect=5.0, stall=60.0)


async def cli(*args: str, store: Path) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "tokstream", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "TOKSTREAM_FAILED_DIR": str(store)},
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def stream_error(client: tokstream.Client, prompt: list[int], **fields: object) -> Error:
    async with client.stream(prompt, **fields) as events:
        got = [event async for event in events]
    assert isinstance(got[-1], Error), got[-1]
    assert [e.id for e in got if isinstance(e, Token)] == got[-1].token_ids.tolist()
    return got[-1]


async def test_an_out_of_vocabulary_request_is_saved_and_replays_once_corrected(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    bad = [*PROMPT[:3], 200000, *PROMPT[3:]]
    async with tokstream.Client(
        vllm_server.base_url, model=vllm_server.model, timeouts=TIMEOUTS, failed_requests=tmp_path
    ) as client:
        err = await stream_error(client, bad, max_tokens=8, temperature=0.0)
    assert isinstance(err.error, tokstream.InBandError)
    assert "200000" in err.error.server_message
    assert err.saved_to is not None
    record = FailedRequest.load(err.saved_to)
    assert record.prompt.tolist() == bad and record.error.class_name == "InBandError"

    # As saved, it fails again, in the same way.
    code, out, err_text = await cli(
        "replay", str(err.saved_to), "--base-url", vllm_server.base_url, store=tmp_path / "again"
    )
    assert code == 4, err_text
    assert err_text.startswith("tokstream: the replay failed: InBandError: ")

    # With the prompt corrected, it succeeds.
    fixed = tmp_path / "prompt.json"
    fixed.write_text(str(PROMPT))
    code, out, err_text = await cli(
        "replay",
        str(err.saved_to),
        "--base-url",
        vllm_server.base_url,
        "--prompt-ids",
        str(fixed),
        "--ids",
        store=tmp_path / "again",
    )
    assert code == 0, err_text
    lines = out.splitlines()
    rows = lines[1:-1]  # between the "replaying" line and the comparison: one row per token
    assert [int(row.split()[0]) for row in rows] == list(range(1, 9))
    assert err_text.startswith("done: 8 tokens · finish length · ttft ")
    assert err_text.strip().endswith(" · prompt echo verified")  # the corrected prompt
    assert lines[-1].endswith("the saved request had received no tokens; nothing to compare")


class DroppingProxy:
    """A TCP proxy to the server that drops the connection at the response's Nth SSE event."""

    def __init__(self, target: str, cut_at_event: int) -> None:
        url = urlsplit(target)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.path = url.path
        self.cut_at_event = cut_at_event
        self.listen_port = 0
        self.cuts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}{self.path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.listen_port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(self.host, self.port)
        async with downstream, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                while data := await downstream.receive_some(65536):
                    await upstream.send_all(data)

            nursery.start_soon(requests)
            seen = 0
            while data := await upstream.receive_some(65536):
                start = 0
                while (i := data.find(b"data: ", start)) >= 0:
                    seen += 1
                    if seen == self.cut_at_event:
                        await downstream.send_all(data[:i])
                        self.cuts += 1
                        nursery.cancel_scope.cancel()
                        return
                    start = i + 1
                await downstream.send_all(data)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0.0}, {"temperature": 1.0, "seed": 1234}],
    ids=["greedy", "seeded"],
)
async def test_a_dropped_stream_replays_to_an_identical_prefix(
    vllm_server: VLLMServer, tmp_path: Path, sampling: dict[str, object]
) -> None:
    proxy = DroppingProxy(vllm_server.base_url, cut_at_event=7)
    fields = {"max_tokens": 24, "extra_body": {"ignore_eos": True}, **sampling}
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with tokstream.Client(
            proxy.base_url, model=vllm_server.model, timeouts=TIMEOUTS, failed_requests=tmp_path
        ) as client:
            err = await stream_error(client, PROMPT, **fields)
        nursery.cancel_scope.cancel()
    assert proxy.cuts == 1
    assert isinstance(err.error, tokstream.RemoteDisconnected)
    saved = err.token_ids.size
    assert 0 < saved < 24
    assert err.saved_to is not None

    code, out, err_text = await cli(
        "replay", str(err.saved_to), "--base-url", vllm_server.base_url, store=tmp_path / "again"
    )
    assert code == 0, err_text
    lines = out.splitlines()
    assert err_text.startswith("done: 24 tokens · finish length · ttft ")
    assert err_text.strip().endswith(" · prompt echo verified")
    assert lines[-1] == (
        f"compared with the saved output: identical prefix of {saved} tokens "
        f"(the replay went on for {24 - saved} more)"
    )

    # From Python, the same: the replay reproduces the saved IDs.
    record = FailedRequest.load(err.saved_to)
    async with tokstream.Client(
        vllm_server.base_url, model=vllm_server.model, timeouts=TIMEOUTS
    ) as client:
        done = await client.complete(record.request())
    assert record.compare(done.token_ids).reproduced
