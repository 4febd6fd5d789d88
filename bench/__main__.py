"""`python -m bench`: the order saga under load, flowrun against the hand-written baseline, same run.

Each run gets a fresh nats-server (file storage, loopback, temp dir) and fresh processes; A and B
runs alternate so drift on a shared machine hits both. Exit code 1 if any run's books do not
balance (an order not terminal, stock not conserved, an effect applied twice) - never for speed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import nats
import orjson

from bench import baseline, report
from bench.harness import ROOT, Deployment, cpu_seconds, peak_rss_mb, system
from bench.load import PRODUCT, STOCK, Watcher, closed_loop, http_load, open_loop, percentile, verify
from runner.jetstream.embedded import server_binary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=10_000, help="orders per closed-loop run (default 10000)")
    p.add_argument("--runs", type=int, default=3, help="runs per system and measure, alternated (default 3)")
    p.add_argument("--rate", type=float, default=None, help="open-loop orders/s (default: half the baseline's)")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="open-loop duration (default 10)")
    p.add_argument("--http-seconds", type=float, default=5.0, help="HTTP run length, s (default 5)")
    p.add_argument("--http-concurrency", type=int, default=64, help="HTTP keep-alive connections (default 64)")
    p.add_argument("--instances", type=int, default=1, help="flowrun inventory processes in the A/B runs")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP measure (POST -> completed, both systems)")
    p.add_argument("--no-scale", action="store_true", help="skip inventory x1 vs x2")
    p.add_argument(
        "--r3-runs",
        type=int,
        default=1,
        help="closed loop and open loop of flowrun and the baseline on a 3-node loopback cluster, R3 streams and "
        "buckets (default 1; 0 skips)",
    )
    p.add_argument(
        "--sync", default=None, metavar="always|DURATION", help="nats-server fsync policy (default: the server's, 2m)"
    )
    p.add_argument(
        "--no-metrics", action="store_true", help="flowrun processes without Prometheus metrics (FLOWRUN_METRICS=off)"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 300 orders, 1 run, tiny HTTP, no scale")
    p.add_argument("--plot", action="store_true", help="also write bench/results/latest.png (needs matplotlib)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    args = p.parse_args(argv)
    if args.quick:
        args.orders, args.runs, args.no_scale = 300, 1, True
        args.latency_seconds, args.http_seconds, args.http_concurrency = 2.0, 1.0, 16
    if args.orders < 1 or args.runs < 1 or args.r3_runs < 0:
        p.error("--orders and --runs must be at least 1, --r3-runs at least 0")
    args.faststream = importlib.util.find_spec("faststream") is not None
    return args


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    server = subprocess.run([server_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "runner", "handlers", "flows", "streams.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "nats_py": metadata.version("nats-py"),
        "faststream": metadata.version("faststream") if importlib.util.find_spec("faststream") else None,
        "nats_server": server.strip().removeprefix("nats-server: "),
        "platform": platform.platform(),
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
    }


async def _prepare(kind: str, url: str, replicas: int) -> None:
    """Bench stock (10^9 of BENCH-001) before any service starts; the baseline and the FastStream peer also
    provision here (the peer declares its consumers itself)."""
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream(timeout=30)  # a busy cluster can take more than the default 5 s to place a stream
        if kind in ("baseline", "faststream"):
            await baseline.provision(js, STOCK, replicas, consumers=kind == "baseline")
        else:
            await (await js.key_value("INVENTORY")).put(PRODUCT, orjson.dumps(STOCK[PRODUCT]))
    finally:
        await nc.close()


def _usage(dep: Deployment) -> dict[str, float]:
    """CPU seconds so far: the server, each service, and this process (injector + watcher share the cores)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "nats-server": sum(cpu_seconds(pid) for pid in dep.server_pids),  # a cluster: every node
        **{n: cpu_seconds(p) for n, p in dep.pids().items()},
        "bench": me.ru_utime + me.ru_stime,
    }


async def _drive_http(
    url: str, run_dir: Path, args: argparse.Namespace
) -> tuple[list[str], float, dict[str, float], dict[str, Any]]:
    """POST /api/orders from the load generator's process: the accepted ids, its first send, each id's
    send time (the same CLOCK_MONOTONIC as the watcher's) and the run's HTTP numbers."""
    res = await http_load(url, args.http_seconds, args.http_concurrency, run_dir / "http-load.json")
    answer_ms = [(a - s) * 1000 for s, a in zip(res["sent"], res["answered"], strict=True)]
    elapsed = max(res["elapsed"], 1e-9)
    http = {
        "requests": res["requests"],
        "connects": res["connects"],  # above concurrency: the server closed connections
        "accepted": res["accepted"],
        "accepted_per_s": res["accepted"] / elapsed,
        "non_202": res["statuses"],  # status -> count
        "errors": res["errors"],  # failed connections, requests past their deadline
        "answer_p50_ms": percentile(answer_ms, 50),
        "answer_p99_ms": percentile(answer_ms, 99),
        "concurrency": args.http_concurrency,
        "load_cpu": res["cpu_s"] / elapsed,  # cores the load generator used
    }
    return res["ids"], res["started"], dict(zip(res["ids"], res["sent"], strict=True)), http


async def one_run(
    kind: str,
    measure: str,
    run_dir: Path,
    args: argparse.Namespace,
    rate: float = 0.0,
    instances: int = 1,
    replicas: int = 1,
) -> dict[str, Any]:
    """One fresh deployment (replicas > 1: on a loopback cluster), one measure. Returns the run's record
    (numbers, resources, books)."""
    async with system(
        kind,
        run_dir,
        lambda url: _prepare(kind, url, replicas),
        inventory_instances=instances,
        sync=args.sync,
        replicas=replicas,
    ) as dep:
        nc = await nats.connect(dep.url.split(","), name="bench")
        try:
            js = nc.jetstream(publish_async_max_pending=8192)
            watcher = Watcher()
            await watcher.start(js)
            before, t0 = _usage(dep), time.monotonic()
            record: dict[str, Any] = {"kind": kind, "measure": measure, "instances": instances, "replicas": replicas}
            if measure == "http":
                assert dep.http_url is not None
                ids, started, sent, record["http"] = await _drive_http(dep.http_url, run_dir, args)
            else:
                n = args.orders if measure != "latency" else max(1, int(rate * args.latency_seconds))
                inj = await (closed_loop(js, n) if measure != "latency" else open_loop(js, rate, n))
                ids, started, sent = inj.ids, inj.started, inj.sent
                record["publish_errors"] = inj.publish_errors
                if measure == "latency":
                    record["rate"], record["lag_max_ms"] = rate, inj.lag_max * 1000
            complete = await watcher.wait(ids, within=30 + len(ids) / 100)
            finished = max((watcher.done[i][0] for i in ids if i in watcher.done), default=time.monotonic())
            wall = max(finished - started, 1e-9)
            after, window = _usage(dep), max(time.monotonic() - t0, 1e-9)
            cores = os.cpu_count() or 1
            record.update(
                orders=len(ids),
                complete=complete,
                wall_s=wall,
                throughput=sum(i in watcher.done for i in ids) / wall,
                cpu={
                    name: (after[name] - before[name]) / window / (cores if name == "nats-server" else 1)
                    for name in after
                },
                rss_mb={name: peak_rss_mb(pid) for name, pid in dep.pids().items()},
            )
            if sent:
                lat_ms = [(watcher.done[i][0] - sent[i]) * 1000 for i in ids if i in watcher.done]
                record["latency_ms"] = {
                    "p50": percentile(lat_ms, 50),
                    "p90": percentile(lat_ms, 90),
                    "p99": percentile(lat_ms, 99),
                    "max": max(lat_ms, default=float("nan")),
                }
            await watcher.stop()
            record["verify"] = await verify(js, ids, dlq=kind.startswith("flowrun"))
            if not record["verify"]["ok"]:
                record["logs"] = dep.tails(15)
            return record
        finally:
            await nc.close()


def describe(r: dict[str, Any]) -> str:
    v = r["verify"]
    if r["measure"] == "http":
        h, lat = r["http"], r["latency_ms"]
        refused = sum(h["non_202"].values()) + sum(h["errors"].values())
        head = (
            f"{h['accepted_per_s']:.0f} accepted/s, {r['throughput']:.0f} completed/s; POST->completed p50 "
            f"{lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; answer p50 {h['answer_p50_ms']:.1f} ms, p99 "
            f"{h['answer_p99_ms']:.1f} ms; not 202: {refused} {h['non_202']} {h['errors']}; "
            f"load generator {h['load_cpu']:.2f} cores"
        )
    elif r["measure"] == "latency":
        lat = r["latency_ms"]
        head = (
            f"@{r['rate']:.0f}/s p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
            f" (injector lag max {r['lag_max_ms']:.1f} ms)"
        )
    else:
        head = f"{r['throughput']:.0f} orders/s ({r['orders']} in {r['wall_s']:.2f} s)"
    cpu = ", ".join(f"{n} {c:.2f}" for n, c in r["cpu"].items() if n != "nats-server")
    rss = ", ".join(f"{n} {mb:.0f}" for n, mb in r["rss_mb"].items())
    books = "ok" if v["ok"] else f"FAILED {v}"
    return (
        f"{head}; nats-server {r['cpu']['nats-server'] * 100:.0f}% of all cores; cores used: {cpu}; "
        f"peak RSS MB: {rss}; terminal {v['terminal']}/{v['orders']}, duplicate effects "
        f"{v['duplicate_effects']}, books {books}"
    )


async def bench(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], float]:
    runs: list[dict[str, Any]] = []
    count = 0

    async def run(kind: str, measure: str, label: str, **kw: Any) -> dict[str, Any]:
        nonlocal count
        count += 1
        r = await one_run(kind, measure, tmp / f"{count:02d}-{kind}-{measure}", args, **kw)
        r["run"] = count
        runs.append(r)
        name = kind + (f" inventoryx{r['instances']}" if measure == "scale" else "")
        print(f"[{label}] {name}: {describe(r)}", flush=True)
        if not r["verify"]["ok"]:
            for proc, tail in r.get("logs", {}).items():
                print(f"  --- {proc} log tail ---\n{tail}", file=sys.stderr)
        return r

    def half_baseline(replicas: int) -> float:
        """Open-loop rate: half the baseline's median closed-loop throughput on the same servers."""
        base = [
            r["throughput"]
            for r in runs
            if r["kind"] == "baseline" and r["measure"] == "throughput" and r["replicas"] == replicas
        ]
        return args.rate or max(1.0, sorted(base)[len(base) // 2] / 2)

    async def series(kinds: tuple[str, ...], measure: str, label: str, count: int, **kw: Any) -> None:
        """`count` runs of each system, which goes first rotating from run to run."""
        for i in range(count):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                instances = args.instances if kind == "flowrun" else 1
                await run(kind, measure, f"{label} {i + 1}/{count}", instances=instances, **kw)

    pair = ("baseline", "flowrun")
    await series((*pair, "faststream") if args.faststream else pair, "throughput", "throughput", args.runs)
    rate = half_baseline(1)
    await series(pair, "latency", "latency", args.runs, rate=rate)
    if not args.no_http:  # flowrun twice: as `flowrun up` starts it, and one hand-started process per service
        await series(("baseline", "flowrun-up", "flowrun"), "http", "http", args.runs)
    if not args.no_scale:
        for i in range(args.runs):
            for n in (1, 2) if i % 2 == 0 else (2, 1):
                await run("flowrun", "scale", f"scale {i + 1}/{args.runs}", instances=n)
    if args.r3_runs:
        await series(pair, "throughput", "R3 throughput", args.r3_runs, replicas=3)
        await series(pair, "latency", "R3 latency", args.r3_runs, rate=half_baseline(3), replicas=3)
    return runs, rate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_metrics:  # the service processes inherit it: compare a run with and without metrics
        os.environ["FLOWRUN_METRICS"] = "off"
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(
        f"flowrun bench: {args.orders} orders, {args.runs} run(s) per system, {meta['machine']['cpus']} CPUs; "
        f"nats-server {meta['machine']['nats_server']}, nats-py {meta['machine']['nats_py']}",
        flush=True,
    )
    if not args.faststream:
        print("FastStream is not installed (pip install -e '.[bench]'): the peer's runs are skipped", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowrun-bench-") as tmp:
        try:
            runs, rate = asyncio.run(bench(args, Path(tmp)))
        except KeyboardInterrupt:
            print("interrupted: every process stopped", file=sys.stderr)
            return 130
    meta["config"]["rate"] = rate
    meta["duration_s"] = time.monotonic() - t0
    summary = report.summarize(runs)
    path = report.write(args.out, meta, runs, summary)
    print()
    print(report.markdown(summary, meta), end="")
    c = summary["correctness"]
    all_terminal = c["terminal"] == c["orders"]
    print(
        f"CHECK all orders terminal: {'yes' if all_terminal else 'NO'} ({c['terminal']}/{c['orders']}); "
        f"duplicate effects: {c['duplicate_effects']}; runs ok: {c['runs_ok']}/{c['runs']}"
    )
    print(f"results: {path} and {args.out / 'latest.md'} ({meta['duration_s']:.0f} s)")
    if args.plot:
        print(report.plot(summary, runs, args.out / "latest.png"))
    return 0 if c["runs_ok"] == c["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
