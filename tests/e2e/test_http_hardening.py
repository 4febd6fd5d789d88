"""HTTP hardening: client input never causes a 5xx, errors never echo it, every request has a deadline,
answers carry browser security headers, and money is exact to the cent end to end."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal

import aiohttp
import pytest

from runner import codec
from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import SEED_ORDER, System, freeze

pytestmark = pytest.mark.asyncio(loop_scope="session")

JSON = {"Content-Type": "application/json"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'",
}


async def published(system: System) -> int:
    return (await system.runtime.js.stream_info("ORDERS")).state.messages


async def post(system: System, data: bytes, headers: dict[str, str], **kw: object) -> tuple[int, bytes, str]:
    async with system.http.post(f"{system.base}/api/orders", data=data, headers=headers, **kw) as resp:
        return resp.status, await resp.read(), resp.content_type


async def raw_exchange(system: System, *parts: bytes) -> bytes:
    """Send bytes as they are (aiohttp's client only sends well-formed requests); the reply until close."""
    host, port = system.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(0.2)  # the server reads the first part as its own packet
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 20), 30)
    finally:
        writer.close()


def assert_at_most_one_quiet_line(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR with a traceback per bad request (anyone could flood the log): one short debug line at most."""
    mine = [r for r in caplog.records if r.name.startswith(("aiohttp", "flowrun.http"))]
    seen = [(r.levelname, r.getMessage()[:200]) for r in mine]
    assert all(r.levelno <= logging.INFO and not r.exc_info for r in mine), seen
    assert len(mine) <= 1 and all(len(r.getMessage()) < 120 for r in mine), seen


# --- 1. client input never causes a 5xx ------------------------------------------------------------------


async def test_integral_float_quantity_is_an_integer(system: System) -> None:
    body = {"customerId": "C1", "items": [{"productId": "MOUSE-001", "quantity": 2.0, "price": 29.99}]}
    status, created = await system.post_order(body)
    assert status == 202, created
    order = await system.wait_terminal(created["orderId"])
    assert order["items"][0]["quantity"] == 2 and order["total"] == "59.98"


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_body_that_is_not_its_content_encoding_is_a_400(
    system: System, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="flowrun.http")
    before = await published(system)
    status, body, content_type = await post(system, codec.dumps(SEED_ORDER), {**JSON, "Content-Encoding": encoding})
    assert status == 400, body
    assert content_type == "application/json"
    assert "Content-Encoding" in codec.loads(body)["error"]
    assert await published(system) == before
    await asyncio.sleep(0.2)  # aiohttp reports the unread rest of the body after the answer
    assert_at_most_one_quiet_line(caplog)


async def test_broken_chunked_framing_mid_body_is_a_json_4xx_not_a_hang(system: System) -> None:
    # aiohttp leaves the body read waiting when the framing breaks in a later packet: the body timeout answers.
    head = (
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"cus\r\n'
    )
    reply = await raw_exchange(system, head, b"ZZZZ-not-a-chunk-size\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 4"), reply[:200]
    assert b"application/json" in reply.split(b"\r\n\r\n")[0]


# --- 2. only application/json is accepted (no CSRF through "simple" requests) ------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
async def test_post_without_json_content_type_is_415(system: System, content_type: str | None) -> None:
    before = await published(system)
    headers = {"Content-Type": content_type} if content_type else {}
    status, body, _ = await post(system, codec.dumps(SEED_ORDER), headers, skip_auto_headers=["Content-Type"])
    assert status == 415, body
    assert "application/json" in codec.loads(body)["error"]
    assert await published(system) == before


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
async def test_json_content_type_variants_are_accepted(system: System, content_type: str) -> None:
    status, body, _ = await post(system, codec.dumps(SEED_ORDER), {"Content-Type": content_type})
    assert status == 202, body


# --- 3. errors never echo unbounded input; malformed requests don't flood the log -------------------------


def _too_many_items() -> dict:
    item = {"productId": "LAPTOP-001", "quantity": 1, "price": 999.99}
    return {"customerId": "C1", "items": [item] * 17_000}  # ~900 KB, under the 1 MiB cap


ECHO_CASES = [
    ("too many items", "POST", "/api/orders", _too_many_items(), 422),
    ("huge unknown key", "POST", "/api/orders", {**SEED_ORDER, "k" * 100_000: 1}, 422),
    ("huge wrong-type value", "POST", "/api/orders", {**SEED_ORDER, "customerId": ["x" * 1000] * 500}, 422),
    ("huge resource name", "GET", "/api/" + "v" * 6000 + "/X-1", None, 404),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "status"), ECHO_CASES, ids=[c[0] for c in ECHO_CASES])
async def test_errors_quote_input_only_clipped(system: System, name, method, path, body, status) -> None:
    data = codec.dumps(body) if body is not None else None
    async with system.http.request(method, f"{system.base}{path}", data=data, headers=JSON) as resp:
        reply = await resp.read()
        assert resp.status == status, reply[:300]
    assert len(reply) < 400, f"{len(data or b'')} bytes in, {len(reply)} bytes out: {reply[:300]!r}"
    assert codec.loads(reply)["error"]


MALFORMED = {
    "bad header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header" + b"Z" * 3000 + b": v\r\n\r\n",
    "bad chunk size": b"POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ" + b"Q" * 3000,
    "bad request line": b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_is_a_400_and_one_quiet_log_line(
    system: System, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger="flowrun.http")
    reply = await raw_exchange(system, request_bytes)
    assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0], reply[:200]
    assert_at_most_one_quiet_line(caplog)


# --- 4. every request has a deadline ----------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_requests_answer_503_with_retry_after_while_nats_is_down(
    system: System, nats_server: EmbeddedServer, outage: str
) -> None:
    # stopped: the connection drops and the client reconnects in vain; frozen (SIGSTOP): the TCP connection
    # stays open and nothing ever answers.
    _, created = await system.post_order(SEED_ORDER)
    order_id = created["orderId"]
    await system.wait_terminal(order_id)
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    nats_server.stop() if outage == "stopped" else freeze(pid)
    try:

        async def attempt(method: str, path: str, body: object = None) -> tuple[int, dict, str | None]:
            timeout = aiohttp.ClientTimeout(total=30)  # far beyond the server's deadline: it must answer first
            async with system.http.request(method, f"{system.base}{path}", json=body, timeout=timeout) as resp:
                return resp.status, await resp.json(), resp.headers.get("Retry-After")

        answers = await asyncio.gather(
            attempt("GET", f"/api/orders/{order_id}"),
            attempt("GET", f"/api/orders/{order_id}/events"),
            attempt("GET", "/api/inventory/LAPTOP-001"),
            attempt("POST", "/api/orders", SEED_ORDER),
        )
    finally:
        nats_server.start() if outage == "stopped" else os.kill(pid, signal.SIGCONT)
    for status, body, retry_after in answers:
        assert status == 503, body
        assert body["error"] and retry_after is not None and int(retry_after) > 0


# --- 5. security headers, no server fingerprint -----------------------------------------------------------


async def test_answers_carry_security_headers_and_no_server_version(system: System) -> None:
    probes = [
        ("GET", "/healthz", None),
        ("GET", "/api/orders/does-not-exist", None),
        ("GET", "/nowhere", None),
        ("POST", "/api/orders", SEED_ORDER),
        ("POST", "/api/orders", {"customerId": "C1"}),
        ("DELETE", "/api/orders", None),
    ]
    for method, path, body in probes:
        async with system.http.request(method, f"{system.base}{path}", json=body) as resp:
            for name, value in SECURITY_HEADERS.items():
                assert resp.headers.get(name) == value, (method, path, name, dict(resp.headers))
            server = resp.headers.get("Server", "")
            assert "aiohttp" not in server and "Python" not in server, server


# --- 6. money is exact to the cent, as two-place decimal strings ------------------------------------------


async def test_large_order_total_is_exact_to_the_cent(system: System) -> None:
    body = {"customerId": "RICH", "items": [{"productId": "LAPTOP-001", "quantity": 999_999, "price": 999_999_999.99}]}
    status, created = await system.post_order(body)
    assert status == 202, created
    order = await system.wait_terminal(created["orderId"])  # cancelled: not enough stock; the total stands
    assert order["total"] == "999998999990000.01"  # 999,999 * 999,999,999.99 exactly; a float says ...990000.0
    assert order["items"][0]["price"] == "999999999.99"


async def test_amounts_are_two_place_strings_in_events_kv_and_api(system: System) -> None:
    _, created = await system.post_order(SEED_ORDER)
    order = await system.wait_terminal(created["orderId"])
    assert order["status"] == "completed" and order["total"] == "1059.97"
    assert [i["price"] for i in order["items"]] == ["999.99", "29.99"]
    _, events = await system.get(f"/api/orders/{created['orderId']}/events")
    data = {e["subject"]: e["data"] for e in events}
    assert data["orders.created"]["total"] == "1059.97"
    assert [i["price"] for i in data["orders.created"]["items"]] == ["999.99", "29.99"]
    assert data["orders.payment.requested"]["total"] == "1059.97"
    assert data["orders.payment.completed"]["amount"] == "1059.97"
    payments = await system.runtime.js.key_value("PAYMENTS")
    payment = codec.loads((await payments.get(created["orderId"])).value)
    assert payment["status"] == "charged" and payment["amount"] == "1059.97"


async def test_declined_payment_records_the_exact_amount(system: System) -> None:
    body = {"customerId": "BIG", "items": [{"productId": "LAPTOP-001", "quantity": 6, "price": 999.99}]}
    _, created = await system.post_order(body)
    order = await system.wait_terminal(created["orderId"])
    assert order["status"] == "cancelled" and order["total"] == "5999.94"
    payments = await system.runtime.js.key_value("PAYMENTS")
    record = codec.loads((await payments.get(created["orderId"])).value)
    assert record["status"] == "declined" and record["amount"] == "5999.94"
    assert "5999.94 exceeds limit 5000.00" in record["reason"]


@pytest.mark.parametrize(("price", "accepted"), [(10.5, True), (0.01, True), (10.005, False), (1e-7, False)])
async def test_prices_with_more_than_two_decimals_are_refused(system: System, price: float, accepted: bool) -> None:
    before = await published(system)
    body = {"customerId": "C1", "items": [{"productId": "MOUSE-001", "quantity": 1, "price": price}]}
    status, reply = await system.post_order(body)
    if accepted:
        assert status == 202, reply
        order = await system.wait_terminal(reply["orderId"])
        assert order["items"][0]["price"] == f"{price:.2f}"
    else:
        assert status == 422, reply
        assert "items[0].price" in reply["error"] and "2 decimal places" in reply["error"]
        assert await published(system) == before


# --- 7. duplicate keys are refused ------------------------------------------------------------------------


DUPLICATES = {
    "top level": b'{"customerId":"a","customerId":"b","items":[{"productId":"X","quantity":1,"price":1}]}',
    "in an item": b'{"customerId":"a","items":[{"productId":"X","quantity":1,"quantity":9,"price":1}]}',
    "escaped twin": b'{"customerId":"a","custom\\u0065rId":"b","items":[{"productId":"X","quantity":1,"price":1}]}',
}


@pytest.mark.parametrize("raw", DUPLICATES.values(), ids=DUPLICATES.keys())
async def test_duplicate_keys_are_refused(system: System, raw: bytes) -> None:
    before = await published(system)
    status, body, _ = await post(system, raw, JSON)
    assert status == 400, body
    assert "duplicate key" in codec.loads(body)["error"]
    assert await published(system) == before


async def test_colons_inside_strings_are_not_mistaken_for_keys(system: System) -> None:
    body = copy.deepcopy(SEED_ORDER)
    body["note"] = "deliver at 10:30, gate: B"
    status, reply, _ = await post(system, codec.dumps(body), JSON)
    assert status == 422 and codec.loads(reply)["field"] == "note", reply  # the unknown field, not a duplicate


async def test_a_wrong_method_is_a_json_405_that_says_which_methods_work(system: System) -> None:
    async with system.http.request("PUT", f"{system.base}/api/orders") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
        assert (await resp.json())["error"]
