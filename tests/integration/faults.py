"""Fault-injection helpers: stop and restart the stack's own processes by pid."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from es_metric.config import Settings
from es_metric.stack.es_node import start_es
from es_metric.stack.procs import read_pid
from es_metric.stack.redis_server import start_redis
from es_metric.stack.state import managed, stop_component
from es_metric.stack.worker import worker_pidfile


def stop_managed(settings: Settings, name: str, timeout: float) -> None:
    """Stop the stack's own ``name`` (by its recorded pid and identity)."""
    if not managed(settings, name):
        pytest.fail(f"fault tests need a {name} started by `esm stack up` (none recorded alive)",
                    pytrace=False)
    assert stop_component(settings, name, timeout)


def stop_es(settings: Settings) -> None:
    stop_managed(settings, "es", 60)


def start_es_again(settings: Settings) -> None:
    start_es(settings)


def restart_redis(settings: Settings, down_seconds: float = 1.0) -> None:
    stop_managed(settings, "redis", 30)
    time.sleep(down_seconds)
    start_redis(settings)


def worker_children(settings: Settings) -> list[int]:
    main = read_pid(worker_pidfile(settings))
    path = Path(f"/proc/{main}/task/{main}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
