"""The service processes of `flowrun up`: spawn them, restart one that dies, stop them all together.

Each process is a `flowrun start` child. It dies with its parent even on `kill -9` (PR_SET_PDEATHSIG, as the
embedded nats-server does) and runs in its own session, so a Ctrl-C in the terminal reaches `flowrun up` alone
and each child gets exactly one SIGTERM from it: one clean, ordered shutdown instead of two racing ones.
A child that exits on its own is restarted after a short backoff, up to `RestartPolicy.max_restarts` times a
minute per process; one more death and the supervisor gives up, which stops the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runner.jetstream.embedded import die_with_parent
from runner.jetstream.server_guard import RecentRestarts, RestartPolicy
from runner.logs import event

log = logging.getLogger("flowrun.supervisor")

STOP_TIMEOUT = 15.0  # seconds a child gets to finish in-flight messages after SIGTERM, then SIGKILL


def exit_status(code: int) -> str:
    """An exit code in words: Popen reports death by a signal as its negative number."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@dataclass
class Child:
    """One process slot: the k-th process of a service; its process changes on every restart."""

    service: str
    index: int  # 1-based among the service's processes
    argv: Sequence[str]
    restarts: RecentRestarts
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.service}#{self.index}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None


class Supervisor:
    """Runs `children` with `env` (how they get credentials: never on their command line); `failure` says why
    it gave up (then the `stop` event given to `run` is set and `flowrun up` must exit non-zero)."""

    def __init__(
        self,
        commands: Sequence[tuple[str, int, Sequence[str]]],
        env: Mapping[str, str],
        policy: RestartPolicy | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ):
        self.policy = policy or RestartPolicy()
        self.children = [Child(s, i, argv, RecentRestarts(self.policy)) for s, i, argv in commands]
        self.env = dict(env)
        self.stop_timeout = stop_timeout
        self.failure: str | None = None

    def start(self) -> None:
        """Spawn every child (from the main thread: PR_SET_PDEATHSIG follows the thread that forks)."""
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,  # stdout and stderr are inherited: children log where `flowrun up` does
            start_new_session=True,  # the terminal's Ctrl-C reaches `flowrun up` only; it stops the children
            preexec_fn=die_with_parent(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every child running until `stop` is set (by a signal, or by giving up here)."""
        await asyncio.gather(*(self._keep(child, stop) for child in self.children))

    async def _keep(self, child: Child, stop: asyncio.Event) -> None:
        while not stop.is_set():
            code = child.exit_code()
            if code is None:
                await asyncio.sleep(self.policy.poll)
                continue
            if child.restarts.exhausted():
                self.failure = (
                    f"service {child.service} (process {child.name}) keeps exiting: {exit_status(code)} after "
                    f"{child.restarts.count()} restarts in {self.policy.window:g}s"
                )
                event(log, logging.ERROR, "service process cannot be kept running; stopping", reason=self.failure)
                stop.set()
                return
            delay = child.restarts.delay()
            event(
                log,
                logging.ERROR,
                "service process exited; restarting",
                process=child.name,
                pid=child.pid,
                status=exit_status(code),
                delay=f"{delay:g}s",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            child.restarts.record()
            self._spawn(child)
            event(log, logging.WARNING, "service process restarted", process=child.name, pid=child.pid)

    async def stop(self) -> None:
        """SIGTERM to every child, `stop_timeout` for all of them to finish their in-flight work, then SIGKILL."""
        running = [child for child in self.children if child.exit_code() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            child.proc.terminate()
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if all(child.exit_code() is not None for child in running):
                break
            await asyncio.sleep(0.05)
        for child in running:
            if child.exit_code() is None:
                assert child.proc is not None
                event(log, logging.WARNING, "service process did not stop in time; killed", process=child.name)
                child.proc.kill()
                child.proc.wait()
