"""The JSON Schemas of streams.yaml and flows/*.yaml: the shipped files, with each stream's and KV bucket's
properties filled in from the options declared in runner/config/streams.py (so no option is written twice)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from runner.config.options import json_schema
from runner.config.streams import BucketSpec, StreamSpec

# schema name → ($defs entry, the spec whose options are its properties)
_DECLARED = {"streams": ("stream", StreamSpec), "flows": ("bucket", BucketSpec)}


@cache
def schema(name: str) -> dict[str, Any]:
    """The complete JSON Schema for `streams` or `flows` (what `flowrun schema` prints and the loader checks)."""
    shipped = json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8"))
    definition, spec = _DECLARED[name]
    shipped["$defs"][definition].update(json_schema(spec))
    return shipped
