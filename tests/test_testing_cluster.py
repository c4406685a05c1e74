"""The kit's cluster tooling, with no vLLM: the real vllm-router in front of replay servers
(or the fake vLLM of ``test_testing_vllm``), ``VLLMCluster``'s process control, the CLI
and ``make cluster`` / ``make stop``.

vllm-router is a real binary here (``make router`` installs it; ``make test-fast`` does
that first). Replay servers stand in for vLLM, so what the router does to requests,
sessions and failures is pinned down exactly and in seconds, for the pinned
``vllm-router`` version (:data:`tokstream.testing._router.ROUTER_PACKAGE`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import tokstream
from tokstream import Done, Error
from tokstream.testing import (
    FAILOVER_ARGS,
    REPLICA_HEADER,
    ReplayServer,
    ServerStartError,
    VLLMCluster,
    VLLMRouter,
    parse_metrics,
)
from tokstream.testing._router import router_binary
from tokstream.testing._server import _MIDDLEWARE_SOURCE, _stat, process_family

from .test_testing_vllm import fake_venv  # noqa: F401  (a fixture: the fake vLLM venv)

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
PROMPT = [151644, 872, 198, 3838, 374, 279, 9104, 304, 12095, 30, 151645, 198, 151644, 77091, 198]


def _gone(family: dict[int, int]) -> bool:
    return all(
        (st := _stat(p)) is None or st[2] != start or st[3] == "Z" for p, start in family.items()
    )


@pytest.fixture
def router_home(vllm_home: Path, tmp_path: Path) -> Path:
    """A throwaway home whose ``router/`` is the real install (logs stay in ``tmp_path``)."""
    if not router_binary(vllm_home).is_file():
        pytest.fail(f"vllm-router is not installed in {vllm_home}; run `make router`")
    home = tmp_path / "home"
    home.mkdir()
    (home / "router").symlink_to(vllm_home / "router")
    return home


class Replicas:
    """Replay servers as a router's workers; ``kill(i)`` closes one's listener."""

    def __init__(self, servers: list[ReplayServer], scopes: list[trio.CancelScope]) -> None:
        self.servers, self.scopes = servers, scopes

    def posts(self, i: int) -> list[Any]:
        return [r for r in self.servers[i].requests if r.method == "POST"]

    def served_by(self, session: str) -> set[int]:
        return {
            i
            for i in range(len(self.servers))
            for r in self.posts(i)
            if r.headers.get("x-session-id") == session
        }

    def kill(self, i: int) -> None:
        self.scopes[i].cancel()


@asynccontextmanager
async def routed(
    home: Path, scenario: str = "replay=basic_stream", n: int = 2, **router_kwargs: Any
) -> AsyncIterator[tuple[VLLMRouter, Replicas]]:
    async with trio.open_nursery() as nursery:
        servers, scopes = [], []
        for _ in range(n):
            server, scope = ReplayServer(DATA), trio.CancelScope()

            async def serve(
                server: ReplayServer = server,
                scope: trio.CancelScope = scope,
                *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                with scope:
                    await server.serve(task_status=task_status)

            await nursery.start(serve)
            servers.append(server)
            scopes.append(scope)
        workers = [s.url(scenario).removesuffix("/v1") for s in servers]
        router = VLLMRouter(workers, home=home, startup_timeout=30, **router_kwargs)
        router.launch()  # from this thread; the wait runs in another, so the workers answer
        try:
            await trio.to_thread.run_sync(router.wait_ready)
            yield router, Replicas(servers, scopes)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(router.stop)
            nursery.cancel_scope.cancel()


def client(router: VLLMRouter, session: str | None = None, **options: Any) -> tokstream.Client:
    headers = {"x-session-id": session} if session else None
    return tokstream.Client(router.base_url, model="tiny-qwen", headers=headers, **options)


async def complete(router: VLLMRouter, session: str | None = None, **fields: Any) -> Done:
    async with client(router, session) as c:
        return await c.complete(PROMPT, max_tokens=32, **fields)


# -- what the router does to a request --------------------------------------------------


async def test_router_rebuilds_the_body_and_forwards_the_session_header(
    router_home: Path,
) -> None:
    async with routed(router_home, n=1) as (router, replicas):
        extra = {"structured_outputs": {"regex": "a+"}}
        await complete(router, "s-1", priority=5, request_id="r-1", extra_body=extra)
        (request,) = replicas.posts(0)
    sent = request.json()
    assert request.path == "/replay=basic_stream/v1/completions"
    assert request.headers["x-session-id"] == "s-1" and request.headers["x-request-id"] == "r-1"
    # tokstream's fields arrive unchanged, unknown ones (structured_outputs) too ...
    assert sent["prompt"] == PROMPT and sent["max_tokens"] == 32 and sent["priority"] == 5
    assert sent["return_token_ids"] is True and sent["skip_special_tokens"] is False
    assert sent["structured_outputs"] == {"regex": "a+"}
    # ... and the router adds its defaults.
    assert {k: sent[k] for k in ("echo", "ignore_eos", "no_stop_trim", "return_hidden_states")} == {
        "echo": False,
        "ignore_eos": False,
        "no_stop_trim": False,
        "return_hidden_states": False,
    }
    assert sent["stream_options"] == {"include_usage": True}


async def test_router_sets_skip_special_tokens_and_drops_continuous_usage_stats(
    router_home: Path,
) -> None:
    async with routed(router_home, n=1) as (router, replicas), httpx.AsyncClient() as http:
        body = {"model": "tiny-qwen", "prompt": PROMPT, "stream": True}
        usage = {"include_usage": True, "continuous_usage_stats": True}
        response = await http.post(
            router.base_url + "/completions", json={**body, "stream_options": usage}
        )
        assert response.status_code == 200
        sent = replicas.posts(0)[0].json()
        assert sent["skip_special_tokens"] is True  # true when absent: tokstream sends false
        assert sent["stream_options"] == {"include_usage": True}
        # A wrong type in a field the router knows: its own 422, as plain text.
        bad = await http.post(router.base_url + "/completions", json={**body, "max_tokens": "x"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/plain")
    assert "max_tokens" in bad.text
    assert len(replicas.posts(0)) == 1  # the bad request never reached the replica


async def test_a_stream_through_the_router_equals_the_direct_one(router_home: Path) -> None:
    async with routed(router_home, n=1) as (router, replicas):
        via_router = await complete(router, "s-1")
        async with tokstream.Client(replicas.servers[0].url("replay=basic_stream"), model="m") as c:
            direct = await c.complete(PROMPT, max_tokens=32)
    assert via_router.token_ids.tolist() == direct.token_ids.tolist()
    assert via_router.prompt_token_ids is not None and direct.prompt_token_ids is not None
    assert via_router.prompt_token_ids.tolist() == direct.prompt_token_ids.tolist() == PROMPT
    assert via_router.text == direct.text and via_router.usage == direct.usage
    assert via_router.request_id == direct.request_id  # the replica's completion ID


# -- sessions ---------------------------------------------------------------------------


async def test_one_session_lands_on_one_replica_and_sessions_spread(router_home: Path) -> None:
    async with routed(router_home) as (router, replicas):
        for _ in range(20):
            await complete(router, "one-conversation")
        assert len(replicas.served_by("one-conversation")) == 1
        for i in range(20):
            await complete(router, f"conversation-{i}")
        used = set().union(*(replicas.served_by(f"conversation-{i}") for i in range(20)))
    assert used == {0, 1}


async def test_the_session_header_wins_over_request_ids_but_request_ids_alone_spread(
    router_home: Path,
) -> None:
    # consistent_hash takes X-Session-ID before X-Request-Id: per-request IDs are safe
    # with a session key, and break affinity without one.
    async with routed(router_home) as (router, replicas):
        for i in range(20):
            await complete(router, "s", request_id=f"turn-{i}")
        assert len(replicas.served_by("s")) == 1
        before = [len(replicas.posts(i)) for i in range(2)]
        for i in range(20):
            await complete(router, None, request_id=f"turn-{i}")
        after = [len(replicas.posts(i)) for i in range(2)]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


# -- failover ---------------------------------------------------------------------------


async def _sessions_on(router: VLLMRouter, replicas: Replicas, index: int) -> list[str]:
    sessions = []
    for i in range(30):
        await complete(router, f"probe-{i}")
        if replicas.served_by(f"probe-{i}") == {index}:
            sessions.append(f"probe-{i}")
    assert sessions, "no probe session hashed to the replica"
    return sessions


async def test_with_failover_args_the_first_request_after_a_death_succeeds(
    router_home: Path,
) -> None:
    async with routed(router_home) as (router, replicas):
        sessions = await _sessions_on(router, replicas, 0)
        replicas.kill(0)
        served_before = len(replicas.posts(1))
        for session in sessions[:3]:
            done = await complete(router, session)
            assert done.token_ids.size == 32
        assert len(replicas.posts(1)) == served_before + 3
        cb = router.metrics()
    assert cb["vllm_router_cb_state"] >= 1  # the dead replica's circuit is open


async def test_with_default_circuit_settings_the_first_requests_get_http_500(
    router_home: Path,
) -> None:
    # The contrast that motivates FAILOVER_ARGS: 10 failures to open the circuit,
    # 6 attempts per request, so each of the first two requests fails. (The
    # client's own RetryPolicy would retry a 500; it is off here, to see the router.)
    async with routed(router_home, failover_args=()) as (router, replicas):
        sessions = await _sessions_on(router, replicas, 0)
        replicas.kill(0)
        outcomes = []
        for session in sessions[:4]:
            async with (
                client(router, session, retry=None) as c,
                c.stream(PROMPT, max_tokens=32) as events,
            ):
                async for event in events:
                    if isinstance(event, Done | Error):
                        outcomes.append(event)
    assert [type(o).__name__ for o in outcomes] == ["Error", "Error", "Done", "Done"]
    for failed in outcomes[:2]:
        assert isinstance(failed, Error)
        assert isinstance(failed.error, tokstream.InternalServerError)
        assert "error sending request" in str(failed.error)


def test_failover_args_are_the_documented_ones() -> None:
    assert FAILOVER_ARGS == ("--cb-failure-threshold", "2")


# -- the router process -----------------------------------------------------------------


def test_router_that_cannot_reach_its_workers_fails_and_is_stopped(router_home: Path) -> None:
    router = VLLMRouter(["http://127.0.0.1:9"], home=router_home, startup_timeout=3)
    router.launch()
    pid = router.pid
    with pytest.raises(ServerStartError, match="not healthy within 3 s") as info:
        router.wait_ready()
    assert info.value.log_path == router.log_path
    assert not router.is_running() and process_family(pid) == {}


def test_router_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="install-router"):
        VLLMRouter(["http://127.0.0.1:9"], home=tmp_path).start()


# -- the replica tag and the metrics parser ---------------------------------------------


def test_replica_middleware_adds_the_header_and_passes_bodies_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKSTREAM_REPLICA_TAG", "3")
    namespace: dict[str, Any] = {}
    exec(compile(_MIDDLEWARE_SOURCE, "tokstream_replica_tag.py", "exec"), namespace)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]})
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": False})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        await namespace["ReplicaTag"](app)({"type": "http"}, None, send)

    trio.run(main)
    assert sent[0]["headers"] == [(b"a", b"1"), (REPLICA_HEADER.encode(), b"3")]
    assert sent[1] == {"type": "http.response.body", "body": b"data: x\n\n", "more_body": False}


def test_parse_metrics_sums_labels_and_skips_comments() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="tiny-qwen"} 1.0\n'
        'vllm:num_requests_running{engine="1",model_name="tiny-qwen"} 2.0\n'
        "vllm:prefix_cache_hits_total 512.0\n"
    )
    assert parse_metrics(text) == {
        "vllm:num_requests_running": 3.0,
        "vllm:prefix_cache_hits_total": 512.0,
    }


# -- VLLMCluster, the CLI and make, over the fake vLLM ------------------------------------


@pytest.fixture
def fake_home(fake_venv: Path, vllm_home: Path) -> Path:  # noqa: F811
    """``fake_venv``'s home (a fake vLLM that answers /health) with the real router."""
    if not router_binary(vllm_home).is_file():
        pytest.fail(f"vllm-router is not installed in {vllm_home}; run `make router`")
    home = fake_venv.parent
    (home / "router").symlink_to(vllm_home / "router")
    return home


def _families(pids: dict[str, int]) -> dict[int, int]:
    family: dict[int, int] = {}
    for pid in pids.values():
        family.update(process_family(pid))
    return family


def test_cluster_starts_kills_one_and_stops_the_rest(fake_home: Path) -> None:
    cluster = VLLMCluster(3, home=fake_home, log_dir=fake_home / "logs", startup_timeout=30)
    with cluster:
        pids = cluster.pids
        assert set(pids) == {"router", "backend-0", "backend-1", "backend-2"}
        assert cluster.base_url == f"http://127.0.0.1:{cluster.router.port}/v1"
        assert cluster.router.worker_urls == tuple(b.root_url for b in cluster.backends)
        workers = cluster.router.workers()
        assert sorted(w["url"] for w in workers) == sorted(cluster.router.worker_urls)
        assert [b.tag for b in cluster.backends] == ["0", "1", "2"]
        assert "--middleware" in cluster.backends[0].command(cluster.backends[0].port)
        family = _families(pids)
        one = process_family(pids["backend-1"])
        killed = cluster.kill_backend(1)
        assert set(killed) == set(one) and _gone(one)
        assert cluster.is_running() and "backend-1" not in cluster.pids
        cluster.stop(timeout=1)  # the fake's stubborn children ignore SIGTERM
    assert _gone(family) and not cluster.pids
    assert (fake_home / "logs" / "router.log").is_file()
    assert (fake_home / "logs" / "backend-2.log").is_file()


def test_cluster_start_failure_stops_everything(
    fake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "exit")
    cluster = VLLMCluster(2, home=fake_home, startup_timeout=30)
    with pytest.raises(ServerStartError, match="exited with status 3"):
        cluster.start()
    assert not cluster.is_running()
    assert not any(b.is_running() for b in cluster.backends)


def test_cluster_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        VLLMCluster(0)
    with pytest.raises(ValueError, match=r"names replicas \[2\]"):
        VLLMCluster(2, per_backend_args={2: ("--max-num-seqs", "1")})


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokstream.testing", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKSTREAM_VLLM_HOME": str(home)},
        timeout=120,
        check=check,
    )


def _cluster_lines(stdout: str) -> dict[str, tuple[str, int]]:
    out = {}
    for line in stdout.strip().splitlines():
        name, url, label, pid = line.split()
        assert label == "PID", line
        out[name] = (url, int(pid))
    return out


def test_cli_cluster_status_and_stop_by_router_pid(fake_home: Path) -> None:
    started = _cli(fake_home, "cluster", "-n", "2", "--timeout", "30")
    lines = _cluster_lines(started.stdout)
    assert list(lines) == ["router", "backend-0", "backend-1"]
    router_pid = lines["router"][1]
    family = _families({k: v[1] for k, v in lines.items()})
    try:
        status = _cli(fake_home, "status").stdout
        assert f"cluster: router PID {router_pid} {lines['router'][0]} healthy" in status
        assert f"replica 1 PID {lines['backend-1'][1]} {lines['backend-1'][0]} healthy" in status
        assert (fake_home / "clusters" / f"{router_pid}.json").is_file()
    finally:
        stopped = _cli(fake_home, "stop", str(router_pid), "--timeout", "1", check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped router {router_pid}" in stopped.stderr
    assert _gone(family)
    assert not (fake_home / "clusters" / f"{router_pid}.json").exists()


def test_cli_stop_without_a_pid_asks_for_one(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "stop", check=False)
    assert proc.returncode == 2 and "--all" in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_cluster_then_make_stop_leaves_nothing(fake_home: Path) -> None:
    # `make cluster` returns with everything running; `make stop` (no PID) stops the
    # cluster and a `make serve` server alike, by PID, with every child and orphan.
    env = {**os.environ, "TOKSTREAM_VLLM_HOME": str(fake_home)}
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-o", "venv", "-o", "vllm"]
    make += ["-o", "router"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*make, *args], capture_output=True, text=True, env=env, timeout=120)

    made = run("cluster", "N=3")
    served = run("serve")
    try:
        assert made.returncode == 0, made.stdout + made.stderr
        assert served.returncode == 0, served.stdout + served.stderr
        lines = [line.removeprefix("cluster: ") for line in made.stdout.splitlines()]
        procs = _cluster_lines("\n".join(line for line in lines if " PID " in line[:60]))
        assert list(procs) == ["router", "backend-0", "backend-1", "backend-2"]
        assert f"make stop PID={procs['router'][1]}" in made.stdout
        server_pid = int(served.stdout.split(" PID ")[1].split()[0])
        family = _families({k: v[1] for k, v in procs.items()} | {"server": server_pid})
        assert len(family) >= 4 * 3  # each fake vLLM: leader, stubborn child, orphan
    finally:
        stopped = run("stop", "TIMEOUT=1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _gone(family)
    assert not list((fake_home / "clusters").glob("*.json"))
    assert not list((fake_home / "servers").glob("*.json"))
    assert "nothing left" in stopped.stderr


def test_the_cluster_fixture_fails_and_never_skips_when_it_cannot_start(tmp_path: Path) -> None:
    # A user's project whose kit home has no vLLM: the test errors with the reason.
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tokstream.testing.pytest_plugin"]\n')
    (tmp_path / "test_user.py").write_text(
        "def test_routed(vllm_cluster):\n    raise AssertionError('unreachable')\n"
    )
    home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "TOKSTREAM_VLLM_HOME": str(home)},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
    assert "the live VLLMCluster could not start (try `make vllm router`)" in proc.stdout
    assert "no vLLM venv in" in proc.stdout
