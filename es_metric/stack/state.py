"""What the local stack started: one record per process (pid and identity) in
``<stack_dir>/run/stack.json``, and what ``status`` reports for a service."""
from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from .procs import identity, read_pid, still_running, stop_pid


@dataclass
class Component:
    """What ``status`` reports for one service."""

    name: str
    running: bool
    managed: bool  # started by ``esm stack up`` (and so stopped by ``down``)
    where: str
    detail: str = ""
    pid: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_dir(settings: Settings) -> Path:
    path = settings.stack_dir / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_path(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_state(settings: Settings) -> dict:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(settings: Settings, state: dict) -> None:
    _state_path(settings).write_text(json.dumps(state, indent=2))


def remember(settings: Settings, name: str, pid: int, **extra) -> None:
    """Record a started process with its identity (so that a reused pid is never signalled)."""
    state = load_state(settings)
    state[name] = {"pid": pid, "identity": identity(pid), **extra}
    _save_state(settings, state)


def record(settings: Settings, name: str) -> tuple[int | None, dict | None, Path]:
    """(pid, identity, pid file) of the process ``up`` recorded as ``name``."""
    entry = load_state(settings).get(name, {})
    pidfile = run_dir(settings) / f"{name}.pid"
    return entry.get("pid") or read_pid(pidfile), entry.get("identity"), pidfile


def managed(settings: Settings, name: str) -> bool:
    """The process recorded as ``name`` still runs (and is still that process)."""
    return still_running(*record(settings, name))


def stop_component(settings: Settings, name: str, timeout: float) -> bool:
    """Stop the process recorded as ``name`` if it is still that process; forget the record."""
    pid, ident, pidfile = record(settings, name)
    stopped = stop_pid(pid, signal.SIGTERM, timeout, recorded=ident, pidfile=pidfile, name=name)
    forget(settings, name)
    return stopped


def forget(settings: Settings, name: str) -> None:
    state = load_state(settings)
    state.pop(name, None)
    _save_state(settings, state)
