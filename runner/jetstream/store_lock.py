"""An exclusive lock on a JetStream store directory: nats-server does not lock its store itself.

Two nats-servers on one store corrupt it silently, so whoever starts a server on a store takes this lock first.
The *parent* (flowrun) holds it, not nats-server, for two reasons: it must be taken before the child exists (the
refusal has to happen before anything touches the store), and it must outlive a crashed child while flowrun restarts
it on the same store. The child inherits the open lock (see `fd`), so the store stays locked until both are gone;
the kernel drops an flock when the last holder dies, even by SIGKILL, so a lock is never left stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "flowrun.lock"


class StoreInUseError(RuntimeError):
    pass


class StoreLock:
    def __init__(self, store_dir: Path):
        self.path = Path(store_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreInUseError(
                f"the store {self.path.parent} is in use (lock {self.path} held by pid {holder}): "
                "stop that flowrun first, or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None
