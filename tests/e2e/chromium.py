"""A real headless Chromium (Debian's `chromium`) loading a page, for the dashboard tests.

`--dump-dom` prints the DOM after the page's scripts ran; `--virtual-time-budget` lets its timers (the
dashboard's polling) run that long in virtual time, network waits included. It runs as a subprocess on
the test's event loop, so the system under test, in the same loop, keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromium-browser")
RUN_LIMIT = 60.0  # seconds one browser run may take


def binary() -> str:
    """The browser's path, or skip the test saying why (only where it is truly not installed)."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")


async def _run(*args: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="flowrun-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary(),
            "--headless",
            "--no-sandbox",  # the suite runs as root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), RUN_LIMIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"chromium did not finish within {RUN_LIMIT:g}s") from None
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out


async def dump_dom(url: str, budget_ms: int = 3000) -> str:
    """The page's DOM after its scripts ran for `budget_ms` of virtual time."""
    return (await _run(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)).decode("utf-8", "replace")


async def screenshot(url: str, path: Path, size: str = "1280,1000", budget_ms: int = 4000) -> None:
    await _run(
        f"--virtual-time-budget={budget_ms}", f"--window-size={size}", "--hide-scrollbars", f"--screenshot={path}", url
    )
