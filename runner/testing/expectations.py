"""A scenario's `expect:` checked against what the run left behind; each miss is a Mismatch (expected vs got)."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from runner.config.model import Config
from runner.testing import observe
from runner.testing.matchers import matches
from runner.testing.results import MISSING, Mismatch
from runner.testing.scenario import DeadLetterExpectation, Expectations, SagaExpectation


async def check(expect: Expectations, config: Config, js: JetStreamContext) -> list[Mismatch]:
    found: list[Mismatch] = []
    for expected in expect.sagas:
        found += await _saga(expected, config, js)
    if expect.emitted is not None:
        got = await observe.emitted(js, config)
        if got != expect.emitted:
            found.append(Mismatch("emitted subjects, in order", expect.emitted, got))
    for bucket, keys in expect.kv.items():
        for key, matcher in keys.items():
            value = await observe.kv_value(js, bucket, key)
            if value is MISSING or not matches(value, matcher):
                kind, want = next(iter(matcher.items()))
                found.append(Mismatch(f"kv {bucket}/{key} ({kind})", want, value))
    if expect.dead_letters is not None:
        found += _dead_letters(expect.dead_letters, await observe.dead_letters(js, config))
    return found


async def _saga(expected: SagaExpectation, config: Config, js: JetStreamContext) -> list[Mismatch]:
    bucket = config.sagas[expected.saga].bucket
    key = expected.key
    if key is None:
        keys = await observe.kv_keys(js, bucket)
        if len(keys) != 1:
            what = f"saga {expected.saga}: instances (give key: to pick one)"
            return [Mismatch(what, "exactly one", sorted(keys))]
        key = keys[0]
    record = await observe.kv_value(js, bucket, key)
    what = f"saga {expected.saga} {key}"
    if record is MISSING:
        return [Mismatch(what, "an instance", MISSING)]
    found = []
    if expected.state is not None and record.get("state") != expected.state:
        found.append(Mismatch(f"{what}: state", expected.state, record.get("state")))
    reason = record.get("reason")
    if expected.reason_given and reason != expected.reason:
        found.append(Mismatch(f"{what}: reason", expected.reason, reason))
    if expected.reason_contains is not None and expected.reason_contains not in (reason or ""):
        found.append(Mismatch(f"{what}: reason contains", expected.reason_contains, reason))
    return found


def _dead_letters(expected: list[DeadLetterExpectation], got: list[observe.DeadLetter]) -> list[Mismatch]:
    shown = [{"subject": d.subject, "service": d.service, "error": d.error} for d in got]
    if len(got) != len(expected):
        return [Mismatch(f"dead letters: {len(expected)} expected, {len(got)} found", _wanted(expected), shown)]
    found = []
    for i, (want, letter) in enumerate(zip(expected, got, strict=True)):
        ok = (
            (want.subject is None or want.subject == letter.subject)
            and (want.service is None or want.service == letter.service)
            and (want.error_contains is None or want.error_contains in letter.error)
        )
        if not ok:
            found.append(Mismatch(f"dead letter {i + 1}", _wanted([want])[0], shown[i]))
    return found


def _wanted(expected: list[DeadLetterExpectation]) -> list[dict[str, Any]]:
    return [{k: v for k, v in vars(e).items() if v is not None} for e in expected]
