"""Dotted paths in the YAML (`handler:`, `accept:`, `view:`): where they may point and what they must be.

A path names code the runner will call with message or request data, so the YAML must not be able to
name arbitrary callables: `view: builtins.eval` would evaluate every URL key. Only modules of packages
in the config root (e.g. `handlers.`) are allowed, plus the packages listed under `allow_modules:`.
The check runs on the name *before* importing, since importing a module already runs its code.
Each role has a signature the runner relies on, checked here so a mismatch fails `validate`, not a request.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.config.suggest import did_you_mean


@dataclass(frozen=True)
class Role:
    """How the runner calls a function named in the YAML."""

    name: str
    shape: str  # as written in error messages
    is_async: bool
    params: tuple[str, ...]


HANDLER = Role("handler", "async def fn(msg, ctx) -> Outcome", True, ("msg", "ctx"))
ACCEPT = Role("accept", "def fn(body, id) -> dict", False, ("body", "id"))
VIEW = Role("view", "def fn(key, value) -> dict", False, ("key", "value"))


def local_packages(root: Path) -> set[str]:
    """Top-level packages and modules in the config root: the project's own code."""
    packages = {p.parent.name for p in root.glob("*/__init__.py")}
    return {name for name in packages | {p.stem for p in root.glob("*.py")} if name.isidentifier()}


def allowed(dotted: str, root: Path, allow_modules: Iterable[str]) -> bool:
    module = dotted.rpartition(".")[0]
    if module.partition(".")[0] in local_packages(root):
        return True
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allow_modules)


def problem(root: Path, dotted: str, role: Role, allow_modules: Iterable[str] = ()) -> str | None:
    """Why `dotted` cannot serve as `role`, or None if it can."""
    if not allowed(dotted, root, allow_modules):
        module = dotted.rpartition(".")[0]
        return (
            f"{role.name} {dotted!r} is outside the config root: name a function in one of its packages "
            f"(e.g. handlers.), or list {module.partition('.')[0]!r} under allow_modules: if you trust it"
        )
    try:
        target = resolve(root, dotted)
    except (ImportError, AttributeError, TypeError) as exc:
        return str(exc)
    return signature_problem(target, dotted, role)


def signature_problem(target: Callable[..., Any], dotted: str, role: Role) -> str | None:
    if role.is_async and not inspect.iscoroutinefunction(target):
        return f"{role.name} {dotted!r} must be an 'async def' function: {role.shape}"
    if not inspect.isfunction(target) or (not role.is_async and inspect.iscoroutinefunction(target)):
        return f"{role.name} {dotted!r} must be a plain Python function: {role.shape}"
    try:
        inspect.signature(target).bind(*role.params)
    except TypeError:
        return f"{role.name} {dotted!r} takes {inspect.signature(target)}; the runner calls {role.shape}"
    return None


def resolve(root: Path, dotted: str) -> Any:
    """Import `package.module.function`, looking in the config root first."""
    module_name, _, attr = dotted.rpartition(".")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r} for {dotted!r}: {exc}") from exc
    except Exception as exc:  # a handler module that fails at import time is a config problem too
        raise ImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, attr):
        hint = did_you_mean(attr, _public_functions(module))
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r} (for {dotted!r}){hint}")
    target = getattr(module, attr)
    if not callable(target):
        raise TypeError(f"{dotted!r} is not callable")
    return target


def _public_functions(module: Any) -> list[str]:
    """Names of the functions a module defines itself (not those it imports), for "did you mean"."""
    return [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    ]
