"""What the HTTP layer may use of a running service, so it depends on this, not on the assembler.

`runner.serve.service.Runtime` builds the HTTP app and satisfies this protocol; the app never imports it.
"""

from __future__ import annotations

from typing import Any, Protocol

from nats.aio.client import Client

from runner.config.model import Config
from runner.engine.saga import SagaMachine
from runner.engine.versions import SagaVersions
from runner.jetstream.kv import Bucket
from runner.jetstream.publish import Publisher


class RuntimeView(Protocol):
    config: Config
    buckets: dict[str, Bucket]
    machines: dict[str, SagaMachine]
    versions: dict[str, SagaVersions]
    publisher: Publisher | None
    nc: Client | None

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...
