"""Failover drills on a 3-node loopback cluster: the whole system at R3, real processes, a node killed
mid-load and restarted, and the fault ledger's accounting afterwards.

A drill POSTs orders at a steady rate through the HTTP API (each with its own Idempotency-Key, so an
order answered 5xx can be looked for afterwards), kills one node with SIGKILL at a given moment,
restarts it a few seconds later, waits for every accepted order to end, and audits the books.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
from nats.js import JetStreamContext

from runner.engine.intake import key_for
from runner.jetstream.cluster import EmbeddedCluster
from tests.faults.ledger import Audit, audit, get_record

PRODUCT = "MOUSE-001"
STOCK = 100_000
BODY = {"customerId": "C1", "items": [{"productId": PRODUCT, "quantity": 1, "price": 10.0}]}
SAGA_BUCKETS = ("KV_ORDER_SAGA", "KV_INVENTORY", "KV_RESERVATIONS", "KV_PAYMENTS")


@dataclass
class Post:
    idempotency_key: str
    sent_at: float
    status: int = 0
    order_id: str | None = None
    seconds: float = 0.0


@dataclass
class DrillResult:
    name: str
    posts: list[Post] = field(default_factory=list)
    killed_at: float = 0.0
    audit: Audit | None = None
    phantoms: list[str] = field(default_factory=list)
    available_drop: int = 0

    @property
    def accepted(self) -> list[Post]:
        return [p for p in self.posts if p.status == 202]

    @property
    def server_errors(self) -> int:
        return sum(1 for p in self.posts if p.status >= 500 or p.status == 0)

    @property
    def recovery_seconds(self) -> float:
        """From the kill until POSTs were answered promptly again (202 within a second)."""
        slow = [
            p.sent_at + p.seconds
            for p in self.posts
            if p.sent_at >= self.killed_at - 1 and (p.status != 202 or p.seconds > 1.0)
        ]
        return max(0.0, max(slow, default=self.killed_at) - self.killed_at)

    def row(self) -> str:
        a = self.audit
        assert a is not None
        return (
            f"| {self.name} | {len(self.posts)} | {len(self.accepted)} | {self.server_errors} | {a.completed} | "
            f"{len(a.lost)} | {len(a.duplicate_effects)} | {len(self.phantoms)} | {a.dead_letters} | "
            f"{self.recovery_seconds:.1f} s | {max(p.seconds for p in self.posts):.1f} s |"
        )


async def stream_leader(js: JetStreamContext, stream: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while True:
        try:
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
        except Exception:  # leaderless for a moment
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream} has no leader after {within}s")
        await asyncio.sleep(0.2)


async def move_leaders(nc: nats.NATS, streams: tuple[str, ...], to: str, attempts: int = 30) -> None:
    """Step the streams' leaders down until `to` leads each (elections pick at random)."""
    js = nc.jetstream()
    for stream in streams:
        for _ in range(attempts):
            if await stream_leader(js, stream) == to:
                break
            try:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=2)
            except Exception:  # an election under way: look again
                pass
            await asyncio.sleep(0.3)
        else:
            raise AssertionError(f"could not move the leader of {stream} to {to}")


async def post_orders(base: str, count: int, rate: float, tag: str) -> list[Post]:
    """POST `count` orders at `rate` per second; each waits for its own answer (up to 30 s)."""
    posts: list[Post] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(post: Post) -> None:
            try:
                async with session.post(
                    f"{base}/api/orders", json=BODY, headers={"Idempotency-Key": post.idempotency_key}
                ) as resp:
                    post.status = resp.status
                    body = await resp.json()
                    post.order_id = body.get("orderId")
            except (aiohttp.ClientError, TimeoutError):
                post.status = 0
            post.seconds = time.monotonic() - post.sent_at

        tasks = []
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            post = Post(f"{tag}-{i}", time.monotonic())
            posts.append(post)
            tasks.append(asyncio.create_task(one(post)))
        await asyncio.gather(*tasks)
    return posts


async def drill(
    name: str,
    cluster: EmbeddedCluster,
    base: str,
    pick_victim: Callable[[], int],
    orders: int = 300,
    rate: float = 30.0,
    kill_after: float = 4.0,
    down_for: float = 5.0,
) -> DrillResult:
    """One run: load, kill a node at `kill_after`, restart it `down_for` later, audit everything."""
    result = DrillResult(name)
    nc = await nats.connect(cluster.urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    try:
        before = await _available(js)
        load = asyncio.create_task(post_orders(base, orders, rate, name.replace(" ", "-").replace("'", "")))
        await asyncio.sleep(kill_after)
        victim = pick_victim()
        cluster.kill(victim)
        result.killed_at = time.monotonic()
        await asyncio.sleep(down_for)
        await asyncio.to_thread(cluster.restart, victim)
        result.posts = await load
        accepted = [{"orderId": p.order_id, "items": BODY["items"]} for p in result.accepted]
        result.audit = await audit(js, accepted, {}, within=90)
        result.available_drop = before - await _available(js)
        for post in result.posts:
            if post.status != 202 and await _exists(js, key_for(post.idempotency_key, "order")):
                result.phantoms.append(post.idempotency_key)
    finally:
        await nc.close()
    return result


async def _available(js: JetStreamContext) -> int:
    record = await get_record(js, "INVENTORY", PRODUCT)
    assert record is not None
    return record["available"]


async def _exists(js: JetStreamContext, order_id: str) -> bool:
    """Any trace of an order: a saga instance, a reservation or a payment."""
    return any([await get_record(js, bucket, order_id) for bucket in ("ORDER_SAGA", "PAYMENTS", "RESERVATIONS")])


def config_for_cluster(config_copy: Path) -> Path:
    """The shipped config with plenty of one product (every order can complete)."""
    path = config_copy / "flows" / "inventory.yaml"
    path.write_text(path.read_text().replace("MOUSE-001: {available: 200", f"MOUSE-001: {{available: {STOCK}"))
    return config_copy
