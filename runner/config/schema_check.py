"""JSON Schema problems of one YAML document, worded for people and located at file:line.

jsonschema's own messages are exact but not always helpful ("'5x' is not valid under any of the given
schemas"); durations, sizes and unknown keys get a sentence that says what to write instead.
"""

from __future__ import annotations

from jsonschema import Draft202012Validator

from runner.config.schemas import schema
from runner.config.suggest import did_you_mean
from runner.config.yamlsrc import Document, Problem


def schema_problems(doc: Document, name: str) -> list[Problem]:
    validator = Draft202012Validator(schema(name))
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            known = error.schema.get("properties", {})
            for key in extra:
                problems.append(doc.problem((*path, key), f"unknown key {key!r}{did_you_mean(str(key), known)}"))
            continue
        if error.validator == "oneOf" and error.context:
            patterns = " ".join(str(sub.get("pattern", "")) for sub in error.validator_value)
            if "(ms|s|m|h|d)" in patterns:
                message = f"{error.instance!r} is not a duration (use e.g. 250ms, 30s, 5m, 2h, 90d)"
            elif "i?B" in patterns:
                message = f"{error.instance!r} is not a size (use e.g. 512KiB, 1GiB, or a number of bytes)"
            else:
                message = f"{error.instance!r} is not valid here: " + "; ".join(
                    sorted({c.message for c in error.context})
                )
        problems.append(doc.problem(path, message))
    return problems
