"""What the local stack started: one record per process (pid and identity) in
``<stack_dir>/run/stack.json``, and what ``status`` reports for a service."""
from __future__ import annotations

import fcntl
import json
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
    restarts: int | None = None  # the worker: times its supervisor restarted it (None: unsupervised)

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


@contextmanager
def _changing_state(settings: Settings) -> Iterator[dict]:
    """The state to change, saved afterwards; one writer at a time (the CLI and the worker's
    supervisor both write it), and readers never see half a file (written aside, renamed)."""
    with open(run_dir(settings) / "stack.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load_state(settings)
        yield state
        tmp = _state_path(settings).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(_state_path(settings))


def remember(settings: Settings, name: str, pid: int | None, **extra) -> None:
    """Record a started process with its identity (so that a reused pid is never signalled)."""
    with _changing_state(settings) as state:
        state[name] = {"pid": pid, "identity": identity(pid), **extra}


def update(settings: Settings, name: str, **fields) -> None:
    """Add or change fields of the record ``name`` (pid and identity stay)."""
    with _changing_state(settings) as state:
        if name in state:
            state[name].update(fields)


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


def forget(settings: Settings, name: str, pid: int | None = None) -> None:
    """Drop the record ``name`` (with ``pid``: only while it still records that process)."""
    with _changing_state(settings) as state:
        if pid is None or state.get(name, {}).get("pid") == pid:
            state.pop(name, None)
