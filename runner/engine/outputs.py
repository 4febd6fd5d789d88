"""What handling a message produces: messages to publish once its effects are stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Publish:
    """A message to publish after the instance is saved. `msg_id` makes re-publishing harmless."""

    subject: str
    data: dict[str, Any]
    msg_id: str
    headers: dict[str, str] | None = None
