"""Which definition interprets an instance: the one it started on.

Changing a saga (renaming a state, adding a step) must not strand the instances in flight: each
instance records the version of the definition it started on (runner/engine/saga.py), and its events
and timeouts are applied by a machine of that version. New instances, and instances stored before
versions existed, use the current definition; an older one is read once from the definitions bucket
(runner/jetstream/saga_store.py) and kept.

The machine is picked inside a KV compare-and-set, which cannot wait for a read: a version not loaded
yet raises `VersionNotLoaded`, and `run` loads it and applies the mutation again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from runner.config.model import SagaSpec
from runner.engine.saga import SagaMachine
from runner.errors import FatalError

T = TypeVar("T")

Loader = Callable[[str, str], Awaitable[SagaSpec | None]]
"""(saga, version) → its stored definition, or None."""


class VersionNotLoaded(Exception):
    def __init__(self, version: str):
        super().__init__(f"saga version {version} not loaded yet")
        self.version = version


class UnknownVersion(FatalError):
    """An instance names a version whose definition is not stored: no machine can interpret it."""


class SagaVersions:
    """The machines of one saga's versions: the current one, and older ones loaded on demand."""

    def __init__(self, current: SagaMachine, load: Loader):
        self.current = current
        self._load = load
        self._machines: dict[str, SagaMachine] = {current.version: current}

    def machine_for(self, record: dict[str, Any] | None) -> SagaMachine:
        """The machine of the record's version; raises VersionNotLoaded for one not read yet."""
        version = (record or {}).get("version")
        if version is None:
            return self.current  # a new instance, or one stored before versions were recorded
        machine = self._machines.get(version)
        if machine is None:
            raise VersionNotLoaded(version)
        return machine

    async def machine_of(self, record: dict[str, Any] | None) -> SagaMachine:
        """`machine_for`, loading the record's version if need be (outside a compare-and-set)."""
        try:
            return self.machine_for(record)
        except VersionNotLoaded as missing:
            return await self.load(missing.version)

    async def run(self, mutate: Callable[[], Awaitable[T]]) -> T:
        """Run a KV mutation that picks its machine with `machine_for`, loading what it needs first.
        An instance's version never changes, so one load per missing version suffices."""
        try:
            return await mutate()
        except VersionNotLoaded as missing:
            await self.load(missing.version)
        return await mutate()

    async def load(self, version: str) -> SagaMachine:
        name = self.current.spec.name
        spec = await self._load(name, version)
        if spec is None:
            raise UnknownVersion(f"saga {name} version {version} is not stored: its instances cannot be interpreted")
        machine = self._machines[version] = SagaMachine(spec)
        return machine
