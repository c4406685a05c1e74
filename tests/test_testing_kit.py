"""The public testing kit: its namespace, its import isolation, the replay server
as a user would run it (own recordings, ``open_replay_server``) and the pytest plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import tokstream
import tokstream.testing
from tokstream import Done, Token
from tokstream.testing import open_replay_server

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def test_all_matches_public_names_sorted_and_documented() -> None:
    kit = tokstream.testing
    public = {
        name
        for name in vars(kit)
        if not name.startswith("_") and not isinstance(getattr(kit, name), type(kit))
    }
    assert set(kit.__all__) == public - {"annotations"}
    assert list(kit.__all__) == sorted(kit.__all__)
    for name in kit.__all__:
        obj = getattr(kit, name)
        if callable(obj):
            assert obj.__doc__, name
            assert obj.__module__.startswith("tokstream.testing._"), name
    for heading in ("Install", "Start a server", "Many servers", "Force exact", "Replay", "pytest"):
        assert heading in (kit.__doc__ or ""), heading


def test_import_tokstream_does_not_import_the_kit() -> None:
    code = (
        "import sys, tokstream, tokstream.core; "
        "assert 'tokstream.testing' not in sys.modules, 'tokstream imported its testing kit'; "
        "import tokstream.testing; "
        "leaked = sorted(m for m in ('pytest', 'tiktoken', 'tokenizers', 'jinja2') "
        "if m in sys.modules); "
        "assert not leaked, f'tokstream.testing imported {leaked}'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _events(name: str) -> list[dict[str, object]]:
    body = (DATA / f"{name}.sse").read_text()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]


async def test_replay_serves_the_users_own_recordings(tmp_path: Path) -> None:
    # A user's layout: any directory, any names; errors/NAME.body for error bodies.
    shutil.copy(DATA / "forced_hermes.sse", tmp_path / "my_agent_turn.sse")
    (tmp_path / "errors").mkdir()
    shutil.copy(DATA / "errors" / "prompt_too_long.body", tmp_path / "errors" / "too_long.body")
    chunks = _events("forced_hermes")
    want = [i for c in chunks for ch in c["choices"] for i in ch["token_ids"]]  # type: ignore[attr-defined]
    async with open_replay_server(tmp_path) as server:
        async with tokstream.Client(server.url("replay=my_agent_turn"), model="m") as client:
            async with client.stream([1, 2, 3], max_tokens=64) as events:
                got = [ev async for ev in events]
        async with tokstream.Client(server.url("status=400,too_long"), model="m") as client:
            async with client.stream([1, 2, 3], max_tokens=4) as events:
                failed = [ev async for ev in events]
        assert [r.path for r in server.requests] == [
            "/replay=my_agent_turn/v1/completions",
            "/status=400,too_long/v1/completions",
        ]
        assert server.requests[0].json()["prompt"] == [1, 2, 3]
    assert [ev.id for ev in got if isinstance(ev, Token)] == want
    assert isinstance(got[-1], Done)
    assert isinstance(failed[-1], tokstream.Error)
    assert isinstance(failed[-1].error, tokstream.BadRequestError)


async def test_replay_fails_loudly_on_a_missing_recording(tmp_path: Path) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with open_replay_server(tmp_path) as server:
            async with tokstream.Client(server.url("replay=nope"), model="m") as client:
                async with client.stream([1], max_tokens=4) as events:
                    async for _ in events:
                        pass
            await trio.sleep_forever()  # the server's failure cancels this
    assert info.group_contains(LookupError, match=r"no recording .*nope\.sse")


def test_the_pytest_plugin_as_a_user_enables_it(tmp_path: Path) -> None:
    # A fresh project: the plugin from pytest_plugins, recordings by fixture override,
    # the vllm marker registered (--strict-markers), tiny_model_dir under <home>.
    (tmp_path / "recordings").mkdir()
    shutil.copy(DATA / "basic_stream.sse", tmp_path / "recordings" / "hello.sse")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            import pytest

            pytest_plugins = ["tokstream.testing.pytest_plugin"]

            @pytest.fixture
            def replay_recordings():
                return Path(__file__).parent / "recordings"
            """
        )
    )
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest
            import tokstream

            @pytest.mark.trio
            async def test_replayed(replay_server):
                url = replay_server.url("replay=hello")
                async with tokstream.Client(url, model="m") as client:
                    async with client.stream([1], max_tokens=32) as events:
                        kinds = [type(ev).__name__ async for ev in events]
                assert kinds[-1] == "Done" and kinds.count("Token") == 32

            def test_model_dir(tiny_model_dir, vllm_home):
                assert tiny_model_dir == vllm_home / "tiny-qwen"
                assert (tiny_model_dir / "tokenizer.json").is_file()

            @pytest.mark.vllm
            def test_live(vllm_server):
                raise AssertionError("deselected by -m 'not vllm'")
            """
        )
    )
    home = os.environ.get("TOKSTREAM_VLLM_HOME") or str(ROOT / ".vllm")
    args = ["-m", "not vllm", "-W", "error::pytest.PytestAssertRewriteWarning"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "TOKSTREAM_VLLM_HOME": home},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 1 deselected" in proc.stdout, proc.stdout
