"""Fault-injection helpers: stop and restart the stack's own processes by pid."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from es_metric.config import Settings
from es_metric.stack.es_node import start_es
from es_metric.stack.procs import read_pid
from es_metric.stack.redis_server import start_redis
from es_metric.stack.state import load_state, managed, record, stop_component
from es_metric.stack.worker import supervisor_name, worker_pidfile


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


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    """The predicate's first true value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def supervisor(settings: Settings) -> dict:
    """The stack state's record of the worker's supervisor (fails when there is none alive)."""
    if not managed(settings, supervisor_name(settings)):
        pytest.fail(f"no live supervisor of the {settings.worker_queue!r} worker is recorded "
                    "(`esm stack up` starts one)", pytrace=False)
    return load_state(settings)[supervisor_name(settings)]


def worker_main(settings: Settings) -> int | None:
    """The pid of the worker's main process as recorded now (by its supervisor), while alive."""
    stem = worker_pidfile(settings).stem
    return record(settings, stem)[0] if managed(settings, stem) else None


def consumers(settings: Settings) -> list[str]:
    """Live workers consuming the stack's queue (Celery's inspect active_queues)."""
    from es_metric.ingest.celery_app import active_queues
    return [w for w, queues in active_queues(settings).items() if settings.worker_queue in queues]
