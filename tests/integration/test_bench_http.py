"""The bench's HTTP measure: the hand-written baseline's order API and the load generator, on a real nats-server.

The baseline must answer as flowrun's API does (same rules, same 202), or the HTTP ratio compares
different work; the load generator must attribute every 202 to its order and count everything else.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import orjson
import pytest_asyncio
from aiohttp import web
from nats.js import JetStreamContext

from bench import baseline, http_load
from bench.harness import Proc
from bench.load import STOCK, read_bucket, verify
from bench.load import http_load as run_load_process
from runner.jetstream.embedded import EmbeddedServer, free_port


@dataclass
class Baseline:
    url: str
    js: JetStreamContext


@pytest_asyncio.fixture(loop_scope="session")
async def baseline_system(nats_server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Baseline]:
    """The baseline's three processes, the order one serving POST /api/orders on a free port."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await baseline.provision(js, STOCK)
    port = free_port()
    procs = []
    try:
        for name in ("order", "inventory", "payment"):
            args = [sys.executable, "-m", "bench.baseline", name, "--nats", nats_server.url]
            args += ["--http-port", str(port)] if name == "order" else []
            procs.append(Proc(name, args, tmp_path / f"{name}.log"))
        for proc in procs:
            await asyncio.to_thread(proc.wait_log, b"running on", 30)
        yield Baseline(f"http://127.0.0.1:{port}", js)
    finally:
        for proc in procs:
            proc.stop()
        await nc.close()


async def _post(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict, dict]:
    headers = {"Content-Type": content_type} if content_type else {}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/orders", data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def _state(js: JetStreamContext, order_id: str, want: str, within: float = 15.0) -> dict:
    kv = await js.key_value("ORDER_SAGA")
    deadline = time.monotonic() + within
    while True:
        record = orjson.loads((await kv.get(order_id)).value)
        if record["state"] == want or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.05)


async def test_baseline_api_accepts_an_order_as_flowrun_does(baseline_system: Baseline) -> None:
    body = {"customerId": "CUST-7", "items": [{"productId": "BENCH-001", "quantity": 3, "price": 19.99}]}
    status, answer, headers = await _post(baseline_system.url, orjson.dumps(body))
    assert status == 202, answer
    order_id = answer["orderId"]
    assert uuid.UUID(order_id) and answer == {"orderId": order_id, "status": "pending"}
    assert headers["Location"] == f"/api/orders/{order_id}"
    created = await baseline_system.js.get_last_msg("ORDERS", "orders.created")
    assert created.headers is not None and created.headers["Nats-Msg-Id"] == f"{order_id}.orders.created"
    assert orjson.loads(created.data) == {
        "orderId": order_id,
        "customerId": "CUST-7",
        "items": [{"productId": "BENCH-001", "quantity": 3, "price": "19.99"}],
        "total": "59.97",
    }
    record = await _state(baseline_system.js, order_id, "completed")
    assert record["state"] == "completed" and record["total"] == "59.97"


async def test_baseline_api_refuses_what_flowrun_refuses_and_stores_nothing(baseline_system: Baseline) -> None:
    good = {"customerId": "CUST123", "items": [{"productId": "BENCH-001", "quantity": 1, "price": 19.99}]}
    item = good["items"][0]
    cases = [
        (orjson.dumps(good), None, 415),  # no Content-Type given: aiohttp sends application/octet-stream
        (orjson.dumps(good), "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (orjson.dumps({"customerId": "CUST123"}), "application/json", 422),  # items required
        (orjson.dumps({**good, "coupon": "x"}), "application/json", 422),  # additionalProperties: false
        (orjson.dumps({**good, "customerId": "a.b"}), "application/json", 422),  # the id pattern
        (orjson.dumps({**good, "items": [{**item, "quantity": 0}]}), "application/json", 422),
        (orjson.dumps({**good, "items": [{**item, "price": 19.999}]}), "application/json", 422),  # sub-cent
    ]
    for body, content_type, expected in cases:
        status, answer, _ = await _post(baseline_system.url, body, content_type)
        assert (status, "error" in answer) == (expected, True), (body, content_type, answer)
    assert (await baseline_system.js.stream_info("KV_ORDER_SAGA")).state.messages == 0
    assert (await baseline_system.js.stream_info("ORDERS")).state.messages == 0


async def test_load_generator_reports_every_accepted_order_and_the_books_balance(
    baseline_system: Baseline, tmp_path: Path
) -> None:
    result = await run_load_process(baseline_system.url, 1.0, 4, tmp_path / "load.json")
    ids = result["ids"]
    assert result["accepted"] == len(ids) == len(set(ids)) > 0
    assert len(result["sent"]) == len(result["answered"]) == len(ids)
    assert all(result["started"] <= s <= a for s, a in zip(result["sent"], result["answered"], strict=True))
    assert result["sent"][0] <= time.monotonic()  # the same system-wide clock as this process
    assert result["statuses"] == {} and result["errors"] == {}
    assert result["requests"] == len(ids) and result["connects"] == 4  # keep-alive: one connection each
    assert result["cpu_s"] > 0
    stored = await read_bucket(baseline_system.js, "ORDER_SAGA")
    assert set(stored) == set(ids)  # every 202 is an order the system holds, and nothing else was started
    for _ in range(150):  # up to ~30 s for the saga to finish every accepted order
        books = await verify(baseline_system.js, ids, dlq=False)
        if books["terminal"] == len(ids):
            break
        await asyncio.sleep(0.2)
    assert books["ok"], books


async def test_load_generator_counts_non_202_answers_by_status() -> None:
    answers = 0

    async def orders(_: web.Request) -> web.Response:
        nonlocal answers
        answers += 1
        if answers % 2:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"orderId": f"o{answers}", "status": "pending"}, status=202)

    app = web.Application()
    app.add_routes([web.post("/api/orders", orders)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result = await http_load.run(f"http://127.0.0.1:{port}", 0.5, 2, 5.0)
    finally:
        await runner.cleanup()
    assert result["accepted"] > 0 and result["statuses"]["503"] > 0
    assert result["accepted"] + result["statuses"]["503"] == result["requests"] == answers
    assert all(i.startswith("o") and int(i[1:]) % 2 == 0 for i in result["ids"])
    assert result["errors"] == {}


async def test_load_generator_gives_up_on_a_silent_server_within_its_deadline() -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing, keeps the connection open

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.wait_for(http_load.run(f"http://127.0.0.1:{port}", 0.2, 3, 0.5), 30)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert result["accepted"] == 0 and result["statuses"] == {}
    assert result["errors"] == {"deadline": 3} and result["requests"] == 3
