"""The bench's HTTP pieces without a server: the baseline prices orders as flowrun does, and the load
generator frames answers however the bytes arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.baseline_http import price
from bench.http_load import Connection, ProtocolError
from handlers.orders import accept


@pytest.mark.parametrize(
    "items",
    [
        [{"productId": "A", "quantity": 3, "price": 19.99}],
        [{"productId": "A", "quantity": 1, "price": 0.1}, {"productId": "B", "quantity": 2, "price": 0.2}],
        [{"productId": "A", "quantity": 1.0, "price": 100}, {"productId": "B", "quantity": 7, "price": 1e2}],
        [{"productId": "A", "quantity": 1000000, "price": 999999.99}],
    ],
)
def test_baseline_prices_an_order_exactly_as_flowrun(items: list[dict[str, Any]]) -> None:
    body = {"customerId": "C1", "items": items}
    assert price(body, "id-1") == accept(body, "id-1")


def test_baseline_refuses_a_sub_cent_price_as_flowrun() -> None:
    body = {"customerId": "C1", "items": [{"productId": "A", "quantity": 1, "price": 19.999}]}
    with pytest.raises(ValueError, match="2 decimal places"):
        accept(body, "id-1")
    with pytest.raises(ValueError, match="2 decimal places"):
        price(body, "id-1")


class FakeTransport:
    """Records writes; the connection under test only writes and aborts."""

    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


def _connection() -> tuple[Connection, FakeTransport]:
    conn, transport = Connection(), FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_an_answer_split_into_single_bytes_is_framed_by_content_length() -> None:
    conn, transport = _connection()
    answer = conn.request(b"POST ...", deadline=1e9)
    raw = b'HTTP/1.1 202 Accepted\r\nCONTENT-LENGTH: 13\r\nServer: x\r\n\r\n{"orderId":1}'
    for i in range(len(raw)):
        conn.data_received(raw[i : i + 1])
    assert await answer == (202, b'{"orderId":1}')
    assert transport.written == b"POST ..." and not transport.aborted and conn.keep_alive
    second = conn.request(b"POST ...", deadline=1e9)  # the same connection takes the next request
    conn.data_received(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert await second == (503, b"{}") and not conn.keep_alive


async def test_an_answer_it_cannot_frame_fails_the_request_and_drops_the_connection() -> None:
    conn, transport = _connection()
    answer = conn.request(b"POST ...", deadline=1e9)
    conn.data_received(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(ProtocolError):
        await answer
    assert transport.aborted and conn.closed


async def test_a_lost_connection_fails_the_request_in_flight() -> None:
    conn, _ = _connection()
    answer = conn.request(b"POST ...", deadline=1e9)
    conn.data_received(b"HTTP/1.1 202 Accepted\r\nContent-Length: 50\r\n\r\n{")
    conn.connection_lost(None)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(answer, 5)
