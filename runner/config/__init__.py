"""Configuration: YAML with positions, JSON Schemas, the typed model, cross-file checks, handler import."""
