"""Running services: assembling a Runtime from the model, and the HTTP API."""
