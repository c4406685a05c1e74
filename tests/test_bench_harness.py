"""The benchmark harness (``tests/bench/bench_streams.py``) runs and counts right.

It runs every scenario at the ``tiny`` scale (a few streams, a few thousand
tokens, one run each, no live server) in a temporary output directory, then
checks the report's structure and the figures that must hold on any machine:
every scenario is there, every token served was counted, every stream
completed. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tests" / "bench" / "bench_streams.py"
PEERS_INSTALLED = all(importlib.util.find_spec(m) for m in ("openai", "httpx_sse"))


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    """Run the harness at the tiny scale into ``out``; return results.json (+ text)."""
    command = [sys.executable, str(BENCH), "--scale", "tiny", "--out-dir", str(out), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    data["markdown"] = (out / "results.md").read_text()
    data["stdout"] = proc.stdout
    return data


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    return run_bench(tmp_path_factory.mktemp("bench"), "--tokenizer", str(tiny_model_dir))


def rows(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return results["raw"][scenario]["rows"]


def consumers_of(results: dict[str, Any], scenario: str) -> set[str]:
    return {r["consumer"] for r in rows(results, scenario)}


def test_every_scenario_is_measured_and_reported(results: dict[str, Any]) -> None:
    scenarios = {"tput", "paced", "conc", "prompt", "cancel", "reuse", "footprint", "memory"}
    assert set(results["raw"]) == scenarios  # tiny skips the live vLLM
    numbers = {t["scenario"].split(".", 1)[0] for t in results["targets"]}
    assert numbers == {str(n) for n in range(1, 11)}
    for t in results["targets"]:  # measured: "n/a" only for a missing optional peer
        allowed = ("met", "**MISSED**") if PEERS_INSTALLED else ("met", "**MISSED**", "n/a")
        assert t["verdict"] in allowed, t
    for title in ("## Targets", "## 1-2. One stream", "## 3. Paced", "## 9. Memory"):
        assert title in results["markdown"]
    assert "## Targets" in results["stdout"]


def test_no_consumer_failed(results: dict[str, Any]) -> None:
    for scenario, raw in results["raw"].items():
        for r in raw["rows"]:
            assert "error" not in r, (scenario, r["label"], r["error"])
            if "skipped" in r:  # only the peers' optional packages may be missing
                assert not PEERS_INSTALLED and r["consumer"] in ("openai", "httpx_sse"), r


def test_single_streams_count_every_token_served(results: dict[str, Any]) -> None:
    raw = results["raw"]["tput"]
    served = raw["server"]["variants"]["tput"]["tokens"]
    assert served == raw["expect_tokens"] == 2000
    names = {"floor", "httpx_msgspec", "tokstream", "tokstream_channel", "tokstream_parse"}
    if PEERS_INSTALLED:
        names |= {"httpx_sse", "openai"}
    assert consumers_of(results, "tput") == names
    for r in rows(results, "tput"):
        assert r["tokens"] == served, r
        assert r["cpu_s"] > 0 and r["wall_s"] > 0
        assert r["rss_peak_kib"] >= r["rss_base_kib"] > 0
    summary = results["scenarios"]["tput"]
    assert summary["floor"]["vs_floor"] == pytest.approx(1.0)
    assert summary["tokstream"]["vs_floor"] > 0


def test_concurrent_streams_all_complete_with_latencies(results: dict[str, Any]) -> None:
    paced, conc = results["raw"]["paced"], results["raw"]["conc"]
    for r in paced["rows"]:
        assert r["ok_streams"] == r["streams"] == paced["streams"] == 4, r
        assert r["tokens"] == paced["expect_tokens"] * 4
        assert r["tokens_joined"] == r["tokens"]  # every token's send matched its delivery
        assert 0 < r["lat_us_p50"] <= r["lat_us_p99"] <= r["lat_us_max"]
    for r in conc["rows"]:
        assert r["ok_streams"] == r["streams"] == 4 and not r["errors"], r
        assert r["tokens"] == 4 * conc["expect_tokens"]
        assert r["first_event_ms_p50"] > 0


def test_prompt_cancel_reuse_memory_figures_are_sane(results: dict[str, Any]) -> None:
    prompt = results["raw"]["prompt"]
    assert prompt["first_event_bytes"] > 32768 * 2  # the echo of 32k IDs is in it
    for r in prompt["rows"]:
        assert r["tokens"] == 16 and r["tokens_all_equal"], r
    for r in rows(results, "cancel"):
        assert r["started"] == r["streams"] == 20, r
        assert r["fds_peak"] >= r["fds_baseline"] + 20  # the streams were really open
    reuse = results["raw"]["reuse"]
    for r in reuse["rows"]:
        assert r["tokens"] == 16 * reuse["streams"]
        assert 1 <= r["connections"] <= reuse["streams"], r
    (mem,) = rows(results, "memory")
    assert mem["tokens"] == 2000
    assert mem["traced_peak_bytes"] >= mem["traced_kept_bytes"] > mem["text_bytes"] > 0


def test_footprint_and_client_creation(results: dict[str, Any]) -> None:
    idle = {r["label"]: r for r in rows(results, "footprint") if r["kind"] == "idle"}
    assert {"python", "trio", "httpx", "tokstream"} <= set(idle)
    assert idle["python"]["rss_kib"] < idle["trio"]["rss_kib"] < idle["tokstream"]["rss_kib"]
    made = [r for r in rows(results, "footprint") if r["kind"] == "create"]
    assert {r["label"] for r in made} >= {"httpx", "tokstream"}
    for r in made:
        if "skipped" not in r:
            assert 0 < r["min_ms"] <= r["median_ms"], r


def test_variants_make_their_own_rows(tmp_path: Path) -> None:
    # A tokstream.Client option passes through to every tokstream row, so two
    # stream transports are two sets of rows (issue 9, point 5).
    data = run_bench(
        tmp_path,
        "--scenarios=tput",
        "--consumers=floor,tokstream",
        "--variant=default",
        "--variant=transport=httpx",
    )
    labels = [r["label"] for r in data["raw"]["tput"]["rows"]]
    assert labels == ["floor", "tokstream", "tokstream[transport=httpx]"]
    assert all(r["tokens"] == 2000 for r in data["raw"]["tput"]["rows"])
    scenarios = [t["scenario"] for t in data["targets"]]
    assert any("`tokstream[transport=httpx]`" in s for s in scenarios)
