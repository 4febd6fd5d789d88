"""Compose a greeting. Plain data in, an outcome out: `emits:` in flows/hello.yaml maps it to a subject."""

from __future__ import annotations

from typing import Any

from runner.handler import Context, Outcome, emit


async def compose(msg: dict[str, Any], ctx: Context) -> Outcome:
    return emit("composed", text=f"{ctx.settings['greeting']}, {msg['name']}!")
