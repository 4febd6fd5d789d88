"""Least privilege on a real nats-server configured with `flowrun permissions --format server` (issue 12).

Every service runs as its own NATS user (a real `flowrun start` process); the provisioner created
the streams. The saga still completes, and a service can no longer publish another's events.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from runner.jetstream.embedded import EmbeddedServer, free_port
from runner.jetstream.permissions import PROVISIONER, inbox_prefix
from runner.jetstream.permissions_render import password_variable
from tests.conftest import ROOT, SEED_ORDER

pytestmark = pytest.mark.asyncio(loop_scope="session")

USERS = ("order", "inventory", "payment", PROVISIONER)
# nats-server parses a $VAR value as a config token: "12-ab" would read as a date. Letters first, hex after.
PASSWORDS = {user: "pw" + secrets.token_hex(16) for user in USERS}
FORGED = b'{"orderId": "forged-1", "amount": 1.0}'


class SecuredServer(EmbeddedServer):
    """The embedded server plus the `authorization` block that `flowrun permissions` printed."""

    def __init__(self, authorization: str, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.authorization = authorization

    def config_text(self) -> str:
        return super().config_text() + self.authorization + "\n"


def flowrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def service_env(user: str) -> dict[str, str]:
    """What an operator gives each service process: its user, its password, its own inbox."""
    return {"NATS_USER": user, "NATS_PASSWORD": PASSWORDS[user], "NATS_INBOX_PREFIX": inbox_prefix(user)}


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecuredServer]:
    printed = flowrun("permissions", "--config", str(ROOT), "--format", "server")
    assert printed.returncode == 0, printed.stderr
    for user, password in PASSWORDS.items():  # nats-server reads $FLOWRUN_<USER>_PASSWORD from its environment
        monkeypatch.setenv(password_variable(user), password)
    server = SecuredServer(printed.stdout, data_dir=tmp_path / "nats", log_file=tmp_path / "nats.log")
    with server:
        admin_env = {"NATS_USER": PROVISIONER, "NATS_PASSWORD": PASSWORDS[PROVISIONER]}
        provisioned = flowrun("provision", "--config", str(ROOT), "--nats", server.url, env=admin_env)
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        yield server


async def connect(server: SecuredServer, user: str, errors: list[str] | None = None) -> Client:
    async def collect(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(
        server.url,
        user=user,
        password=PASSWORDS[user],
        inbox_prefix=inbox_prefix(user) if user != PROVISIONER else "_INBOX",
        allow_reconnect=False,
        error_cb=collect,
    )


@pytest.fixture
async def admin(secured: SecuredServer) -> AsyncIterator[Client]:
    nc = await connect(secured, PROVISIONER)
    yield nc
    await nc.close()


async def orders_count(admin: Client) -> int:
    return (await admin.jetstream().stream_info("ORDERS")).state.messages


async def publish_refused(server: SecuredServer, user: str, subject: str, msg_id: str | None = None) -> None:
    """The server refuses the publish: a permissions error, and no PubAck ever comes."""
    errors: list[str] = []
    nc = await connect(server, user, errors)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            await nc.jetstream().publish(subject, FORGED, timeout=1, headers=headers)
        assert any("permissions violation" in e.lower() and subject in e for e in errors), errors
    finally:
        await nc.close()


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int):
        self.http, self.base = session, f"http://127.0.0.1:{port}"

    async def post_order(self) -> str:
        async with self.http.post(f"{self.base}/api/orders", json=SEED_ORDER) as resp:
            assert resp.status == 202, await resp.text()
            return (await resp.json())["orderId"]

    async def get(self, path: str) -> dict:
        async with self.http.get(f"{self.base}{path}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def wait_status(self, order_id: str, status: str, within: float = 20.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            order = await self.get(f"/api/orders/{order_id}")
            if order["status"] == status:
                return order
            assert time.monotonic() < deadline, f"order {order_id} is {order['status']}, not {status}"
            await asyncio.sleep(0.05)


def start(spawn: Callable[..., Any], server: SecuredServer, service: str, **kwargs: Any) -> Any:
    """A real `flowrun start --service X --provision verify` process connected as the service's own user."""
    env = {**service_env(service), **kwargs.pop("env", {})}
    return spawn(service, server.url, ROOT, env=env, extra_args=("--provision", "verify"), **kwargs)


async def test_saga_completes_with_every_service_as_its_own_user(secured: SecuredServer, spawn) -> None:
    port = free_port()
    start(spawn, secured, "order", http_port=port)
    start(spawn, secured, "inventory")
    start(spawn, secured, "payment")
    async with aiohttp.ClientSession() as session:
        api = Api(session, port)
        order = await api.wait_status(await api.post_order(), "completed")
        assert str(order["total"]) == "1059.97"  # a number or a decimal string
        assert (await api.get("/api/orders?state=completed"))["items"] == [order]  # lists: batched direct gets
        assert await api.get("/api/inventory/LAPTOP-001") == {"productId": "LAPTOP-001", "available": 49, "reserved": 1}
    # Every right the services needed was granted: the server refused nothing on the way.
    assert "Permissions Violation" not in secured.log_file.read_text()


async def test_services_cannot_publish_each_others_events_and_strangers_cannot_connect(
    secured: SecuredServer, admin: Client
) -> None:
    before = await orders_count(admin)
    await publish_refused(secured, "inventory", "orders.payment.completed")
    await publish_refused(secured, "payment", "orders.inventory.reserved")
    await publish_refused(secured, "payment", "orders.payment.requested")
    assert await orders_count(admin) == before

    payment = await connect(secured, "payment")  # what it emits, it may publish
    ack = await payment.jetstream().publish("orders.payment.completed", FORGED, timeout=5)
    await payment.close()
    assert ack.stream == "ORDERS" and await orders_count(admin) == before + 1

    for credentials in ({}, {"user": "payment", "password": "guess"}, {"user": "mallory", "password": "x"}):
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(secured.url, allow_reconnect=False, connect_timeout=2, **credentials)


async def test_forged_payment_does_not_complete_an_unpaid_order(secured: SecuredServer, admin: Client, spawn) -> None:
    port = free_port()
    start(spawn, secured, "order", http_port=port, env={"PAYMENT_TIMEOUT": "5m"})
    start(spawn, secured, "inventory")  # no payment service yet: the order waits for its payment
    async with aiohttp.ClientSession() as session:
        api = Api(session, port)
        order_id = await api.post_order()
        await api.wait_status(order_id, "awaiting_payment")
        # The payment event the saga waits for, with the id JetStream deduplicates the real one by.
        for forger in ("inventory", "order"):
            await publish_refused(secured, forger, "orders.payment.completed", f"{order_id}.orders.payment.completed")
        with pytest.raises(NotFoundError):
            await admin.jetstream().get_last_msg("ORDERS", "orders.payment.completed")
        await asyncio.sleep(0.5)
        assert (await api.get(f"/api/orders/{order_id}"))["status"] == "awaiting_payment"

        start(spawn, secured, "payment")  # the real payment is neither forged nor dropped as a duplicate
        await api.wait_status(order_id, "completed")
        assert [e["subject"] for e in await api.get(f"/api/orders/{order_id}/events")][-1] == (
            "orders.payment.completed"
        )


async def test_saga_timeouts_and_compensations_run_under_the_same_users(secured: SecuredServer, spawn) -> None:
    port = free_port()
    start(spawn, secured, "order", http_port=port, env={"PAYMENT_TIMEOUT": "1s"})
    start(spawn, secured, "inventory")  # nobody pays: the timer fires, the refund goes out first
    async with aiohttp.ClientSession() as session:
        api = Api(session, port)
        order_id = await api.post_order()
        await api.wait_status(order_id, "compensating")
        start(spawn, secured, "payment")  # confirms the refund, then the reservation is released
        deadline = time.monotonic() + 20
        while "orders.inventory.released" not in [
            e["subject"] for e in await api.get(f"/api/orders/{order_id}/events")
        ]:
            assert time.monotonic() < deadline, await api.get(f"/api/orders/{order_id}")
            await asyncio.sleep(0.1)
        assert (await api.get(f"/api/orders/{order_id}")).get("reason") == "payment timed out"
        assert await api.get("/api/inventory/LAPTOP-001") == {"productId": "LAPTOP-001", "available": 50, "reserved": 0}
    assert "Permissions Violation" not in secured.log_file.read_text()
