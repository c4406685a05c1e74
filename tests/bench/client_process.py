"""One measurement in a fresh client process; prints one JSON line of figures.

``bench_streams.py`` runs it as ``python client_process.py '<json job>'``. The
job names a ``mode``, the ``consumer`` and its ``cfg`` (see ``consumers.Config``)
and the mode's parameters. The process pins itself to ``core`` first, so every
figure is "cost on one core". Imports and shared-client construction happen
before the timed span; CPU is this process's user+sys time over the span; peak
RSS is ``VmHWM`` (``ru_maxrss`` is not used: on Linux it carries the parent's
high-water mark across fork+exec).

Modes:

* ``single``: one stream; wall, CPU, RSS growth, host steal and TCP retransmits.
* ``many``: ``streams`` concurrent streams on one shared client; first-event
  times, and with ``latency_log`` the delivery time of every event.
* ``sequential``: ``streams`` streams one after another on one client.
* ``prompt``: a short stream without, then with, a 32k-ID ``prompt_token_ids``
  first event; RSS growth of the first such stream and the CPU it adds.
* ``cancel``: ``streams`` concurrent streams held open by the server, then
  cancelled together; unwind time and open file descriptors.
* ``footprint``: import a client library, make one client, idle; RSS.
* ``create``: how long making a client takes (first, then the median).
* ``memory``: what tokstream keeps per streamed token (RSS, then tracemalloc).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def host_counters() -> tuple[int, int]:
    """(steal ticks over all CPUs, TCP RetransSegs): to flag disturbed runs."""
    steal = retrans = -1
    try:
        with open("/proc/stat") as f:
            steal = int(f.readline().split()[8])
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        retrans = int(rows[1][rows[0].index("RetransSegs")])
    except (OSError, IndexError, ValueError):
        pass
    return steal, retrans


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# -- modes that stream ----------------------------------------------------------


async def single(job: dict[str, Any]) -> dict[str, Any]:
    import consumers

    c = consumers.make(job["consumer"], consumers.Config(**job["cfg"]))
    await c.open()
    gc.collect()
    rss0, h0, c0, t0 = status_kib("VmHWM"), host_counters(), cpu_s(), time.perf_counter()
    tokens = await c.stream()
    t1, c1, h1 = time.perf_counter(), cpu_s(), host_counters()
    rss1 = status_kib("VmHWM")
    await c.aclose()
    return {
        "tokens": tokens,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "rss_base_kib": rss0,
        "rss_peak_kib": rss1,
        "steal_ticks": h1[0] - h0[0],
        "tcp_retrans": h1[1] - h0[1],
    }


async def many(job: dict[str, Any]) -> dict[str, Any]:
    import consumers
    import trio

    c = consumers.make(job["consumer"], consumers.Config(**job["cfg"]))
    await c.open()
    k = job["streams"]
    now = time.monotonic_ns
    first: dict[str, int] = {}
    logs: dict[str, list[tuple[int, int]]] = {}
    results: list[int] = []
    errors: dict[str, int] = {}
    latency = bool(job.get("latency_log"))

    async def one(key: str) -> None:
        log = logs.setdefault(key, []) if latency else None

        def on_ids(n: int) -> None:
            if key not in first:
                first[key] = now()
            if log is not None:
                log.append((now(), n))

        try:
            results.append(await c.stream(key, on_ids))
        except Exception as exc:  # counted and reported, per type
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    gc.collect()
    rss0, c0, t0, t0ns = status_kib("VmHWM"), cpu_s(), time.perf_counter(), now()
    with trio.move_on_after(job.get("deadline", 300)) as scope:
        async with trio.open_nursery() as nursery:
            for i in range(k):
                nursery.start_soon(one, f"s{i}")
    t1, c1 = time.perf_counter(), cpu_s()
    rss1 = status_kib("VmHWM")
    await c.aclose()
    if latency:
        await trio.Path(job["latency_log"]).write_text(json.dumps(logs))
    ttfe = [(v - t0ns) / 1e6 for v in first.values()]
    tokens = sum(results)
    return {
        "streams": k,
        "ok_streams": len(results),
        "errors": errors,
        "timed_out": scope.cancelled_caught,
        "tokens": tokens,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "first_event_ms_p50": pct(ttfe, 50),
        "first_event_ms_max": max(ttfe) if ttfe else None,
        "rss_base_kib": rss0,
        "rss_peak_kib": rss1,
    }


async def sequential(job: dict[str, Any]) -> dict[str, Any]:
    import consumers

    c = consumers.make(job["consumer"], consumers.Config(**job["cfg"]))
    await c.open()
    tokens = 0
    c0, t0 = cpu_s(), time.perf_counter()
    for i in range(job["streams"]):
        tokens += await c.stream(f"q{i}")
    t1, c1 = time.perf_counter(), cpu_s()
    await c.aclose()
    return {"streams": job["streams"], "tokens": tokens, "wall_s": t1 - t0, "cpu_s": c1 - c0}


async def prompt(job: dict[str, Any]) -> dict[str, Any]:
    import consumers

    cfg = dict(job["cfg"])
    plain = consumers.make(job["consumer"], consumers.Config(**cfg))
    cfg["base_url"] = job["prompt_base_url"]
    echo = consumers.make(job["consumer"], consumers.Config(**cfg))
    await plain.open()
    await echo.open()
    for _ in range(3):
        await plain.stream()
    gc.collect()
    rss0 = status_kib("VmHWM")
    first_tokens = await echo.stream()
    rss1 = status_kib("VmHWM")
    extra: list[float] = []
    tokens = [first_tokens]
    for _ in range(job.get("repeats", 10)):
        c0 = cpu_s()
        await plain.stream()
        c1 = cpu_s()
        tokens.append(await echo.stream())
        c2 = cpu_s()
        extra.append((c2 - c1) - (c1 - c0))
    await plain.aclose()
    await echo.aclose()
    return {
        "tokens": tokens[0],
        "tokens_all_equal": len(set(tokens)) == 1,
        "rss_growth_kib": rss1 - rss0,
        "extra_cpu_ms_median": statistics.median(extra) * 1e3,
        "extra_cpu_ms_min": min(extra) * 1e3,
    }


async def cancel(job: dict[str, Any]) -> dict[str, Any]:
    import consumers
    import trio

    c = consumers.make(job["consumer"], consumers.Config(**job["cfg"]))
    await c.open()
    k = job["streams"]
    started: set[int] = set()
    errors: dict[str, int] = {}
    all_started = trio.Event()

    async def one(i: int) -> None:
        def on_ids(_n: int) -> None:
            started.add(i)
            if len(started) == k:
                all_started.set()

        try:
            await c.stream(f"c{i}", on_ids)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    gc.collect()
    fds0 = open_fds()
    t_open = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(k):
            nursery.start_soon(one, i)
        with trio.move_on_after(job.get("start_deadline", 240)):
            await all_started.wait()
        t_started = time.perf_counter()
        fds_peak = open_fds()
        nursery.cancel_scope.cancel()
    t_unwound = time.perf_counter()
    gc.collect()
    fds1 = open_fds()
    await c.aclose()
    return {
        "streams": k,
        "started": len(started),
        "errors": errors,
        "open_s": t_started - t_open,
        "unwind_s": t_unwound - t_started,
        "fds_baseline": fds0,
        "fds_peak": fds_peak,
        "fds_after": fds1,
        "fds_after_close": open_fds(),
    }


async def memory(job: dict[str, Any]) -> dict[str, Any]:
    """Stream once watching VmHWM, then once under tracemalloc, keeping the Done.

    A short stream on another client warms code paths and allocator arenas
    first; warming up on the measured stream itself would hide its growth, as
    its freed memory would be reused.
    """
    import tracemalloc

    import consumers

    import tokstream

    cfg = consumers.Config(**job["cfg"])

    async def run(client: tokstream.Client) -> tokstream.Done:
        async with client.stream(cfg.prompt, max_tokens=cfg.max_tokens) as events:
            async for event in events:
                if isinstance(event, tokstream.Done):
                    return event
                if isinstance(event, tokstream.Error):
                    raise event.error
        raise RuntimeError("the stream ended without Done")

    warm = tokstream.Client(job["warm_base_url"], model=cfg.model, **cfg.options)
    client = tokstream.Client(cfg.base_url, model=cfg.model, **cfg.options)
    async with warm, client:
        await run(warm)
        gc.collect()
        rss0 = status_kib("VmHWM")
        done = await run(client)
        rss1 = status_kib("VmHWM")
        del done
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        done = await run(client)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "tokens": len(done.token_ids),
        "text_bytes": len(done.text.encode()),
        "rss_growth_kib": rss1 - rss0,
        "traced_peak_bytes": peak - base,
        "traced_kept_bytes": kept - base,
    }


# -- modes without a server ---------------------------------------------------------


def footprint(job: dict[str, Any]) -> dict[str, Any]:
    lib = job["library"]
    t0 = time.perf_counter()
    if lib == "python":
        return {"rss_kib": status_kib("VmRSS"), "hwm_kib": status_kib("VmHWM"), "import_s": 0.0}
    import trio

    async def idle() -> dict[str, Any]:
        url = "http://127.0.0.1:9/v1"
        if lib == "trio":
            client: Any = None
        elif lib == "httpx":
            import httpx

            client = httpx.AsyncClient()
        elif lib == "openai":
            from openai import AsyncOpenAI

            client = AsyncOpenAI(base_url=url, api_key="unused")
        else:
            import tokstream

            client = tokstream.Client(url, model="m", **job.get("options", {}))
        imported = time.perf_counter()
        if client is not None:
            await client.__aenter__()
        await trio.sleep(0.2)
        gc.collect()
        out = {
            "rss_kib": status_kib("VmRSS"),
            "hwm_kib": status_kib("VmHWM"),
            "import_s": imported - t0,
        }
        if client is not None:
            await client.__aexit__(None, None, None)
        return out

    return trio.run(idle)


def create(job: dict[str, Any]) -> dict[str, Any]:
    lib, n = job["library"], job.get("repeats", 50)
    url = "http://127.0.0.1:9/v1"
    if lib == "httpx":
        import httpx

        def make() -> object:
            return httpx.AsyncClient()
    elif lib == "openai":
        from openai import AsyncOpenAI

        def make() -> object:
            return AsyncOpenAI(base_url=url, api_key="unused")
    else:
        import tokstream

        options = job.get("options", {})
        Client = tokstream.Client  # loads the trio shell: an import, not the client's cost

        def make() -> object:
            return Client(url, model="m", **options)

    keep = []
    gc.collect()
    rss0 = status_kib("VmHWM")
    t0 = time.perf_counter()
    keep.append(make())
    first = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        keep.append(make())
        times.append(time.perf_counter() - t0)
    rss1 = status_kib("VmHWM")
    return {
        "first_ms": first * 1e3,
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "rss_per_client_kib": (rss1 - rss0) / (n + 1),
    }


ASYNC_MODES = {
    "single": single,
    "many": many,
    "sequential": sequential,
    "prompt": prompt,
    "cancel": cancel,
    "memory": memory,
}
SYNC_MODES = {"footprint": footprint, "create": create}


def main() -> None:
    job = json.loads(sys.argv[1])
    if job.get("core") is not None:
        os.sched_setaffinity(0, {job["core"]})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.path.insert(0, HERE)
    mode = job["mode"]
    try:
        if mode in SYNC_MODES:
            out = SYNC_MODES[mode](job)
        else:
            import trio

            out = trio.run(ASYNC_MODES[mode], job)
    except BaseException:
        out = {"error": traceback.format_exc()[-3000:]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
