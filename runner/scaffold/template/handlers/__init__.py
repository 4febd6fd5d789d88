"""This project's handlers: business logic only, no NATS (flows/ binds them to subjects)."""
