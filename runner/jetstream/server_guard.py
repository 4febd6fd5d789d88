"""Keep `flowrun up`'s embedded nats-server alive: restart it when it dies, give up loudly when it keeps dying.

Without this, `flowrun up` outlived its server and answered 503 forever. A restart reuses the port, the store
and the store lock, so clients reconnect to the same address and find the same streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from runner.jetstream.embedded import EmbeddedServer
from runner.logs import event

log = logging.getLogger("flowrun.embedded")


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # within `window` seconds; one more death and flowrun exits
    window: float = 60.0
    first_delay: float = 0.25  # doubles per recent restart, up to max_delay
    max_delay: float = 4.0
    ready_timeout: float = 15.0
    poll: float = 0.2


class RecentRestarts:
    """The restart budget of one supervised process: how many restarts in the last `window`, and the next delay."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self._times: deque[float] = deque()

    def count(self) -> int:
        while self._times and time.monotonic() - self._times[0] > self.policy.window:
            self._times.popleft()
        return len(self._times)

    def exhausted(self) -> bool:
        """One more death would be restart number max_restarts + 1 within the window: time to give up."""
        return self.count() >= self.policy.max_restarts

    def delay(self) -> float:
        """Backoff before the next restart: doubles per recent restart, up to max_delay."""
        return min(self.policy.max_delay, self.policy.first_delay * 2 ** self.count())

    def record(self) -> None:
        self._times.append(time.monotonic())


class ServerGuard:
    """Watches the child; `failure` says why it gave up (then `stop` is set and flowrun must exit non-zero)."""

    def __init__(self, server: EmbeddedServer, policy: RestartPolicy | None = None):
        self.server = server
        self.policy = policy or RestartPolicy()
        self.failure: str | None = None
        self.restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        recent = RecentRestarts(self.policy)
        while not stop.is_set():
            code = self.server.exit_code()
            if code is None:
                await asyncio.sleep(self.policy.poll)
                continue
            if recent.exhausted():
                self._give_up(
                    stop, f"nats-server exited (code {code}) after {recent.count()} restarts in {self.policy.window:g}s"
                )
                return
            delay = recent.delay()
            event(log, logging.ERROR, "nats-server exited; restarting", code=code, delay=f"{delay:g}s")
            await asyncio.sleep(delay)
            recent.record()
            try:
                self.server.spawn()  # from the event loop's (main) thread: see embedded.die_with_parent
            except (OSError, RuntimeError) as exc:
                self._give_up(stop, f"cannot restart nats-server: {exc}")
                return
            if await self._ready():
                self.restarts += 1
                event(log, logging.WARNING, "nats-server restarted", pid=self.server.pid, port=self.server.port)
            else:
                self.server.kill()  # hung on startup: counts as one more death

    async def _ready(self) -> bool:
        deadline = time.monotonic() + self.policy.ready_timeout
        while time.monotonic() < deadline:
            if self.server.exit_code() is not None:
                return False
            if self.server.listening():
                return True
            await asyncio.sleep(0.05)
        return False

    def _give_up(self, stop: asyncio.Event, reason: str) -> None:
        self.failure = f"{reason} (see {self.server.log_file})"
        event(log, logging.ERROR, "nats-server cannot be kept running; stopping", reason=self.failure)
        stop.set()
