"""The engine: dispatch, the saga interpreter, retries, dead letters, payload validation, starting instances."""
