"""Prometheus /metrics and JSON logs against a real nats-server: what an operator's dashboards and log search see."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.config.loader import load_or_raise
from runner.jetstream.embedded import EmbeddedServer, free_port
from runner.serve.service import Runtime, RuntimeOptions
from tests.conftest import ROOT, SEED_ORDER, System, start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


async def scrape_until(system: System, before: Samples, settled: Callable[[Samples], bool]) -> Samples:
    """Scrape until `settled` (the last counts land a moment after the state a client sees), bounded: 5 s."""
    after: Samples = {}
    for _ in range(50):
        async with system.http.get(f"{system.base}/metrics") as resp:
            after = parse(await resp.text())
        if settled(after):
            break
        await asyncio.sleep(0.1)
    return after


async def test_metrics_after_orders(nats_server: EmbeddedServer) -> None:
    """N orders → N acked per consumer, a handler-duration histogram, N more instances (all completed), N POSTs."""
    n = 8
    system = await start_system(nats_server)
    try:
        scrape_url = f"{system.base}/metrics"
        async with system.http.get(scrape_url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            before = parse(await resp.text())
        ids = []
        for _ in range(n):
            status, body = await system.post_order(SEED_ORDER)
            assert status == 202, body
            ids.append(body["orderId"])
        for order_id in ids:
            assert (await system.wait_terminal(order_id))["status"] == "completed"
        async with system.http.get(f"{system.base}/no/such/path-{ids[0]}") as resp:
            assert resp.status == 404
        after = await scrape_until(
            system,
            before,
            lambda now: delta(before, now, "flowrun_messages_processed_total", outcome="acked") >= 5 * n,
        )

        def acked(consumer: str) -> float:
            return delta(before, after, "flowrun_messages_processed_total", consumer=consumer, outcome="acked")

        assert acked("inventory-service") == n  # orders.created
        assert acked("payment-service") == n  # orders.payment.requested
        assert acked("order-service") == 3 * n  # created, inventory.reserved, payment.completed
        assert delta(before, after, "flowrun_messages_received_total", consumer="payment-service") == n
        assert delta(before, after, "flowrun_messages_processed_total", outcome="dead_lettered") == 0
        charged = delta(
            before,
            after,
            "flowrun_handler_duration_seconds_count",
            consumer="payment-service",
            subject="orders.payment.requested",
        )
        assert charged == n
        assert total(after, "flowrun_handler_duration_seconds_sum", consumer="payment-service") > 0
        # Instances by state add up to the orders, and every one of them is completed.
        assert delta(before, after, "flowrun_saga_instances", saga="order") == n
        assert delta(before, after, "flowrun_saga_instances", saga="order", state="completed") == n
        assert delta(before, after, "flowrun_saga_transitions_total", saga="order", to_state="completed") == n
        assert delta(before, after, "flowrun_published_messages_total", subject="orders.payment.requested") == n
        assert delta(before, after, "flowrun_published_messages_total", status="failed") == 0
        posts = delta(before, after, "flowrun_http_requests_total", route="/api/orders", method="POST", status="202")
        assert posts == n
        # The route template, never the raw path: no label names an order id.
        assert not [key for key in after for order_id in ids if order_id in str(key)]
        assert delta(before, after, "flowrun_http_requests_total", route="(unmatched)", status="404") == 1
        reads = delta(before, after, "flowrun_http_requests_total", route="/api/orders/{key}", method="GET")
        assert reads >= n
        # Consumer info is polled in the background: the gauges exist for every consumer.
        polled = {dict(ls)["consumer"] for (name, ls) in after if name == "flowrun_consumer_pending"}
        assert {"inventory-service", "payment-service", "order-service"} <= polled

        timings = []
        for _ in range(5):
            started = time.perf_counter()
            async with system.http.get(scrape_url) as resp:
                await resp.read()
            timings.append(time.perf_counter() - started)
        print(
            f"scrape time over 5 scrapes: median {sorted(timings)[2] * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms"
        )
    finally:
        await system.http.close()
        await system.runtime.stop()


async def test_compensation_metrics(nats_server: EmbeddedServer) -> None:
    """A declined payment: one compensation started and completed, the instance counted as cancelled."""
    system = await start_system(nats_server)
    try:
        url = f"{system.base}/metrics"
        async with system.http.get(url) as resp:
            before = parse(await resp.text())
        too_expensive = {**SEED_ORDER, "items": [{"productId": "LAPTOP-001", "quantity": 6, "price": 999.99}]}
        status, body = await system.post_order(too_expensive)
        assert status == 202, body
        assert (await system.wait_terminal(body["orderId"]))["status"] == "cancelled"
        after = await scrape_until(
            system, before, lambda now: delta(before, now, "flowrun_saga_instances", state="cancelled") >= 1
        )
        compensations = "flowrun_saga_compensations_total"
        assert delta(before, after, compensations, saga="order", result="started") == 1
        assert delta(before, after, compensations, saga="order", result="completed") == 1
        assert delta(before, after, compensations, saga="order", result="failed") == 0
        assert delta(before, after, "flowrun_saga_instances", saga="order", state="cancelled") == 1
        assert delta(before, after, "flowrun_saga_instances", saga="order") == 1
        assert delta(before, after, "flowrun_saga_instances", saga="order", state="compensating") == 0
    finally:
        await system.http.close()
        await system.runtime.stop()


async def test_timeout_metrics(nats_server: EmbeddedServer) -> None:
    """No payment service: the payment timeout fires, counted by the state it fired in; compensation starts."""
    config = load_or_raise(ROOT, {**os.environ, "PAYMENT_TIMEOUT": "1s"})
    runtime = Runtime(config, ["order", "inventory"], nats_server.url, RuntimeOptions(http_port=0))
    await runtime.start()
    system = System(runtime, runtime.http_urls[0], aiohttp.ClientSession())
    try:
        before = await scrape_until(system, {}, lambda _: True)
        status, body = await system.post_order(SEED_ORDER)
        assert status == 202, body
        fired = "flowrun_saga_timeouts_fired_total"
        after: Samples = {}
        for _ in range(3):  # the timer is due after 1 s: up to 15 s in all
            after = await scrape_until(system, before, lambda now: delta(before, now, fired, saga="order") >= 1)
        assert delta(before, after, fired, saga="order", state="awaiting_payment") == 1
        assert delta(before, after, "flowrun_saga_compensations_total", saga="order", result="started") == 1
        assert delta(before, after, "flowrun_saga_instances", saga="order", state="compensating") == 1
        assert delta(before, after, "flowrun_saga_instances", saga="order", state="awaiting_payment") == 0
    finally:
        await system.http.close()
        await runtime.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def test_start_metrics_port_and_json_logs(nats_server: EmbeddedServer, spawn, tmp_path: Path) -> None:
    """A service without HTTP serves /metrics on --metrics-port; --log-format json lines carry the message's fields."""
    port = free_port()
    payment = spawn(
        "payment",
        nats_server.url,
        ROOT,
        http_port=None,
        extra_args=("--metrics-port", str(port), "--log-format", "json"),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.publish("orders.payment.requested", json.dumps({"orderId": "pay-1", "total": "10.00"}).encode())
        poison = {"orderId": "poison-1", "total": "ten"}
        poison_seq = (await js.publish("orders.payment.requested", json.dumps(poison).encode())).seq
        samples: Samples = {}
        for _ in range(100):
            samples = parse(await asyncio.to_thread(_get, url))
            settled = total(samples, "flowrun_messages_processed_total", consumer="payment-service")
            if settled >= 2:
                break
            await asyncio.sleep(0.1)
        assert total(samples, "flowrun_messages_processed_total", consumer="payment-service", outcome="acked") == 1
        assert (
            total(samples, "flowrun_messages_processed_total", consumer="payment-service", outcome="dead_lettered") == 1
        )
        assert total(samples, "flowrun_dead_letters_written_total", service="payment") == 1
    finally:
        await nc.close()
    payment.terminate()
    lines = [line for line in payment.log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]  # every JSON line parses
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    dead = [r for r in records if r["message"] == "dead-lettered"]
    assert len(dead) == 1, records
    assert dead[0]["service"] == "payment"
    assert dead[0]["consumer"] == "payment-service"
    assert dead[0]["subject"] == "orders.payment.requested"
    assert dead[0]["seq"] == poison_seq
    assert dead[0]["correlation_id"] == "poison-1"
