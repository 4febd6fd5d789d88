"""`--watch`: reload the configuration when streams.yaml, flows/ or the handler code in the config root changes.

A burst of saves is one reload (debounced). An edit that does not load — a YAML error, a schema or
cross-file problem, a handler that fails to import — is logged with every problem at its file:line and
the running configuration stays, handler modules included. One that loads is applied live by
`Runtime.reload`. Handler packages (those the YAML's dotted paths name, in the config root) are forgotten
before loading after a code edit, so the loader's import check and the new routes both get the edited code.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

from watchfiles import Change, awatch

from runner.config.loader import load
from runner.config.model import Config
from runner.logs import event
from runner.serve.service import Runtime

log = logging.getLogger("flowrun.reload")

QUIET_MS = 300  # a reload waits for this long without further changes …
BURST_MS = 3000  # … but no longer than this after the first one
ENGINE = __name__.partition(".")[0]  # the runner's own package, even when it lies in the config root


def handler_packages(config: Config) -> set[str]:
    """The top-level packages the YAML's dotted paths (handler, accept, view) name: the code a reload re-imports."""
    paths = [binding.handler for service in config.services.values() for binding in service.bindings]
    for service in config.services.values():
        resources = service.http.resources.values() if service.http else ()
        paths += [path for r in resources for path in (r.accept, r.view) if path]
    return {path.partition(".")[0] for path in paths} - {ENGINE}


def handler_modules(config: Config) -> dict[str, ModuleType]:
    """The imported modules of those packages that lie in the config root, by name."""
    packages = handler_packages(config)
    return {
        name: module
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] in packages and _under(getattr(module, "__file__", None), config.root)
    }


def _under(path: str | None, root: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(root)


def watched_dirs(config: Config) -> list[Path]:
    """The root itself (streams.yaml), flows/, and every directory of the imported handler packages.

    Watched one by one, not recursively: a config root may hold a virtualenv or a JetStream store.
    """
    root = config.root
    dirs = {root, root / "flows"}
    for module in handler_modules(config).values():
        dirs.add(Path(module.__file__ or root).resolve().parent)
    return sorted(d for d in dirs if d.is_dir() and "__pycache__" not in d.parts)


def config_files(root: Path) -> Callable[[Change, str], bool]:
    """The changes that matter: streams.yaml, flows/*.yaml|yml, and Python sources."""

    def matters(_: Change, path: str) -> bool:
        p = Path(path)
        if p.suffix == ".py":
            return "__pycache__" not in p.parts
        return p == root / "streams.yaml" or (p.parent == root / "flows" and p.suffix in (".yaml", ".yml"))

    return matters


def forget(modules: dict[str, ModuleType]) -> None:
    """Drop the modules and their bytecode caches, so the next import reads the edited sources (a .pyc is
    checked by the source's mtime in whole seconds and its size: a quick same-size edit would be missed)."""
    for name, module in modules.items():
        del sys.modules[name]
        if module.__file__ and module.__file__.endswith(".py"):
            Path(importlib.util.cache_from_source(module.__file__)).unlink(missing_ok=True)
    importlib.invalidate_caches()


class Reloader:
    """Applies edits to a running `Runtime`, one (debounced) batch of changed files at a time."""

    def __init__(self, runtime: Runtime, env: Mapping[str, str] | None = None):
        self.runtime = runtime
        self.env = env
        self.root = runtime.config.root
        self.code_pending = False  # a code edit came with a rejected reload: the next one must import it

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload on every change under the config root until `stop` is set."""
        async for changes in awatch(
            *watched_dirs(self.runtime.config),
            watch_filter=config_files(self.root),
            step=QUIET_MS,
            debounce=BURST_MS,
            stop_event=stop,
            recursive=False,
        ):
            await self.reload([path for _, path in changes])

    async def reload(self, changed: list[str]) -> bool:
        """Load the config again and apply it, or keep the running one; logs one line either way."""
        files = " ".join(sorted({_display(p, self.root) for p in changed}))
        code_changed = self.code_pending or any(p.endswith(".py") for p in changed)
        previous = handler_modules(self.runtime.config) if code_changed else {}
        forget(previous)
        config, problems = load(self.root, self.env)
        if problems or config is None:
            for name in handler_modules(self.runtime.config):  # what the failed load imported gives way
                del sys.modules[name]
            sys.modules.update(previous)
            self.code_pending = code_changed
            event(
                log,
                logging.ERROR,
                "config reload rejected; still running the previous configuration",
                files=files,
                problems=" | ".join(str(p) for p in problems),
            )
            return False
        self.code_pending = False
        try:
            changes = await self.runtime.reload(config, code_changed)
        except Exception as exc:  # NATS unavailable while provisioning, a refused change: logged, nothing retried
            event(log, logging.ERROR, "config reload failed", files=files, error=repr(exc))
            return False
        event(log, logging.INFO, "config reloaded", files=files, changes="; ".join(changes) or "none")
        return True


def _display(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else path
