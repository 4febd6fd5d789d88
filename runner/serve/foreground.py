"""Serve in the foreground until SIGINT or SIGTERM: a Runtime (`flowrun start`, `up --in-process`) or the service
processes of `flowrun up`.

A stop signal lets in-flight messages finish and ack before the connection drains; an embedded nats-server that
keeps dying under `flowrun up` (its ServerGuard gives up) ends the run too, as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner.jetstream.server_guard import ServerGuard
from runner.serve import heap
from runner.serve.service import ProvisionError, Runtime
from runner.serve.supervisor import Supervisor

if TYPE_CHECKING:
    from runner.serve.watch import Reloader


class ServeFailed(Exception):
    """Serving could not start (a provisioning mismatch, a port in use) or its nats-server could not be kept up."""


async def serve_until_stopped(
    runtime: Runtime,
    started: Callable[[], None],
    stopping: Callable[[], None],
    guard: ServerGuard | None = None,
    reloader: Reloader | None = None,
) -> None:
    """Start `runtime`, call `started`, wait for a stop signal (or the guard giving up), call `stopping`, stop.
    With a `reloader` (--watch), edits of the config are applied in between."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
    except (ProvisionError, OSError) as exc:  # a mismatch with --provision verify, a port in use
        await runtime.stop()
        raise ServeFailed(str(exc)) from exc
    heap.settle()
    started()
    guarding = asyncio.create_task(guard.run(stop)) if guard else None
    watching = asyncio.create_task(reloader.watch(stop)) if reloader else None
    await stop.wait()
    if guarding:
        guarding.cancel()
    if watching:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    stopping()
    await runtime.stop()
    if guard and guard.failure:
        raise ServeFailed(guard.failure)


async def supervise_until_stopped(
    supervisor: Supervisor, started: Callable[[], None], stopping: Callable[[], None], guard: ServerGuard | None = None
) -> None:
    """Spawn the service processes, call `started`, keep them (and the embedded server) running until a stop
    signal or until one cannot be kept running; then call `stopping` and stop every process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    supervisor.start()
    started()
    tasks = [asyncio.create_task(supervisor.run(stop))] + ([asyncio.create_task(guard.run(stop))] if guard else [])
    await stop.wait()
    for task in tasks:
        task.cancel()
    stopping()
    await supervisor.stop()
    failure = supervisor.failure or (guard.failure if guard else None)
    if failure:
        raise ServeFailed(failure)
