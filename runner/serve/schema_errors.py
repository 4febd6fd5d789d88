"""A request body's first JSON Schema violation as a short message and the field it concerns.

Messages use the schema's own words where it has them: a failed `pattern` quotes the property's
`description` (else the pattern), so an API's errors say what its YAML says, not what the code assumed.
"""

from __future__ import annotations

from typing import Any

from runner.serve.http_guard import clip


def field_path(path: Any) -> str:
    """`items[0].price` for the JSON path ("items", 0, "price")."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{clip(part)}" if out else clip(part))
    return out


def schema_error(err: Any) -> tuple[str, str]:
    """(message, field) for a jsonschema ValidationError; a missing property names that property."""
    path = list(err.absolute_path)
    if err.validator == "required":
        missing = next((p for p in err.validator_value if p not in err.instance), None)
        if missing is not None:
            return f"{field_path([*path, missing])} is required", field_path([*path, missing])
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        name = field_path([*path, extra[0]]) if extra else field_path(path)
        return f"unknown field {name}", name
    name = field_path(path) or "body"
    if err.validator == "pattern":
        description = err.schema.get("description")
        if description:
            return f"{name} is invalid: {description}", name
        return f"{name} must match the pattern {err.validator_value}", name
    if err.validator == "minItems":
        return f"{name} must not be empty", name
    if err.validator == "maxItems":
        return f"{name} must have at most {err.validator_value} items", name
    if err.validator in ("minimum", "exclusiveMinimum") and isinstance(err.instance, (int, float)):
        return f"{name} must be at least {err.validator_value}", name
    if err.validator in ("maximum", "exclusiveMaximum") and isinstance(err.instance, (int, float)):
        return f"{name} must be at most {err.validator_value}", name
    if err.validator == "type" and err.validator_value == "integer":
        return f"{name} must be an integer", name
    if err.validator == "type":
        return f"{name} must be of type {err.validator_value}", name
    return f"{name}: {clip(err.message)}", name  # jsonschema's messages quote the value: clipped
