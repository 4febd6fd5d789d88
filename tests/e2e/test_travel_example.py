"""A second domain on the same engine, written only in YAML and handlers (examples/travel): a trip is a
hotel room, flight seats and one charge — or nothing at all. Nothing in runner/ knows about it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
import pytest_asyncio

from runner.config.loader import load_or_raise
from runner.jetstream.embedded import EmbeddedServer
from runner.serve.service import Runtime, RuntimeOptions
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRAVEL = ROOT / "examples" / "travel"
TERMINAL = {"confirmed", "cancelled", "compensation_failed", "failed"}


class Travel:
    def __init__(self, runtime: Runtime, http: aiohttp.ClientSession):
        self.runtime = runtime
        self.base = runtime.http_urls[0]
        self.http = http

    async def book(self, hotel: str, nights: int, flight: str, seats: int) -> tuple[int, dict]:
        body = {
            "travellerId": "T-1",
            "hotel": {"hotelId": hotel, "nights": nights},
            "flight": {"flightId": flight, "seats": seats},
        }
        async with self.http.post(f"{self.base}/api/bookings", json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, dict]:
        async with self.http.get(f"{self.base}{path}") as resp:
            return resp.status, await resp.json()

    async def post(self, path: str) -> tuple[int, dict]:
        async with self.http.post(f"{self.base}{path}", json={}) as resp:
            return resp.status, await resp.json()

    async def settled(self, booking_id: str, within: float = 20.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            status, body = await self.get(f"/api/bookings/{booking_id}")
            if status == 200 and body["status"] in TERMINAL:
                return body
            assert time.monotonic() < deadline, f"booking {booking_id} not settled: {status} {body}"
            await asyncio.sleep(0.05)

    async def left(self, kind: str, key: str) -> int:
        status, body = await self.get(f"/api/{kind}/{key}")
        assert status == 200, body
        return body["available"]


@pytest_asyncio.fixture(loop_scope="session")
async def travel(nats_server: EmbeddedServer) -> AsyncIterator[Travel]:
    config = load_or_raise(TRAVEL, {})
    runtime = Runtime(config, list(config.services), nats_server.url, RuntimeOptions(http_port=0))
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Travel(runtime, http)
    finally:
        await runtime.stop()


async def test_a_trip_is_confirmed_with_what_each_step_answered(travel: Travel) -> None:
    status, created = await travel.book("H-OSLO", 2, "F-OSL-LIS", 1)
    assert status == 202 and set(created) == {"bookingId", "status"}
    trip = await travel.settled(created["bookingId"])
    assert trip["status"] == "confirmed"
    # gathered from the steps' answers: 2 nights x 120.00 + 1 seat x 230.00, charged once
    assert trip["hotelPrice"] == "240.00" and trip["flightFare"] == "230.00" and trip["amount"] == "470.00"
    assert trip["confirmation"].startswith("H-OSLO-") and trip["ticket"].startswith("F-OSL-LIS-")
    assert await travel.left("hotels", "H-OSLO") == 4
    assert await travel.left("flights", "F-OSL-LIS") == 9
    status, listed = await travel.get("/api/bookings?state=confirmed")
    assert status == 200 and created["bookingId"] in json.dumps(listed)
    status, refused = await travel.post(f"/api/bookings/{created['bookingId']}/cancel")
    assert status == 409 and "confirmed" in refused["error"], refused


async def test_a_declined_charge_undoes_the_flight_then_the_hotel(travel: Travel) -> None:
    # 3 nights x 120.00 + 3 seats x 230.00 = 1050.00, over the 1000.00 card limit
    status, created = await travel.book("H-OSLO", 3, "F-OSL-LIS", 3)
    assert status == 202
    trip = await travel.settled(created["bookingId"])
    assert trip["status"] == "cancelled", trip
    assert "declined" in trip["reason"]
    assert await travel.left("hotels", "H-OSLO") == 5
    assert await travel.left("flights", "F-OSL-LIS") == 10
    status, events = await travel.get(f"/api/bookings/{created['bookingId']}/events")
    subjects = [e["subject"] for e in events]
    # newest step first, one at a time: the flight is cancelled (and confirmed) before the hotel
    assert subjects.index("bookings.flight.cancel") < subjects.index("bookings.flight.cancelled")
    assert subjects.index("bookings.flight.cancelled") < subjects.index("bookings.hotel.cancel")
    charges = await travel.runtime.buckets["CHARGES"].get(created["bookingId"])
    assert charges[0]["status"] == "declined"


async def test_no_room_means_no_flight_and_no_charge(travel: Travel) -> None:
    status, created = await travel.book("H-NOWHERE", 1, "F-OSL-LIS", 1)
    assert status == 202
    trip = await travel.settled(created["bookingId"])
    assert trip["status"] == "cancelled" and "unknown rooms" in trip["reason"]
    assert await travel.left("flights", "F-OSL-LIS") == 10
    status, _ = await travel.get("/api/bookings/not-a-booking")
    assert status == 404


async def test_poison_is_dead_lettered_by_the_service_that_got_it(travel: Travel, nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().publish("bookings.hotel.reserve", b"{not json")
    finally:
        await nc.close()
    deadline = time.monotonic() + 10
    while True:
        listed = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "runner.cli",
                "dlq",
                "ls",
                "--json",
                "--config",
                str(TRAVEL),
                "--nats",
                nats_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        entries = json.loads(listed.stdout or "[]")
        if entries or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert [(e["service"], e["subject"]) for e in entries] == [("hotel", "bookings.hotel.reserve")], listed.stderr
    assert "not valid JSON" in entries[0]["error"]


async def test_a_saga_without_a_key_does_not_validate(tmp_path) -> None:
    project = tmp_path / "travel"
    shutil.copytree(TRAVEL, project, ignore=shutil.ignore_patterns("__pycache__"))
    saga = project / "flows" / "saga.yaml"
    saga.write_text(saga.read_text().replace("    key: bookingId\n", ""))
    command = [sys.executable, "-m", "runner.cli", "validate", "--config", str(project)]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "saga.yaml" in result.stderr and "key" in result.stderr
