"""`flowrun saga show` as text: the instance's facts, its data, then its timeline (`temporal workflow show` style)."""

from __future__ import annotations

import json
from typing import Any


def human_duration(seconds: float) -> str:
    """12ms, 1.5s, 2m03s, 1h02m: short enough for a column."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def render_instance(instance: dict[str, Any]) -> str:
    lines = [
        f"Saga       {instance['saga']}",
        f"Id         {instance['id']}",
        f"State      {instance['state']}" + (f" ({instance['reason']})" if instance.get("reason") else ""),
        f"Version    {instance.get('version') or '-'}",
        f"Started    {instance['created']}",
        f"Updated    {instance['updated']} (after {human_duration(instance['duration'])})",
    ]
    if instance.get("deadline"):
        lines.append(f"Times out  {instance['deadline']['due']} (in state {instance['deadline']['state']})")
    if instance["steps"]:
        undone = set(instance["compensated"])
        steps = ", ".join(f"{s} (undone)" if s in undone else s for s in instance["steps"])
        lines.append(f"Steps      {steps}")
    lines += ["", "Data", _indent(json.dumps(instance["data"], indent=2))]
    if instance["gathered"]:
        lines += ["Gathered", _indent(json.dumps(instance["gathered"], indent=2))]
    lines += ["", "Timeline", f"  {'TIME':<24} {'+START':>8} {'+PREV':>8}  EVENT"]
    for event in instance["timeline"]:
        arrow = "→" if event["direction"] == "out" else "←"
        note = f"  (ignored: {event['ignored']})" if event.get("ignored") else ""
        lines.append(
            f"  {event['time']:<24} {human_duration(event['since_start']):>8} "
            f"{human_duration(event['since_previous']):>8}  {arrow} {event['subject']}{note}"
        )
    lines.append("  (← consumed, → published)")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
