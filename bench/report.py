"""Summaries of the runs: medians, ratios against the baseline and targets, as Markdown/JSON/PNG."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

TARGETS = {
    "throughput_ratio": 0.9,  # flowrun / baseline, closed loop
    "p99_ms": 50.0,  # open loop at half the baseline throughput
    "http_ratio": 0.8,  # flowrun / baseline, orders completed per second over HTTP (POST -> completed)
    "http_completed_per_s": 1500.0,  # flowrun, the same measure, on the 2-core machine
    "rss_mb": 120.0,  # peak per service process
    "faststream_ratio": 3.0,  # flowrun / the FastStream peer, closed loop
}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _runs(
    runs: list[dict[str, Any]], measure: str, kind: str | None = None, replicas: int = 1, **match: Any
) -> list[dict[str, Any]]:
    """The runs of one measure (and system) on streams with `replicas` copies (1: the single server)."""
    return [
        r
        for r in runs
        if r["measure"] == measure
        and (kind is None or r["kind"] == kind)
        and r.get("replicas", 1) == replicas
        and all(r.get(k) == v for k, v in match.items())
    ]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per measure and system; peak RSS is the worst run (it is checked against a ceiling)."""
    out: dict[str, Any] = {}
    for kind in ("flowrun", "baseline", "faststream"):
        tp = _runs(runs, "throughput", kind)
        lat = _runs(runs, "latency", kind)
        rss: dict[str, float] = {}
        for r in runs:
            if r["kind"] == kind:
                for name, mb in r["rss_mb"].items():
                    rss[name.split("#")[0]] = max(rss.get(name.split("#")[0], 0.0), mb)
        out[kind] = {
            "throughput": _median([r["throughput"] for r in tp]),
            "latency_p50_ms": _median([r["latency_ms"]["p50"] for r in lat]),
            "latency_p99_ms": _median([r["latency_ms"]["p99"] for r in lat]),
            "latency_max_ms": _median([r["latency_ms"]["max"] for r in lat]),
            "latency_rate": _median([r["rate"] for r in lat]),
            "server_cpu_share": _median([r["cpu"]["nats-server"] for r in tp]),
            "bench_cpu": _median([r["cpu"].get("bench") for r in tp]),
            "service_cpu": {
                name: _median([max(c for n, c in r["cpu"].items() if n.split("#")[0] == name) for r in tp])
                for name in sorted({n.split("#")[0] for r in tp for n in r["cpu"] if n not in ("nats-server", "bench")})
            },
            "peak_rss_mb": rss,
        }
    out["http"] = {kind: _http_summary(_runs(runs, "http", kind)) for kind in ("flowrun-up", "flowrun", "baseline")}
    out["r3"] = {kind: _replication(runs, kind) for kind in ("flowrun", "baseline")}
    scale = {n: _median([r["throughput"] for r in _runs(runs, "scale", "flowrun", instances=n)]) for n in (1, 2)}
    out["scale"] = {str(n): v for n, v in scale.items()}
    ok = [r for r in runs if r["verify"]["ok"]]
    out["correctness"] = {
        "runs": len(runs),
        "runs_ok": len(ok),
        "orders": sum(r["verify"]["orders"] for r in runs),
        "terminal": sum(r["verify"]["terminal"] for r in runs),
        "duplicate_effects": sum(r["verify"]["duplicate_effects"] for r in runs),
        "dead_letters": sum(r["verify"]["dead_letters"] for r in runs),
    }
    return out


def _replication(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """R3 beside R1: closed-loop throughput and nats-server CPU (a cluster's nodes summed), R3 open loop."""
    r1, r3 = _runs(runs, "throughput", kind), _runs(runs, "throughput", kind, replicas=3)
    lat = _runs(runs, "latency", kind, replicas=3)
    return {
        "runs": len(r3),
        "throughput_r1": _median([r["throughput"] for r in r1]),
        "throughput_r3": _median([r["throughput"] for r in r3]),
        "server_cpu_r1": _median([r["cpu"]["nats-server"] for r in r1]),
        "server_cpu_r3": _median([r["cpu"]["nats-server"] for r in r3]),
        "latency_rate": _median([r["rate"] for r in lat]),
        "latency_p50_ms": _median([r["latency_ms"]["p50"] for r in lat]),
        "latency_p99_ms": _median([r["latency_ms"]["p99"] for r in lat]),
    }


def _http_summary(http: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the HTTP runs of one system; answers other than 202 summed over its runs."""
    not_accepted: dict[str, int] = {}
    for r in http:
        for what, n in [*r["http"]["non_202"].items(), *r["http"]["errors"].items()]:
            not_accepted[what] = not_accepted.get(what, 0) + n
    return {
        "accepted_per_s": _median([r["http"]["accepted_per_s"] for r in http]),
        "completed_per_s": _median([r["throughput"] for r in http]),
        "e2e_p50_ms": _median([r["latency_ms"]["p50"] for r in http]),
        "e2e_p99_ms": _median([r["latency_ms"]["p99"] for r in http]),
        "answer_p50_ms": _median([r["http"]["answer_p50_ms"] for r in http]),
        "answer_p99_ms": _median([r["http"]["answer_p99_ms"] for r in http]),
        "not_accepted": not_accepted,
        "load_cpu": _median([r["http"]["load_cpu"] for r in http]),
        "peak_rss_mb": max((mb for r in http for mb in r["rss_mb"].values()), default=None),
        "processes": _median([len(r["rss_mb"]) for r in http]),
        "concurrency": http[0]["http"]["concurrency"] if http else None,
    }


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    f, b, h, s = summary["flowrun"], summary["baseline"], summary["http"], summary["scale"]
    m = meta["machine"]
    rate = f["latency_rate"] or b["latency_rate"]
    lines = [
        f"# flowrun bench - {meta['started']}",
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, nats-py {m['nats_py']}, "
        f"nats-server {m['nats_server']}, flowrun {m['commit']}"
        + (f", FastStream {m['faststream']};" if m.get("faststream") else ";"),
        f"{meta['config']['orders']} orders, {meta['config']['runs']} run(s) each, systems alternated, medians.",
        "",
        "| measure | flowrun | baseline | flowrun/baseline | target |",
        "|---|---:|---:|---:|---|",
        f"| closed-loop throughput (orders/s) | {_fmt(f['throughput'])} | {_fmt(b['throughput'])} "
        f"| {_ratio(f['throughput'], b['throughput'])} | >= {TARGETS['throughput_ratio']}x |",
    ]
    for q in ("p50", "p99", "max"):
        target = "<= 50 ms" if q == "p99" else ""
        lines.append(
            f"| open-loop latency {q} (ms) @ {_fmt(rate)}/s | {_fmt(f[f'latency_{q}_ms'], '.1f')} "
            f"| {_fmt(b[f'latency_{q}_ms'], '.1f')} | {_ratio(f[f'latency_{q}_ms'], b[f'latency_{q}_ms'])} | {target} |"
        )
    lines += [
        f"| scale: inventory x1 -> x2 (orders/s) | {_fmt(s['1'])} -> {_fmt(s['2'])} ({_ratio(s['2'], s['1'])}) "
        "| - | - | |",
        f"| nats-server CPU (share of all cores) | {_fmt(_pct(f['server_cpu_share']))}% "
        f"| {_fmt(_pct(b['server_cpu_share']))}% | | |",
        f"| bench process (injector+watcher) CPU (cores) | {_fmt(f['bench_cpu'], '.2f')} "
        f"| {_fmt(b['bench_cpu'], '.2f')} | | |",
    ]
    for name in ("order", "inventory", "payment"):
        lines.append(
            f"| {name}: peak RSS (MB) / CPU (cores) | {_fmt(f['peak_rss_mb'].get(name), '.0f')} / "
            f"{_fmt(f['service_cpu'].get(name), '.2f')} | {_fmt(b['peak_rss_mb'].get(name), '.0f')} / "
            f"{_fmt(b['service_cpu'].get(name), '.2f')} | | RSS <= 120 MB |"
        )
    lines += _http_rows(h)
    lines += _faststream_rows(f, summary["faststream"])
    lines += _replication_rows(summary["r3"])
    c = summary["correctness"]
    lines += [
        "",
        f"correctness: {c['runs_ok']}/{c['runs']} runs ok; {c['terminal']}/{c['orders']} orders terminal; "
        f"duplicate effects {c['duplicate_effects']}; dead letters {c['dead_letters']}",
    ]
    return "\n".join(lines) + "\n"


def _http_rows(h: dict[str, dict[str, Any]]) -> list[str]:
    """POST /api/orders from bench/http_load.py (its own process) until every accepted order is terminal:
    flowrun as `flowrun up` runs it, flowrun hand-started (one process per service), and the baseline."""
    u, f, b = h["flowrun-up"], h["flowrun"], h["baseline"]
    if all(x["completed_per_s"] is None for x in (u, f, b)):
        return []
    conns = u["concurrency"] or f["concurrency"] or b["concurrency"]

    def row(label: str, key: str, spec: str = ".0f", target: str = "") -> str:
        cells = " | ".join(_fmt(x[key], spec) for x in (u, f, b))
        return f"| {label} | {cells} | {_ratio(u[key], b[key])} | {_ratio(u[key], f[key])} | {target} |"

    return [
        "",
        f"HTTP end to end: POST /api/orders on {conns} keep-alive connections until every accepted order is terminal.",
        "",
        "| HTTP | flowrun up | flowrun, hand-started | baseline | up/baseline | up/hand-started | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        row(
            "completed/s (POST -> terminal)",
            "completed_per_s",
            target=f"up >= {TARGETS['http_ratio']}x baseline and >= {TARGETS['http_completed_per_s']:,.0f}/s; "
            "up within 10% of hand-started",
        ),
        row("accepted/s", "accepted_per_s"),
        row("POST -> completed p50 (ms)", "e2e_p50_ms", ".1f"),
        row("POST -> completed p99 (ms)", "e2e_p99_ms", ".1f"),
        row("POST answer p50 (ms)", "answer_p50_ms", ".1f"),
        row("POST answer p99 (ms)", "answer_p99_ms", ".1f"),
        row("processes (flowrun up: with its supervisor)", "processes"),
        row("peak RSS of any process (MB)", "peak_rss_mb", target="<= 120 MB"),
        row("load generator CPU (cores)", "load_cpu", ".2f"),
        f"| answers not 202 (all runs) | {' | '.join(_counts(x['not_accepted']) for x in (u, f, b))} | | | |",
    ]


def _faststream_rows(f: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The same saga written with FastStream (bench/peer_faststream.py), closed loop; none when it did not run."""
    if p["throughput"] is None:
        return []

    def per_service(x: dict[str, Any], key: str, spec: str) -> str:
        return " / ".join(_fmt(x[key].get(name), spec) for name in ("order", "inventory", "payment"))

    return [
        "",
        "| the peer: the saga in FastStream, closed loop | flowrun | FastStream | flowrun/FastStream | target |",
        "|---|---:|---:|---:|---|",
        f"| closed-loop throughput (orders/s) | {_fmt(f['throughput'])} | {_fmt(p['throughput'])} "
        f"| {_ratio(f['throughput'], p['throughput'])} | >= {TARGETS['faststream_ratio']:.0f}x |",
        f"| nats-server CPU (share of all cores) | {_fmt(_pct(f['server_cpu_share']))}% "
        f"| {_fmt(_pct(p['server_cpu_share']))}% | | |",
        f"| order / inventory / payment CPU (cores) | {per_service(f, 'service_cpu', '.2f')} "
        f"| {per_service(p, 'service_cpu', '.2f')} | | |",
        f"| order / inventory / payment peak RSS (MB) | {per_service(f, 'peak_rss_mb', '.0f')} "
        f"| {per_service(p, 'peak_rss_mb', '.0f')} | | |",
    ]


def _replication_rows(r3: dict[str, dict[str, Any]]) -> list[str]:
    """R3 beside R1 (a 3-node loopback cluster on the same cores); none when it did not run."""
    f, b = r3["flowrun"], r3["baseline"]
    if not f["runs"] and not b["runs"]:
        return []
    rate = f["latency_rate"] or b["latency_rate"]
    lines = [
        "",
        f"R3: a 3-node loopback cluster on the same cores, streams and buckets with 3 replicas; "
        f"{max(f['runs'], b['runs'])} run(s) each, medians.",
        "",
        "| closed loop | R1 orders/s | R3 orders/s | R3/R1 | nats-server CPU R1 -> R3 (nodes summed, share of all "
        f"cores) | R3 open loop p50 / p99 (ms) @ {_fmt(rate)}/s |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, x in (("flowrun", f), ("baseline", b)):
        lines.append(
            f"| {name} | {_fmt(x['throughput_r1'])} | {_fmt(x['throughput_r3'])} "
            f"| {_ratio(x['throughput_r3'], x['throughput_r1'])} | {_fmt(_pct(x['server_cpu_r1']))}% -> "
            f"{_fmt(_pct(x['server_cpu_r3']))}% | {_fmt(x['latency_p50_ms'], '.1f')} / "
            f"{_fmt(x['latency_p99_ms'], '.1f')} |"
        )
    lines.append(
        f"| flowrun/baseline | {_ratio(f['throughput_r1'], b['throughput_r1'])} "
        f"| {_ratio(f['throughput_r3'], b['throughput_r3'])} | | | |"
    )
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{what}: {n}" for what, n in sorted(counts.items())) or "0"


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def write(out_dir: Path, meta: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({**meta, "summary": summary, "runs": runs}, indent=2, default=str))
    (out_dir / "latest.md").write_text(markdown(summary, meta))
    return path


def plot(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> str:
    """Latency percentiles and throughput, flowrun next to the baseline. matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]' or pip install matplotlib)"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    qs = ["p50", "p99", "max"]
    width = 0.38
    for k, (kind, colour) in enumerate((("flowrun", "tab:blue"), ("baseline", "tab:gray"))):
        values = [summary[kind][f"latency_{q}_ms"] or 0 for q in qs]
        ax1.bar([i + (k - 0.5) * width for i in range(len(qs))], values, width, label=kind, color=colour)
        points = [r["throughput"] for r in runs if r["measure"] == "throughput" and r["kind"] == kind]
        ax2.bar(k, summary[kind]["throughput"] or 0, 0.6, color=colour, label=kind)
        ax2.scatter([k] * len(points), points, color="black", s=12, zorder=3)
    ax1.set_xticks(range(len(qs)), qs)
    ax1.set_ylabel("ms, publish -> terminal")
    ax1.axhline(TARGETS["p99_ms"], color="red", linestyle=":", linewidth=1, label="p99 target")
    ax1.set_title(f"open-loop latency @ {_fmt(summary['flowrun']['latency_rate'])} orders/s")
    ax1.legend()
    ax2.set_xticks([0, 1], ["flowrun", "baseline"])
    ax2.set_ylabel("orders/s")
    ax2.set_title("closed-loop throughput (median, runs as dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"
