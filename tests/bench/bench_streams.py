"""tokstream against its peers on the same streams, in one run: issue 9's scenarios.

Run with ``make bench`` (``make bench QUICK=1`` for a one-minute pass), or::

    python tests/bench/bench_streams.py --scale quick --scenarios tput,paced
    python tests/bench/bench_streams.py --variant default --variant transport=httpx
    python tests/bench/bench_streams.py --report-only

Method (from the team's earlier measuring kit):

* A loopback server (``loopback_server.py``) runs as its own process pinned to
  core 0 and serves generated vLLM-shaped streams (``streamgen.py``), one HTTP
  chunk per SSE event as uvicorn frames vLLM.
* Every measurement is a fresh client process (``client_process.py``) pinned to
  core 1. Consumers are interleaved run by run (A B C A B C ...), so a drift of
  the machine spreads over all of them.
* Figures are CPU (user+sys) per token, wall time, latency from the server's
  ``send()`` to the consumer, and ``VmHWM`` for RSS. Ratios against the floor
  and the openai SDK pair runs of the same round; absolute times on a shared VM
  are noisy, ratios much less. Single-stream runs whose wall time is far above
  their CPU time (the client sat idle: host steal or loopback TCP recovery) are
  flagged as stalled and left out of the wall-time figures.

Each scenario writes ``<out>/raw/<scenario>.json``; every invocation then
renders ``<out>/results.md`` and ``<out>/results.json`` from all raw files
present (see ``report.py``). Nothing here fails on a missed target: it is a
measurement, not a test.

The tokstream rows take ``tokstream.Client`` options from ``--variant``
(``default``, or ``key=value[,key=value]`` with JSON values where they parse),
so two transports are two sets of rows: ``--variant transport=httpx
--variant transport=trio``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import http.client
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import consumers as C  # noqa: E402
import report  # noqa: E402

PY = sys.executable
LIVE_LOCK = "/tmp/tokstream-live.lock"  # at most one live vLLM on the machine at a time


@dataclass(frozen=True)
class Scale:
    tput_tokens: int
    tput_runs: int
    paced_streams: int
    paced_events: int
    paced_rate: float
    paced_runs: int
    conc_streams: int
    conc_tokens: int
    conc_runs: int
    prompt_len: int
    prompt_repeats: int
    cancel_streams: int
    cancel_start_s: float
    reuse_streams: int
    memory_tokens: int
    footprint_runs: int
    create_repeats: int
    live_tokens: int
    live_runs: int


SCALES = {
    # the pytest check: every scenario, tiny, once
    "tiny": Scale(
        tput_tokens=2000,
        tput_runs=1,
        paced_streams=4,
        paced_events=10,
        paced_rate=50.0,
        paced_runs=1,
        conc_streams=4,
        conc_tokens=200,
        conc_runs=1,
        prompt_len=32768,
        prompt_repeats=2,
        cancel_streams=20,
        cancel_start_s=30,
        reuse_streams=10,
        memory_tokens=2000,
        footprint_runs=1,
        create_repeats=5,
        live_tokens=32,
        live_runs=1,
    ),
    # a developer's pass: each scenario small and once, about a minute
    "quick": Scale(
        tput_tokens=20000,
        tput_runs=1,
        paced_streams=64,
        paced_events=40,
        paced_rate=20.0,
        paced_runs=1,
        conc_streams=64,
        conc_tokens=2000,
        conc_runs=1,
        prompt_len=32768,
        prompt_repeats=5,
        cancel_streams=1000,
        cancel_start_s=30,
        reuse_streams=100,
        memory_tokens=20000,
        footprint_runs=1,
        create_repeats=20,
        live_tokens=256,
        live_runs=1,
    ),
    # issue 9's scales
    "full": Scale(
        tput_tokens=200000,
        tput_runs=4,
        paced_streams=512,
        paced_events=200,
        paced_rate=20.0,
        paced_runs=2,
        conc_streams=512,
        conc_tokens=2000,
        conc_runs=2,
        prompt_len=32768,
        prompt_repeats=10,
        cancel_streams=10000,
        cancel_start_s=60,
        reuse_streams=1000,
        memory_tokens=200000,
        footprint_runs=3,
        create_repeats=50,
        live_tokens=2048,
        live_runs=3,
    ),
}

SCENARIOS = ("tput", "paced", "conc", "prompt", "cancel", "reuse", "footprint", "memory", "live")
CONSUMERS = {
    "tput": (*C.PEERS, *C.TOKSTREAM),
    "paced": (*C.PEERS, "tokstream", "tokstream_channel"),
    "conc": ("floor", "httpx_msgspec", "httpx_sse", "tokstream", "tokstream_channel"),
    "prompt": ("floor", "httpx_msgspec", "openai", "tokstream"),
    "cancel": ("floor", "tokstream"),  # plain httpx is the transport="httpx" variant
    "reuse": ("httpx_msgspec", "httpx_sse", "openai", "tokstream"),
    "live": ("floor", "tokstream"),
}


# -- processes ----------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scale = SCALES[args.scale]
        self.variants = [parse_variant(v) for v in args.variant]
        pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
        cores = sorted(os.sched_getaffinity(0))
        self.server_core = cores[0] if pin else None
        self.client_core = cores[1] if pin else None
        self.tokenizer = args.tokenizer or default_tokenizer()
        self.server_pid: int | None = None

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def consumers(self, scenario: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(consumer, label, tokstream options) for a scenario, filtered by --consumers."""
        out = []
        for name in CONSUMERS[scenario]:
            if self.args.consumers and name not in self.args.consumers:
                continue
            if name.startswith("tokstream"):
                for label, options in self.variants:
                    out.append((name, name + label, options))
            else:
                out.append((name, name, {}))
        return out

    def missing(self, name: str) -> str | None:
        gone = [m for m in C.REQUIRES[name] if importlib.util.find_spec(m) is None]
        if gone:
            return f"not installed ({', '.join(gone)}): pip install -e '.[bench]'"
        if name == "tokstream_parse" and not Path(self.tokenizer or "").exists():
            return "no tokenizer: run `python -m tokstream.testing model` or pass --tokenizer"
        return None

    def client(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one client process; add the CPU other processes took meanwhile."""
        job = {**job, "core": self.client_core}
        cmd = [PY, str(HERE / "client_process.py"), json.dumps(job)]
        before = cpu_snapshot(self.server_pid)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        others = others_cores(before, cpu_snapshot(self.server_pid))
        lines = r.stdout.strip().splitlines()
        if r.returncode or not lines:
            return {"error": f"exit {r.returncode}: {r.stderr[-2000:]}"}
        return {**json.loads(lines[-1]), "others_cores": others}

    @contextlib.contextmanager
    def server(self, *variants: str) -> Iterator[Server]:
        cmd = [PY, str(HERE / "loopback_server.py"), "--deadline", "1800"]
        if self.server_core is not None:
            cmd += ["--core", str(self.server_core)]
        for v in variants:
            cmd += ["--variant", v]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.server_pid = proc.pid
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("PORT"):
                proc.kill()
                raise RuntimeError(f"the loopback server did not start: {line}{proc.stderr.read()}")
            yield Server(int(line.split()[1]))
        finally:
            self.server_pid = None
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def cfg(self, base_url: str, max_tokens: int, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "base_url": base_url,
            "max_tokens": max_tokens,
            "options": options,
            "tokenizer": self.tokenizer,
        }

    def interleaved(
        self, scenario: str, runs: int, job_for: Callable[..., Any], timeout: float = 0
    ) -> list[dict[str, Any]]:
        """Run every consumer once per round, round after round; one row per run.

        ``job_for(consumer, options, run)`` returns a client job (run in a fresh
        process with ``timeout``), or a callable that runs it and returns the row
        (for scenarios that ask the server before and after).
        """
        rows = []
        todo = self.consumers(scenario)
        for r in range(runs):
            for name, label, options in todo:
                row: dict[str, Any] = {"consumer": name, "label": label, "run": r}
                why = self.missing(name)
                if why:
                    if r == 0:
                        rows.append({**row, "skipped": why})
                    continue
                self.log(f"{scenario} run {r + 1}/{runs}: {label}")
                t0 = time.monotonic()
                job = job_for(name, options, r)
                res = self.client(job, timeout) if isinstance(job, dict) else job()
                rows.append({**row, **res, "process_s": time.monotonic() - t0})
        return rows


@dataclass
class Server:
    port: int

    def url(self, variant: str) -> str:
        return f"http://127.0.0.1:{self.port}/{variant}/v1"

    def get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


def cpu_snapshot(server_pid: int | None) -> tuple[float, float, float, float]:
    """(time, machine-wide user+system CPU s, our reaped children's CPU s, server CPU s)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = 0.0
    if server_pid is not None:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{server_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            server = (int(fields[11]) + int(fields[12])) / tick
    mine = children.ru_utime + children.ru_stime
    return time.monotonic(), (user + nice + system) / tick, mine, server


def others_cores(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Cores' worth of CPU that processes other than our client and server used.

    Machine-wide busy time minus the client's (a reaped child) and the server's,
    over the wall time: about 0 on a quiet machine. Kernel time spent for our
    loopback traffic outside our processes counts too, so expect a few hundredths.
    """
    wall = b[0] - a[0]
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])) / wall) if wall else 0.0


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``default`` or ``k=v[,k=v]`` -> (row label suffix, Client options)."""
    if text in ("", "default"):
        return "", {}
    options: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--variant {text!r}: expected key=value[,key=value]")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return f"[{text}]", options


def default_tokenizer() -> str | None:
    home = os.environ.get("TOKSTREAM_VLLM_HOME") or str(ROOT / ".vllm")
    path = Path(home) / "tiny-qwen"
    return str(path) if path.exists() else None


# -- scenarios -------------------------------------------------------------------------


def run_tput(b: Bench) -> dict[str, Any]:
    """1-2. One long stream, fast replay: CPU per token (and the parser end to end)."""
    s = b.scale
    with b.server(f"tput=fast:{s.tput_tokens}") as srv:

        def job(name: str, options: dict[str, Any], _r: int) -> dict[str, Any]:
            cfg = b.cfg(srv.url("tput"), s.tput_tokens, options)
            return {"mode": "single", "consumer": name, "cfg": cfg}

        rows = b.interleaved("tput", s.tput_runs, job, timeout=300)
        stats = srv.get("/stats")
    return {"expect_tokens": s.tput_tokens, "rows": rows, "server": stats}


def run_paced(b: Bench) -> dict[str, Any]:
    """3. Many streams, each event its own send() at a fixed rate: added latency."""
    s = b.scale
    variant = f"paced=paced:{s.paced_events}:0:{s.paced_rate}"
    duration = s.paced_events / s.paced_rate
    with tempfile.TemporaryDirectory() as tmp, b.server(variant) as srv:
        tokens = srv.get("/stats")["variants"]["paced"]["tokens"]

        def job(name: str, options: dict[str, Any], _r: int) -> Any:
            log = os.path.join(tmp, "recv.json")

            def go() -> dict[str, Any]:
                srv.get("/sendlog")  # clear
                res = b.client(
                    {
                        "mode": "many",
                        "consumer": name,
                        "streams": s.paced_streams,
                        "cfg": b.cfg(srv.url("paced"), tokens, options),
                        "latency_log": log,
                        "deadline": duration * 3 + 30,
                    },
                    timeout=duration * 3 + 90,
                )
                sends = srv.get("/sendlog")
                if "error" not in res:
                    with open(log) as f:
                        res.update(report.join_latency(sends, json.load(f)))
                return res

            return go

        rows = b.interleaved("paced", s.paced_runs, job)
    return {
        "expect_tokens": tokens,
        "streams": s.paced_streams,
        "rate": s.paced_rate,
        "events": s.paced_events,
        "rows": rows,
    }


def run_conc(b: Bench) -> dict[str, Any]:
    """4. Many concurrent fast streams on one client."""
    s = b.scale
    with b.server(f"conc=fast:{s.conc_tokens}") as srv:

        def job(name: str, options: dict[str, Any], _r: int) -> dict[str, Any]:
            return {
                "mode": "many",
                "consumer": name,
                "streams": s.conc_streams,
                "cfg": b.cfg(srv.url("conc"), s.conc_tokens, options),
                "deadline": 240,
            }

        rows = b.interleaved("conc", s.conc_runs, job, timeout=300)
    return {"expect_tokens": s.conc_tokens, "streams": s.conc_streams, "rows": rows}


def run_prompt(b: Bench) -> dict[str, Any]:
    """5. A first event echoing a 32k-ID prompt: RSS growth and CPU it adds."""
    s = b.scale
    with b.server("short=fast:16", f"echo=fast:16:{s.prompt_len}") as srv:

        def job(name: str, options: dict[str, Any], _r: int) -> dict[str, Any]:
            return {
                "mode": "prompt",
                "consumer": name,
                "cfg": b.cfg(srv.url("short"), 16, options),
                "prompt_base_url": srv.url("echo"),
                "repeats": s.prompt_repeats,
            }

        rows = b.interleaved("prompt", 1, job, timeout=120)
        stats = srv.get("/stats")
    first = stats["variants"]["echo"]["first_event_bytes"]
    return {
        "expect_tokens": 16,
        "prompt_len": s.prompt_len,
        "first_event_bytes": first,
        "rows": rows,
    }


def run_cancel(b: Bench) -> dict[str, Any]:
    """6. Many streams held open by the server, cancelled together.

    The streams are cancelled once every one has its first event, or after
    ``cancel_start_s`` with whatever is in flight then (connecting, waiting for
    the head, or reading). No timeout may end a stream before the cancel.
    """
    s = b.scale
    with b.server("hold=hold:16") as srv:

        def job(name: str, options: dict[str, Any], _r: int) -> dict[str, Any]:
            return {
                "mode": "cancel",
                "consumer": name,
                "streams": s.cancel_streams,
                "cfg": {**b.cfg(srv.url("hold"), 16, options), "no_timeouts": True},
                "start_deadline": s.cancel_start_s,
            }

        rows = b.interleaved("cancel", 1, job, timeout=s.cancel_start_s + 240)
    return {"streams": s.cancel_streams, "start_s": s.cancel_start_s, "rows": rows}


def run_reuse(b: Bench) -> dict[str, Any]:
    """7. Sequential short streams on one client: TCP connections the server accepted."""
    s = b.scale
    with b.server("short=fast:16") as srv:

        def job(name: str, options: dict[str, Any], _r: int) -> Any:
            def go() -> dict[str, Any]:
                before = srv.get("/stats")["connections"]
                res = b.client(
                    {
                        "mode": "sequential",
                        "consumer": name,
                        "streams": s.reuse_streams,
                        "cfg": b.cfg(srv.url("short"), 16, options),
                    },
                    timeout=300,
                )
                res["connections"] = srv.get("/stats")["connections"] - before - 1
                return res

            return go

        rows = b.interleaved("reuse", 1, job)
    return {"expect_tokens": 16, "streams": s.reuse_streams, "rows": rows}


def run_footprint(b: Bench) -> dict[str, Any]:
    """8 and 10. Idle RSS after import + one client; how long making a client takes."""
    s = b.scale
    rows: list[dict[str, Any]] = []
    libs = [("python", "python", {}), ("trio", "trio", {}), ("httpx", "httpx", {})]
    libs.append(("openai", "openai", {}))
    libs += [("tokstream", "tokstream" + label, opts) for label, opts in b.variants]
    for r in range(s.footprint_runs):
        for lib, label, options in libs:
            row = {"consumer": lib, "label": label, "run": r, "kind": "idle"}
            if lib == "openai" and importlib.util.find_spec("openai") is None:
                if r == 0:
                    rows.append({**row, "skipped": "not installed (openai)"})
                continue
            b.log(f"footprint run {r + 1}/{s.footprint_runs}: {label}")
            job = {"mode": "footprint", "library": lib, "options": options}
            rows.append({**row, **b.client(job, timeout=60)})
    for lib, label, options in libs[2:]:
        row = {"consumer": lib, "label": label, "run": 0, "kind": "create"}
        if lib == "openai" and importlib.util.find_spec("openai") is None:
            rows.append({**row, "skipped": "not installed (openai)"})
            continue
        b.log(f"create: {label}")
        job = {"mode": "create", "library": lib, "options": options, "repeats": s.create_repeats}
        rows.append({**row, **b.client(job, timeout=120)})
    return {"rows": rows}


def run_memory(b: Bench) -> dict[str, Any]:
    """9. What tokstream keeps per streamed token (IDs and text for Done)."""
    s = b.scale
    rows = []
    with b.server(f"mem=fast:{s.memory_tokens}", "warm=fast:200") as srv:
        for label, options in b.variants:
            b.log(f"memory: tokstream{label}")
            job = {
                "mode": "memory",
                "consumer": "tokstream",
                "cfg": b.cfg(srv.url("mem"), s.memory_tokens, options),
                "warm_base_url": srv.url("warm"),
            }
            row = {"consumer": "tokstream", "label": "tokstream" + label, "run": 0}
            rows.append({**row, **b.client(job, timeout=300)})
    return {"expect_tokens": s.memory_tokens, "rows": rows}


def run_live(b: Bench) -> dict[str, Any]:
    """11. Sanity: the live CPU vLLM (tiny model, greedy, ignore_eos)."""
    s = b.scale
    try:
        from tokstream.testing import VLLMServer
    except ImportError as exc:
        return {"skipped": f"tokstream.testing is not importable: {exc}", "rows": []}
    b.log(f"live: waiting for {LIVE_LOCK}, then starting the CPU vLLM (30-60 s)")
    with open(LIVE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = VLLMServer()  # $TOKSTREAM_VLLM_HOME or ./.vllm, as `make vllm` installs
        try:
            server.start()
        except Exception as exc:  # not installed, or it would not start: say so, go on
            return {"skipped": f"no live vLLM (run `make vllm`): {exc}"[:500], "rows": []}
        try:
            # Qwen chat framing of "Hello", then the assistant's turn.
            prompt = [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]

            def job(name: str, options: dict[str, Any], _r: int) -> dict[str, Any]:
                cfg = {
                    **b.cfg(server.base_url, s.live_tokens, options),
                    "model": server.model,
                    "prompt": prompt,
                    "sampling": {"temperature": 0.0},
                    "extra_body": {"ignore_eos": True},
                }
                return {"mode": "single", "consumer": name, "cfg": cfg}

            rows = b.interleaved("live", s.live_runs, job, timeout=600)
        finally:
            server.stop()
    return {"expect_tokens": s.live_tokens, "rows": rows, "server_unpinned": True}


RUNNERS = {
    "tput": run_tput,
    "paced": run_paced,
    "conc": run_conc,
    "prompt": run_prompt,
    "cancel": run_cancel,
    "reuse": run_reuse,
    "footprint": run_footprint,
    "memory": run_memory,
    "live": run_live,
}


def environment() -> dict[str, Any]:
    versions = {}
    for dist in ("tokstream", "trio", "httpx", "httpcore", "h11", "msgspec", "openai", "httpx-sse"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "versions": versions,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--scenarios", default="all", help=f"comma list of {', '.join(SCENARIOS)}")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="tokstream.Client options for one set of tokstream rows: default | key=value[,...]",
    )
    ap.add_argument("--consumers", default="", help="only these consumers (comma list)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir for tokstream_parse")
    ap.add_argument("--out-dir", default=str(ROOT / ".bench"))
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    ap.add_argument("--report-only", action="store_true", help="render the report and exit")
    args = ap.parse_args()
    args.variant = args.variant or ["default"]
    args.consumers = [c for c in args.consumers.split(",") if c]
    out = Path(args.out_dir)
    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    names = SCENARIOS if args.scenarios == "all" else tuple(args.scenarios.split(","))
    for name in names:
        if name not in RUNNERS:
            ap.error(f"unknown scenario {name!r}; expected {', '.join(SCENARIOS)}")
    if not args.report_only:
        bench = Bench(args)
        for name in names:
            if name == "live" and args.scale == "tiny":
                continue
            t0 = time.monotonic()
            started = datetime.datetime.now().isoformat(timespec="seconds")
            result = RUNNERS[name](bench)
            result.update(
                scenario=name,
                scale=args.scale,
                scale_params=asdict(bench.scale),
                started=started,
                seconds=round(time.monotonic() - t0, 1),
                pinned=bench.client_core is not None,
                environment=environment(),
            )
            (raw_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
            bench.log(f"{name}: {result['seconds']} s")
    raws = {p.stem: json.loads(p.read_text()) for p in sorted(raw_dir.glob("*.json"))}
    text = report.render(raws, headline=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(report.summary(raws), indent=1))
    # Print what this invocation measured; the files hold every scenario measured so far.
    print(text if args.report_only else report.render({n: raws[n] for n in names if n in raws}))
    print(f"[bench] wrote {out / 'results.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
