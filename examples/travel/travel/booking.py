"""The booking service's intake: a validated request becomes the trip saga's start event."""

from __future__ import annotations

from typing import Any


def accept(body: dict[str, Any], booking_id: str) -> dict[str, Any]:
    """Prices are not the client's to say: the hotel and flight services price their own parts."""
    return {
        "bookingId": booking_id,
        "travellerId": body["travellerId"],
        "hotelId": body["hotel"]["hotelId"],
        "nights": body["hotel"]["nights"],
        "flightId": body["flight"]["flightId"],
        "seats": body["flight"]["seats"],
    }
