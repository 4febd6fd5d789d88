"""The schemas editors get: the loader's own, with `${VAR}` / `${VAR:-default}` allowed wherever a scalar goes.

The loader validates after interpolation, so `replicas: ${FLOWRUN_REPLICAS:-1}` is an integer by then and its
schema stays strict. An editor sees the text before substitution; its schema is derived from the strict one here
(never written twice) by offering an interpolation string as an alternative to every scalar that would refuse one.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from runner.config.schemas import schema

# A string holding at least one ${VAR} or ${VAR:-default} (a JSON Schema pattern matches anywhere in the string).
INTERPOLATION = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "${VAR} or ${VAR:-default}, substituted from the environment before validation",
}
_SCALARS = {"string", "integer", "number", "boolean", "null"}
# Keywords whose values are subschemas (a dict) or lists of them. `propertyNames` is left out (keys are never
# interpolated), and so is `if`: it selects a branch and must keep selecting the same one.
_SUBSCHEMA = ("additionalProperties", "items", "then", "else", "not", "contains", "unevaluatedProperties")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SUBSCHEMA_LISTS = ("oneOf", "anyOf", "allOf", "prefixItems")


@cache
def editor_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of `streams` or `flows` for editors: `${VAR}` accepted in place of any scalar."""
    strict = schema(name)
    exported = _Relaxer(strict["$defs"]).relax(copy.deepcopy(strict), top=True)
    exported["$defs"]["interpolation"] = INTERPOLATION
    return exported


class _Relaxer:
    def __init__(self, defs: dict[str, Any]):
        self.defs = defs

    def relax(self, node: Any, top: bool = False) -> Any:
        if not isinstance(node, dict):
            return node
        if self.scalar_only(node) and self.refuses_interpolation(node):
            # A $defs entry is wrapped where it is used, so that `propertyNames` refs stay strict.
            return node if top else self.with_interpolation(node)
        out = dict(node)
        for key in _SUBSCHEMA:
            if key in out:
                out[key] = self.relax(out[key])
        for key in _SUBSCHEMA_MAPS:
            if key in out:
                out[key] = {k: self.relax(v, top=key == "$defs") for k, v in out[key].items()}
        for key in _SUBSCHEMA_LISTS:
            if key in out:
                out[key] = [self.relax(v) for v in out[key]]
        return out

    def scalar_only(self, node: dict[str, Any]) -> bool:
        """True when `node` accepts scalars only (so an interpolation string can stand in for any value of it)."""
        if "$ref" in node:
            return self.scalar_only(self.defs[node["$ref"].rpartition("/")[2]])
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            return set(types) <= _SCALARS
        branches = node.get("oneOf", node.get("anyOf"))
        if branches is not None:
            return all(self.scalar_only(b) for b in branches)
        return "enum" in node or "const" in node

    def refuses_interpolation(self, node: dict[str, Any]) -> bool:
        validator = Draft202012Validator({**node, "$defs": self.defs})
        return not validator.is_valid("${VAR}") or not validator.is_valid("${VAR:-x}")

    @staticmethod
    def with_interpolation(node: dict[str, Any]) -> dict[str, Any]:
        wrapped: dict[str, Any] = {"anyOf": [node, {"$ref": "#/$defs/interpolation"}]}
        if "description" in node:  # editors show the description of the outermost schema on hover
            wrapped["description"] = node["description"]
        return wrapped
