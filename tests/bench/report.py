"""Turn the raw benchmark runs into one markdown report: targets first, then details.

:func:`render` gives the report: a table of issue 9's targets (target, measured,
verdict) for each set of tokstream rows, then one table per scenario with every
consumer's figures and its ratios. :func:`summary` gives the same as JSON.
Ratios pair runs of the same round (``run`` index) and report the median of the
per-round ratios. A verdict is ``met``, ``MISSED`` or ``n/a`` (no data); a missed
target never fails anything.
"""

# ruff: noqa: RUF001  (the report is typeset: its multiplication signs and dashes are meant)

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

MiB = 1024.0
DISTURBED = 0.2  # other processes' CPU, in cores, above which a run's figures are suspect
FLOOR, OPENAI, HTTPX = "floor", "openai", "httpx_msgspec"
PEER_NAMES = {
    "floor": "raw trio socket + own chunked decode + msgspec, batch per read (floor)",
    "httpx_msgspec": "httpx + msgspec, async generator",
    "httpx_sse": "httpx-sse + json",
    "openai": "openai SDK",
    "tokstream": "tokstream `client.stream()`",
    "tokstream_channel": "tokstream `start_stream()` channel, `async for`",
    "tokstream_parse": "tokstream + `ResponseParser` + context tree",
}


# -- small helpers ------------------------------------------------------------------


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def f(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


def ok_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r and "skipped" not in r]


def by_label(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return out


def paired(
    rows: list[dict[str, Any]], a: str, b: str, metric: Callable[[dict[str, Any]], float | None]
) -> float | None:
    """Median over rounds of metric(a) / metric(b), both from the same round."""
    runs_a = {r["run"]: metric(r) for r in ok_rows(rows) if r["label"] == a}
    runs_b = {r["run"]: metric(r) for r in ok_rows(rows) if r["label"] == b}
    ratios = [
        runs_a[k] / runs_b[k]  # type: ignore[operator]
        for k in runs_a
        if k in runs_b and runs_a[k] is not None and runs_b[k]
    ]
    return statistics.median(ratios) if ratios else None


def problem(rs: list[dict[str, Any]]) -> str | None:
    """Why a group of rows has no figures (skipped or every run failed), or None."""
    if any("skipped" in r for r in rs):
        return next(r["skipped"] for r in rs if "skipped" in r)
    if not ok_rows(rs):
        err = rs[0].get("error", "no runs").strip().splitlines()
        return "ERROR: " + (err[-1] if err else "?")[:200]
    return None


def table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def join_latency(sends: dict[str, list[list[int]]], recvs: dict[str, list[list[int]]]) -> dict:
    """Per-token latency (µs) from the server's send log and the client's delivery log.

    Both logs hold ``[monotonic_ns, n_ids]`` per event, keyed by stream; each is
    expanded to one time per token ID and the two are zipped in order.
    """
    lats: list[float] = []
    for key, rl in recvs.items():
        sent = [t for t, n in sends.get(key, []) for _ in range(n)]
        got = [t for t, n in rl for _ in range(n)]
        lats += [(g - s) / 1e3 for s, g in zip(sent, got, strict=False)]
    return {
        "tokens_joined": len(lats),
        "lat_us_p50": pct(lats, 50),
        "lat_us_p90": pct(lats, 90),
        "lat_us_p99": pct(lats, 99),
        "lat_us_max": max(lats) if lats else None,
    }


def cpu_us(r: dict[str, Any]) -> float | None:
    return r["cpu_s"] / r["tokens"] * 1e6 if r.get("tokens") else None


def stalled(r: dict[str, Any]) -> bool:
    """The client sat idle although it is the bottleneck (host steal, TCP recovery)."""
    return r["wall_s"] > 1.15 * r["cpu_s"] + 0.05


def tokens_ok(raw: dict[str, Any], r: dict[str, Any], per_stream: bool = False) -> bool:
    expect = raw.get("expect_tokens")
    if expect is None:
        return True
    if per_stream:
        expect *= r.get("streams", 1)
    return r.get("tokens") == expect


def ts_labels(raw: dict[str, Any], kind: str = "tokstream") -> list[str]:
    return list(dict.fromkeys(r["label"] for r in raw["rows"] if r["consumer"] == kind))


# -- per-scenario tables and targets -----------------------------------------------------
# Each returns (markdown detail, target rows, summary dict). A target row is
# [scenario, target, measured, verdict].

Targets = list[list[str]]


def tput(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    rows = raw["rows"]
    body, summ = [], {}
    for label, rs in by_label(rows).items():
        why = problem(rs)
        if why:
            body.append([label, why] + [""] * 9)
            continue
        ok = ok_rows(rs)
        clean = [r for r in ok if not stalled(r)] or ok
        cpu = [cpu_us(r) for r in ok]
        s = {
            "runs": len(ok),
            "stalled": sum(stalled(r) for r in ok),
            "tokens_ok": all(tokens_ok(raw, r) for r in ok),
            "cpu_us_min": min(c for c in cpu if c is not None),
            "cpu_us_median": median(cpu),
            "tok_s_median": median(r["tokens"] / r["wall_s"] for r in clean),
            "vs_floor": paired(rows, label, FLOOR, cpu_us),
            "openai_vs_this": paired(rows, OPENAI, label, cpu_us),
            "rss_peak_mib": median(r["rss_peak_kib"] / MiB for r in ok),
            "rss_growth_mib": median((r["rss_peak_kib"] - r["rss_base_kib"]) / MiB for r in ok),
            "steal_ticks": sum(r.get("steal_ticks", 0) for r in ok),
            "tcp_retrans": sum(r.get("tcp_retrans", 0) for r in ok),
        }
        summ[label] = s
        body.append(
            [
                label,
                f"{s['runs']}" + ("" if s["tokens_ok"] else " (tokens≠served!)"),
                str(s["stalled"]),
                f(s["cpu_us_min"]),
                f(s["cpu_us_median"]),
                f(s["vs_floor"], ".2f", "×"),
                f(s["openai_vs_this"], ".1f", "×"),
                f(s["tok_s_median"], ",.0f"),
                f(s["rss_peak_mib"], ".1f"),
                f(s["rss_growth_mib"], "+.1f"),
                f"{s['steal_ticks']} / {s['tcp_retrans']}",
            ]
        )
    n = raw["scale_params"]["tput_tokens"]
    detail = (
        f"One stream of {n:,} tokens, fast replay, client on one core. CPU is user+sys "
        "per token; `stl` counts stalled runs (wall > 1.15 × CPU + 50 ms), left out of tok/s.\n\n"
        + table(
            [
                "consumer",
                "runs",
                "stl",
                "CPU µs/token min",
                "median",
                "÷ floor",
                "openai ÷ this",
                "tok/s (wall)",
                "peak RSS MiB",
                "RSS growth",
                "steal / retrans",
            ],
            body,
        )
    )
    targets: Targets = []
    peers = [p for p in ("httpx_msgspec", "httpx_sse", "openai") if p in summ]
    for label in ts_labels(raw):
        s = summ.get(label)
        if s is None:
            targets.append([f"1. one stream ({label})", "runs", "no data", "n/a"])
            continue
        r = s["vs_floor"]
        name = f"1. one stream, {n:,} tokens, `{label}`"
        targets.append(
            [
                name,
                "≤ 1.5× the floor's CPU µs/token",
                f"{f(r, '.2f', '×')} ({f(s['cpu_us_median'])} µs/token)",
                verdict(None if r is None else r <= 1.5),
            ]
        )
        margins = {p: paired(rows, p, label, cpu_us) for p in peers}
        worst = min(margins.items(), key=lambda kv: kv[1] or 0.0) if margins else None
        targets.append(
            [
                name,
                "faster than every peer",
                (f"slowest margin: {worst[0]} {f(worst[1], '.2f', '×')}" if worst else "no peers"),
                verdict(None if not margins else all((m or 0) > 1.0 for m in margins.values())),
            ]
        )
        o = s["openai_vs_this"]
        targets.append(
            [
                name,
                "≥ 20× faster than the openai SDK",
                f"{f(o, '.1f', '×')}",
                verdict(None if o is None else o >= 20),
            ]
        )
    for label in ts_labels(raw, "tokstream_parse"):
        s = summ.get(label)
        r = s["vs_floor"] if s else None
        targets.append(
            [
                f"2. the same end to end, `{label}`",
                "≤ 2× the floor",
                f"{f(r, '.2f', '×')} ({f(s['cpu_us_median'] if s else None)} µs/token)",
                verdict(None if r is None else r <= 2.0),
            ]
        )
    return detail, targets, summ


def paced(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    rows = raw["rows"]
    body, summ = [], {}

    def p99(r: dict[str, Any]) -> float | None:
        return r.get("lat_us_p99")

    def cpu(r: dict[str, Any]) -> float | None:
        return r["cpu_s"] / r["tokens"] * 1e6 if r.get("tokens") else None

    for label, rs in by_label(rows).items():
        why = problem(rs)
        if why:
            body.append([label, why] + [""] * 8)
            continue
        ok = ok_rows(rs)
        s = {
            "runs": len(ok),
            "complete": all(
                r["ok_streams"] == r["streams"] and tokens_ok(raw, r, True) for r in ok
            ),
            "errors": ok[-1]["errors"],
            "p50_ms": median(r["lat_us_p50"] / 1e3 for r in ok if r.get("lat_us_p50") is not None),
            "p99_ms": median(r["lat_us_p99"] / 1e3 for r in ok if r.get("lat_us_p99") is not None),
            "max_ms": median(r["lat_us_max"] / 1e3 for r in ok if r.get("lat_us_max") is not None),
            "cpu_us": median(cpu(r) for r in ok),
            "cpu_us_min": min(cpu(r) or 0.0 for r in ok),
            "cores": median(r["cpu_s"] / r["wall_s"] for r in ok),
            "p99_vs_floor": paired(rows, label, FLOOR, p99),
            "cpu_vs_floor": paired(rows, label, FLOOR, cpu),
        }
        summ[label] = s
        body.append(
            [
                label,
                f"{s['runs']}" + ("" if s["complete"] else f" incomplete {s['errors']}"),
                f(s["p50_ms"], ".2f"),
                f(s["p99_ms"], ".1f"),
                f(s["max_ms"], ".1f"),
                f(s["p99_vs_floor"], ".1f", "×"),
                f"{f(s['cpu_us'], '.1f')} ({f(s['cpu_us_min'], '.1f')})",
                f(s["cpu_vs_floor"], ".2f", "×"),
                f(s["cores"], ".2f"),
            ]
        )
    k, rate, ev = raw["streams"], raw["rate"], raw["events"]
    detail = (
        f"{k} streams × {rate:g} events/s (≈ {rate * 1.23:.0f} tokens/s) × {ev} events, each "
        "event its own `send()`; latency from the server's `send()` to the consumer, per "
        "token (medians over runs of each run's percentile).\n\n"
        + table(
            [
                "consumer",
                "runs",
                "added p50 ms",
                "p99 ms",
                "max ms",
                "p99 ÷ floor",
                "CPU µs/token median (min)",
                "÷ floor",
                "client cores",
            ],
            body,
        )
    )
    targets: Targets = []
    for label in ts_labels(raw):
        s = summ.get(label)
        if s is None:
            continue
        name = f"3. {k} streams × {rate:g} ev/s, paced, `{label}`"
        targets.append(
            [
                name,
                "added latency p50 ≤ 2 ms",
                f"{f(s['p50_ms'], '.2f')} ms",
                verdict(None if s["p50_ms"] is None else s["p50_ms"] <= 2.0),
            ]
        )
        r = s["p99_vs_floor"]
        targets.append(
            [
                name,
                "p99 ≤ 3× the floor's p99",
                f"{f(r, '.1f', '×')} ({f(s['p99_ms'], '.1f')} ms)",
                verdict(None if r is None else r <= 3.0),
            ]
        )
        r = s["cpu_vs_floor"]
        targets.append(
            [
                name,
                "CPU ≤ 1.5× the floor's",
                f"{f(r, '.2f', '×')} ({f(s['cpu_us'], '.1f')} µs/token)",
                verdict(None if r is None else r <= 1.5),
            ]
        )
    return detail, targets, summ


def conc(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    rows = raw["rows"]
    body, summ = [], {}

    def first(r: dict[str, Any]) -> float | None:
        return r.get("first_event_ms_p50")

    for label, rs in by_label(rows).items():
        why = problem(rs)
        if why:
            body.append([label, why] + [""] * 8)
            continue
        ok = ok_rows(rs)
        s = {
            "runs": len(ok),
            "complete": all(
                r["ok_streams"] == r["streams"] and tokens_ok(raw, r, True) for r in ok
            ),
            "ok_streams_min": min(r["ok_streams"] for r in ok),
            "errors": ok[-1]["errors"],
            "tok_s": median(r["tokens"] / r["wall_s"] for r in ok),
            "cpu_us": median(cpu_us(r) for r in ok),
            "cpu_us_min": min(cpu_us(r) or 0.0 for r in ok),
            "cpu_vs_floor": paired(rows, label, FLOOR, cpu_us),
            "first_ms": median(first(r) for r in ok),
            "first_vs_floor": paired(rows, label, FLOOR, first),
            "rss_peak_mib": median(r["rss_peak_kib"] / MiB for r in ok),
            "rss_growth_mib": median((r["rss_peak_kib"] - r["rss_base_kib"]) / MiB for r in ok),
        }
        summ[label] = s
        body.append(
            [
                label,
                f"{s['ok_streams_min']}/{ok[0]['streams']}" + ("" if s["complete"] else " !"),
                str(s["errors"] or "–"),
                f(s["tok_s"], ",.0f"),
                f"{f(s['cpu_us'])} ({f(s['cpu_us_min'])})",
                f(s["cpu_vs_floor"], ".2f", "×"),
                f(s["first_ms"], ".0f"),
                f(s["first_vs_floor"], ".2f", "×"),
                f"{f(s['rss_peak_mib'], '.1f')} ({f(s['rss_growth_mib'], '+.1f')})",
            ]
        )
    k, n = raw["streams"], raw["expect_tokens"]
    detail = (
        f"{k} concurrent streams × {n:,} tokens, fast replay, one shared client per consumer "
        "(httpx peers: no connection limit, no pool timeout).\n\n"
        + table(
            [
                "consumer",
                "streams ok",
                "errors",
                "tok/s",
                "CPU µs/token median (min)",
                "÷ floor",
                "first event p50 ms",
                "÷ floor",
                "peak RSS MiB (growth)",
            ],
            body,
        )
    )
    targets: Targets = []
    ref = summ.get(HTTPX)
    for label in ts_labels(raw):
        s = summ.get(label)
        if s is None:
            continue
        name = f"4. {k} concurrent streams × {n:,} tokens, `{label}`"
        targets.append(
            [
                name,
                "all complete",
                f"{s['ok_streams_min']}/{k} streams, errors {s['errors'] or 'none'}",
                verdict(s["complete"]),
            ]
        )
        r = s["cpu_vs_floor"]
        targets.append(
            [
                name,
                "CPU/token ≤ 1.5× the floor",
                f"{f(r, '.2f', '×')} ({f(s['cpu_us'])} µs/token)",
                verdict(None if r is None else r <= 1.5),
            ]
        )
        r = s["first_vs_floor"]
        targets.append(
            [
                name,
                "first-event p50 ≤ 2× the floor's",
                f"{f(r, '.2f', '×')} ({f(s['first_ms'], '.0f')} ms)",
                verdict(None if r is None else r <= 2.0),
            ]
        )
        mine, theirs = s["rss_growth_mib"], ref["rss_growth_mib"] if ref else None
        targets.append(
            [
                name,
                "peak RSS (growth over the idle process) ≤ httpx + msgspec's",
                f"{f(mine, '.1f')} MiB vs {f(theirs, '.1f')} MiB",
                verdict(None if theirs is None else mine <= theirs),
            ]
        )
    return detail, targets, summ


def prompt(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    raw_kib = raw["first_event_bytes"] / 1024
    body, summ = [], {}
    for label, rs in by_label(raw["rows"]).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", "", ""])
            continue
        r = ok_rows(rs)[0]
        s = {
            "tokens_ok": r["tokens"] == raw["expect_tokens"] and r["tokens_all_equal"],
            "rss_growth_kib": r["rss_growth_kib"],
            "vs_raw": r["rss_growth_kib"] / raw_kib,
            "extra_cpu_ms": r["extra_cpu_ms_median"],
        }
        summ[label] = s
        body.append(
            [
                label + ("" if s["tokens_ok"] else " (tokens≠served!)"),
                f"{s['rss_growth_kib']:,}",
                f(s["vs_raw"], ".2f", "×"),
                f(s["extra_cpu_ms"], ".2f"),
                f(r["extra_cpu_ms_min"], ".2f"),
            ]
        )
    detail = (
        f"A 16-token stream whose first event echoes {raw['prompt_len']:,} prompt IDs "
        f"(that event is {raw_kib:,.0f} KiB raw), against the same stream without them: peak "
        "RSS growth of the first such stream, and the CPU it adds (median and min over "
        "interleaved pairs).\n\n"
        + table(["consumer", "RSS growth KiB", "÷ raw size", "extra CPU ms", "min"], body)
    )
    targets: Targets = []
    for label in ts_labels(raw):
        s = summ.get(label)
        if s is None:
            continue
        name = f"5. first chunk with a {raw['prompt_len'] // 1024}k-ID prompt echo, `{label}`"
        targets.append(
            [
                name,
                "RSS growth ≤ 2× the raw size",
                f"{f(s['vs_raw'], '.2f', '×')} ({s['rss_growth_kib']:,} KiB of {raw_kib:,.0f})",
                verdict(s["vs_raw"] <= 2.0),
            ]
        )
        targets.append(
            [
                name,
                "≤ 2 ms CPU",
                f"{f(s['extra_cpu_ms'], '.2f')} ms",
                verdict(s["extra_cpu_ms"] <= 2.0),
            ]
        )
    return detail, targets, summ


def cancel(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    body, summ = [], {}
    for label, rs in by_label(raw["rows"]).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", "", "", ""])
            continue
        r = ok_rows(rs)[0]
        summ[label] = r
        body.append(
            [
                label,
                f"{r['started']:,}/{r['streams']:,}" + (f" {r['errors']}" if r["errors"] else ""),
                f(r["open_s"], ".2f"),
                f(r["unwind_s"], ".3f"),
                f"{r['fds_baseline']} / {r['fds_peak']:,} / {r['fds_after']}",
                str(r["fds_after_close"]),
            ]
        )
    k = raw["streams"]
    detail = (
        f"{k:,} concurrent streams, each held open by the server after its first event, "
        "cancelled together (one cancel of their nursery) once all are streaming or after "
        f"{raw.get('start_s', '?')} s, whichever comes first; no timeouts. `unwind s` is from the "
        "cancel to the nursery's exit.\n\n"
        + table(
            [
                "consumer",
                "streaming at the cancel",
                "s before the cancel",
                "unwind s",
                "fds: baseline / peak / after",
                "fds after close",
            ],
            body,
        )
    )
    targets: Targets = []
    for label in ts_labels(raw):
        r = summ.get(label)
        if r is None:
            continue
        name = f"6. cancel {k:,} concurrent streams, `{label}`"
        failed = sum(r["errors"].values())
        targets.append(
            [
                name,
                "all unwound in ≤ 1 s",
                f"{f(r['unwind_s'], '.3f')} s ({r['started']:,} of {k:,} streaming, "
                f"{failed:,} failed before the cancel)",
                verdict(r["unwind_s"] <= 1.0 and failed == 0),
            ]
        )
        targets.append(
            [
                name,
                "fd count back to baseline",
                f"{r['fds_after']} after, baseline {r['fds_baseline']}",
                verdict(r["fds_after"] <= r["fds_baseline"]),
            ]
        )
    return detail, targets, summ


def reuse(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    body, summ = [], {}
    k = raw["streams"]
    for label, rs in by_label(raw["rows"]).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", "", ""])
            continue
        r = ok_rows(rs)[0]
        summ[label] = r
        body.append(
            [
                label + ("" if r["tokens"] == 16 * k else " (tokens≠served!)"),
                f"{r['connections']:,}",
                f(r["wall_s"] / k * 1e3, ".2f"),
                f(r["cpu_s"] / k * 1e3, ".2f"),
            ]
        )
    detail = (
        f"{k:,} sequential 16-token streams on one client; TCP connections the server accepted.\n\n"
        + table(["consumer", "connections", "ms/stream (wall)", "CPU ms/stream"], body)
    )
    targets: Targets = []
    for label in ts_labels(raw):
        r = summ.get(label)
        if r is None:
            continue
        targets.append(
            [
                f"7. {k:,} sequential streams on one `Client`, `{label}`",
                "1 TCP connection",
                f"{r['connections']:,} connections",
                verdict(r["connections"] == 1),
            ]
        )
    return detail, targets, summ


def footprint(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    rows = raw["rows"]
    idle = [r for r in rows if r.get("kind") == "idle"]
    made = [r for r in rows if r.get("kind") == "create"]
    body, summ = [], {}
    for label, rs in by_label(idle).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", ""])
            continue
        ok = ok_rows(rs)
        s = {
            "rss_mib": median(r["rss_kib"] / MiB for r in ok),
            "hwm_mib": median(r["hwm_kib"] / MiB for r in ok),
            "import_s": median(r["import_s"] for r in ok),
        }
        summ[label] = s
        body.append(
            [label, f(s["rss_mib"], ".1f"), f(s["hwm_mib"], ".1f"), f(s["import_s"] * 1e3, ".0f")]
        )
    body2, made_summ = [], {}
    for label, rs in by_label(made).items():
        why = problem(rs)
        if why:
            body2.append([label, why, "", "", ""])
            continue
        r = ok_rows(rs)[0]
        made_summ[label] = r
        body2.append(
            [
                label,
                f(r["first_ms"], ".2f"),
                f(r["median_ms"], ".3f"),
                f(r["min_ms"], ".3f"),
                f(r["rss_per_client_kib"], ",.0f"),
            ]
        )
    detail = (
        "A fresh process: import the library, make one client, enter it, idle 0.2 s (`python`: "
        "the bare interpreter; `trio`: import trio only). Medians over runs.\n\n"
        + table(["process", "idle RSS MiB", "peak RSS MiB", "imports + client ms"], body)
        + "\n\nMaking clients in one process: the first, then the median of the next ones "
        "(never entered).\n\n"
        + table(["client", "first ms", "median ms", "min ms", "RSS KiB per client"], body2)
    )
    targets: Targets = []
    for label in [lb for lb in summ if lb.startswith("tokstream")]:
        s = summ[label]
        targets.append(
            [
                f"8. `import tokstream` + one `Client`, idle, `{label}`",
                "≤ 40 MiB RSS",
                f"{f(s['rss_mib'], '.1f')} MiB",
                verdict(s["rss_mib"] <= 40.0),
            ]
        )
    for label in [lb for lb in made_summ if lb.startswith("tokstream")]:
        r = made_summ[label]
        targets.append(
            [
                f"10. creating a `Client`, `{label}`",
                "≤ 1 ms",
                f"{f(r['median_ms'], '.3f')} ms (first {f(r['first_ms'], '.2f')} ms)",
                verdict(r["median_ms"] <= 1.0 and r["first_ms"] <= 1.0),
            ]
        )
    return detail, targets, {"idle": summ, "create": made_summ}


def memory(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    body, summ = [], {}
    for label, rs in by_label(raw["rows"]).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", "", "", ""])
            continue
        r = ok_rows(rs)[0]
        n = r["tokens"]
        s = {
            "tokens_ok": n == raw["expect_tokens"],
            "text_per_token": r["text_bytes"] / n,
            "peak_per_token": r["traced_peak_bytes"] / n,
            "kept_per_token": r["traced_kept_bytes"] / n,
            "rss_per_token": r["rss_growth_kib"] * 1024 / n,
        }
        s["overhead_per_token"] = s["peak_per_token"] - s["text_per_token"]
        summ[label] = s
        body.append(
            [
                label + ("" if s["tokens_ok"] else " (tokens≠served!)"),
                f"{n:,}",
                f(s["text_per_token"], ".1f"),
                f(s["peak_per_token"], ".1f"),
                f(s["kept_per_token"], ".1f"),
                f(s["rss_per_token"], ".1f"),
            ]
        )
    detail = (
        "One stream, iterated without keeping the `Token`s; its `Done` kept. Bytes per "
        "token: the text's UTF-8 size, the peak of Python allocations during the stream "
        "(tracemalloc), what is still held with the `Done`, and the process's peak RSS growth "
        "(a separate run without tracemalloc).\n\n"
        + table(
            ["consumer", "tokens", "text B/token", "peak B/token", "kept B/token", "RSS B/token"],
            body,
        )
    )
    targets: Targets = []
    for label, s in summ.items():
        targets.append(
            [
                f"9. memory kept per streamed token, `{label}`",
                "≤ 16 bytes + its text",
                f"{f(s['overhead_per_token'], '.1f')} B + text ({f(s['text_per_token'], '.1f')} B)",
                verdict(s["overhead_per_token"] <= 16.0),
            ]
        )
    return detail, targets, summ


def live(raw: dict[str, Any]) -> tuple[str, Targets, dict[str, Any]]:
    if raw.get("skipped"):
        why = raw["skipped"]
        return f"Skipped: {why}", [["11. live CPU vLLM", "sanity", why, "n/a"]], {}
    body, summ = [], {}
    for label, rs in by_label(raw["rows"]).items():
        why = problem(rs)
        if why:
            body.append([label, why, "", "", ""])
            continue
        ok = ok_rows(rs)
        s = {
            "runs": len(ok),
            "tokens_ok": all(tokens_ok(raw, r) for r in ok),
            "cpu_us": median(cpu_us(r) for r in ok),
            "cpu_us_min": min(cpu_us(r) or 0.0 for r in ok),
            "tok_s": median(r["tokens"] / r["wall_s"] for r in ok),
            "cpu_share": median(r["cpu_s"] / r["wall_s"] for r in ok),
        }
        summ[label] = s
        body.append(
            [
                label + ("" if s["tokens_ok"] else " (tokens≠requested!)"),
                str(s["runs"]),
                f"{f(s['cpu_us'], '.1f')} ({f(s['cpu_us_min'], '.1f')})",
                f(s["tok_s"], ",.0f"),
                f(s["cpu_share"] * 100, ".1f", "%"),
            ]
        )
    n = raw["expect_tokens"]
    detail = (
        f"The tiny model on the live CPU vLLM, one stream of {n:,} tokens (greedy, "
        "`ignore_eos`), the server unpinned. tok/s is the server's rate; CPU per token is the "
        "client's.\n\n"
        + table(
            ["consumer", "runs", "CPU µs/token median (min)", "tok/s (server-bound)", "client CPU"],
            body,
        )
    )
    targets: Targets = []
    for label in ts_labels(raw):
        s = summ.get(label)
        if s:
            targets.append(
                [
                    f"11. live CPU vLLM, `{label}`",
                    "sanity (no target)",
                    f"{f(s['cpu_us'], '.1f')} µs/token, {f(s['tok_s'], ',.0f')} tok/s server-bound",
                    "ok" if s["tokens_ok"] else "**tokens≠requested**",
                ]
            )
    return detail, targets, summ


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[str, Targets, dict]]]] = {
    "tput": ("1-2. One stream, CPU per token", tput),
    "paced": ("3. Paced streams: added latency", paced),
    "conc": ("4. Concurrent fast streams", conc),
    "prompt": ("5. A 32k-ID prompt echo in the first event", prompt),
    "cancel": ("6. Cancelling many streams", cancel),
    "reuse": ("7. Connection reuse", reuse),
    "footprint": ("8, 10. Footprint and client creation", footprint),
    "memory": ("9. Memory kept per token", memory),
    "live": ("11. Live CPU vLLM (sanity)", live),
}


def _number(target: list[str]) -> int:
    head = target[0].split(".", 1)[0]
    return int(head) if head.isdigit() else 99


def _sections(raws: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, Targets, dict]]:
    out = []
    for name, (title, fn) in SECTIONS.items():
        if name in raws:
            detail, targets, summ = fn(raws[name])
            targets.sort(key=_number)  # stable: a scenario's rows keep their order
            text = f"## {title}\n\n{_stamp(raws[name])}\n\n{detail}"
            out.append((name, raws[name], text, targets, summ))
    return out


def _stamp(raw: dict[str, Any]) -> str:
    others = [r["others_cores"] for r in raw.get("rows", []) if "others_cores" in r]
    busy = ""
    if others:
        worst = max(others)
        if raw.get("server_unpinned"):
            flag = ", the vLLM server's included"
        else:
            flag = " (**disturbed**)" if worst > DISTURBED else ""
        busy = f", other processes' CPU {median(others):.2f} cores (max {worst:.2f}){flag}"
    if not raw.get("pinned"):
        pin = "**not pinned**"
    elif raw.get("server_unpinned"):
        pin = "client on core 1, server unpinned"
    else:
        pin = "server on core 0, client on core 1"
    return (
        f"*{raw.get('started', '?')}, scale `{raw.get('scale', '?')}`, "
        f"{raw.get('seconds', '?')} s, {pin}{busy}.*"
    )


def render(raws: dict[str, Any], headline: bool = True) -> str:
    sections = _sections(raws)
    parts = []
    if headline:
        env = next(iter(raws.values()), {}).get("environment", {})
        vers = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        parts.append(
            "# tokstream against its peers (issue 9)\n\n"
            f"Python {env.get('python', '?')} on {env.get('cpus', '?')} CPUs, Linux "
            f"{env.get('kernel', '?')}; {vers}.\n"
            "Ratios pair runs of the same round; absolute times on a shared VM are noisy.\n"
        )
        targets, last = [], None
        for t in sorted((t for *_, ts, _ in sections for t in ts), key=_number):
            targets.append(["" if t[0] == last else t[0], *t[1:]])  # name a scenario once
            last = t[0]
        parts.append(
            "## Targets\n\n"
            + table(["scenario", "target", "measured", "verdict"], targets or [["", "", "", ""]])
        )
    parts += [text for _, _, text, _, _ in sections]
    return "\n\n".join(parts) + "\n"


def summary(raws: dict[str, Any]) -> dict[str, Any]:
    """The targets and per-scenario summaries as JSON, with the raw runs."""
    sections = _sections(raws)
    return {
        "targets": [
            dict(zip(("scenario", "target", "measured", "verdict"), t, strict=True))
            for *_, ts, _ in sections
            for t in ts
        ],
        "scenarios": {name: summ for name, _, _, _, summ in sections},
        "raw": raws,
    }
