"""Handlers of the travel booking example: business logic only, no NATS in sight."""
