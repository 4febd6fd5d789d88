"""Running scenario files: one embedded nats-server per run, a fresh JetStream and runtime per scenario.

Each scenario starts from nothing: every stream and bucket of the previous one is deleted, then a new Runtime
(all services of the config, in this process, HTTP on a free port, its stubs in place) provisions them again
and seeds the flows' `data:`; the scenario's `kv:` is written over that. Its steps run in order, and after each
the run waits until the system is idle (runner/testing/observe.py) before the next step or the checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js import JetStreamContext

from runner import codec
from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.jetstream.embedded import EmbeddedServer
from runner.serve.service import Runtime, RuntimeOptions
from runner.testing import clock, expectations, observe
from runner.testing.matchers import matches
from runner.testing.results import Mismatch, ScenarioResult
from runner.testing.scenario import Advance, Publish, Request, Scenario, ScenarioFileError, load_file
from runner.testing.stubs import stub_handlers

Report = Callable[[ScenarioResult], None]


def run_file(
    path: Path | str, config: Config | Path | str, env: Mapping[str, str] | None = None
) -> list[ScenarioResult]:
    """Run one scenario file against a config (or the config directory); one result per scenario."""
    return run_files([Path(path)], config, env)


def run_files(
    paths: list[Path],
    config: Config | Path | str,
    env: Mapping[str, str] | None = None,
    report: Report | None = None,
) -> list[ScenarioResult]:
    """Run scenario files in order on one embedded nats-server, calling `report` as each scenario ends.
    A config directory is loaded first (ConfigError if it is invalid)."""
    if not isinstance(config, Config):
        config = load_or_raise(config, env)
    return asyncio.run(_run_all(paths, config, report or (lambda _: None)))


async def _run_all(paths: list[Path], config: Config, report: Report) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    with EmbeddedServer() as server:
        nc = await nats.connect(server.url)
        try:
            for path in paths:
                try:
                    scenarios = load_file(path, config)
                except ScenarioFileError as exc:
                    results.append(
                        ScenarioResult(
                            path, "(the file)", error=f"cannot run it, {len(exc.problems)} problem(s):\n{exc}"
                        )
                    )
                    report(results[-1])
                    continue
                for scenario in scenarios:
                    results.append(await run_scenario(scenario, config, server.url, nc.jetstream()))
                    report(results[-1])
        finally:
            await nc.close()
    return results


async def run_scenario(scenario: Scenario, config: Config, url: str, js: JetStreamContext) -> ScenarioResult:
    result = ScenarioResult(scenario.file, scenario.name)
    started = time.monotonic()
    await _delete_streams(js)
    options = RuntimeOptions(http_port=0, handlers=stub_handlers(scenario.stubs), restart_delay=0.1)
    runtime = Runtime(config, list(config.services), url, options)
    try:
        await runtime.start()
        await _seed(runtime, scenario.kv)
        result.mismatches += await _steps(scenario, config, runtime, js)
        result.mismatches += await expectations.check(scenario.expect, config, js)
    except _StepFailed as exc:
        result.error = str(exc)
    except Exception as exc:  # the scenario could not run: report it and go on with the next one
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await runtime.stop()
    result.seconds = time.monotonic() - started
    return result


class _StepFailed(Exception):
    pass


async def _steps(scenario: Scenario, config: Config, runtime: Runtime, js: JetStreamContext) -> list[Mismatch]:
    found: list[Mismatch] = []
    urls = dict(zip([s for s in runtime.services if config.services[s].http], runtime.http_urls, strict=True))
    async with aiohttp.ClientSession() as http:
        for number, step in enumerate(scenario.steps, 1):
            if isinstance(step, Request):
                found += await _request(http, urls[step.service or next(iter(urls))], step, number)
            elif isinstance(step, Publish):
                await js.publish(step.subject, codec.dumps(step.payload), headers=step.headers or None)
            elif isinstance(step, Advance):
                assert runtime.publisher is not None
                await clock.advance(step.seconds, config, js, runtime.buckets, runtime.publisher)
            else:
                found += [m.at(f"step {number} (check)") for m in await expectations.check(step.expect, config, js)]
                continue  # looking changed nothing: no need to wait
            if not await observe.settle(js, config, scenario.timeout):
                raise _StepFailed(f"step {number}: the system was still busy after {scenario.timeout:g}s")
    return found


async def _request(http: aiohttp.ClientSession, base: str, step: Request, number: int) -> list[Mismatch]:
    kwargs: dict[str, Any] = {"headers": step.headers}
    if step.body is not None:
        kwargs["json"] = step.body
    async with http.request(step.method, base + step.path, **kwargs) as resp:
        status, text = resp.status, await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    what = f"step {number} {step.method} {step.path}"
    found = []
    if step.expect_status is not None and status != step.expect_status:
        found.append(Mismatch(f"{what}: status", step.expect_status, status))
    if step.expect_body is not None and not matches(body, step.expect_body):
        kind, want = next(iter(step.expect_body.items()))
        found.append(Mismatch(f"{what}: body ({kind})", want, body))
    return found


async def _seed(runtime: Runtime, kv: dict[str, dict[str, Any]]) -> None:
    """The scenario's KV values, over the flows' `data:`; written through the runtime's own buckets."""
    for bucket, values in kv.items():
        for key, value in values.items():
            await runtime.buckets[bucket].mutate(key, lambda _, value=value: (value, None))


async def _delete_streams(js: JetStreamContext) -> None:
    """Every stream and bucket goes: the next runtime provisions them from scratch."""
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
