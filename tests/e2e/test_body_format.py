"""A POSTed body's `format: date` field is checked: an impossible date is refused with 422, before any saga starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")

ORDER = {"customerId": "C1", "items": [{"productId": "LAPTOP-001", "quantity": 1, "price": 10}]}


async def test_body_field_with_format_date(nats_server: EmbeddedServer, config_copy: Path) -> None:
    order_yaml = config_copy / "flows" / "order.yaml"
    text = order_yaml.read_text()
    anchor = "            properties:\n              customerId: &id"
    assert text.count(anchor) == 1
    order_yaml.write_text(
        text.replace(
            anchor,
            "            properties:\n              deliverBy: {type: string, format: date}\n"
            "              customerId: &id",
        )
    )
    system = await start_system(nats_server, config_copy)
    try:
        status, body = await system.post_order({**ORDER, "deliverBy": "2026-13-45"})
        assert status == 422, body
        assert "deliverBy" in str(body)
        status, listing = await system.get("/api/orders")
        assert status == 200 and listing["items"] == [], listing
        status, body = await system.post_order({**ORDER, "deliverBy": "2026-12-24"})
        assert status == 202, body
    finally:
        await system.http.close()
        await system.runtime.stop()
