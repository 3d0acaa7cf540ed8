"""What a worker process keeps between tasks, in one object built once per process.

A Celery prefork child builds its context on ``worker_process_init`` (``init_process``); any
other process (the API fetching a query URL, a benchmark) on first use. Everything is made
lazily and belongs to the process that made it: a forked child never uses its parent's
clients, threads or locks, because ``current()`` builds a new context when the pid changed.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import httpx

from ..config import Settings
from .promfiles import WorkerMetrics

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = ["BatchClock", "WorkerContext", "current", "init_process"]
T = TypeVar("T")


@dataclass
class _HostSlot:
    gate: threading.BoundedSemaphore
    users: int = 0  # fetches holding or waiting for the gate


@dataclass
class BatchClock:
    """When each running batch began (by task id), and the image fetch times of the running
    batch (the decode threads add, the batch's end takes)."""

    started: dict[str, float] = field(default_factory=dict)
    fetches: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, task_id: str) -> None:
        with self.lock:
            self.started[task_id] = time.perf_counter()
            self.fetches.clear()

    def end(self, task_id: str) -> tuple[float, list[float]] | None:
        """(seconds since the batch began, its fetch times), or None for a batch not started."""
        with self.lock:
            began = self.started.pop(task_id, None)
        return None if began is None else (time.perf_counter() - began, self.take())

    def add(self, seconds: float) -> None:
        with self.lock:
            self.fetches.append(seconds)

    def take(self) -> list[float]:
        """The times added since the last take, and a clean slate."""
        with self.lock:
            taken, self.fetches = self.fetches, []
        return taken


@dataclass
class WorkerContext:
    """One process's settings, clients, decode threads, per-host fetch gates, batch clock and
    worker metrics."""

    settings_: Settings | None = None
    pid: int = field(default_factory=lambda: os.getpid())
    batch: BatchClock = field(default_factory=BatchClock)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _es: "Elasticsearch | None" = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_threads: int = 0
    _host_slots: dict[str, _HostSlot] = field(default_factory=dict, repr=False)
    _metrics: WorkerMetrics | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The settings given, else those of the environment (read once)."""
        with self.lock:
            if self.settings_ is None:
                self.settings_ = Settings.from_env()
            return self.settings_

    def _once(self, name: str, make: Callable[[], T]) -> T:
        """The attribute ``name``, made by ``make`` the first time."""
        with self.lock:
            if getattr(self, name) is None:
                setattr(self, name, make())
            made: T = getattr(self, name)
            return made

    def es(self) -> "Elasticsearch":
        """The process's Elasticsearch client."""
        from ..index.client import make_client

        settings = self.settings
        return self._once("_es", lambda: make_client(settings))

    def http(self) -> httpx.Client:
        """The process's HTTP client for image URLs (pools connections); never a proxy from the
        environment, never following redirects by itself (each hop is checked by fetch)."""
        return self._once("_http", lambda: httpx.Client(
            trust_env=False, follow_redirects=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "es-metric"}))

    def metrics(self) -> WorkerMetrics:
        """The process's worker counters and histograms (made on first use: in a prefork child,
        after the worker's main process pointed prometheus_client at the metrics' folder)."""
        return self._once("_metrics", WorkerMetrics)

    def decode_pool(self, threads: int) -> ThreadPoolExecutor:
        """The process's decode threads, kept between batches (no pool start-up per batch)."""
        with self.lock:
            if self._pool is None or self._pool_threads != threads:
                self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="esm-decode")
                self._pool_threads = threads
            return self._pool

    @contextmanager
    def host_slot(self, host: str, limit: int) -> Iterator[None]:
        """At most ``limit`` fetches at a time to ``host`` in this process. A host's entry lives
        while a fetch holds or waits for it, so the table never outgrows the fetches in flight."""
        key = f"{host}/{limit}"
        with self.lock:
            slot = self._host_slots.setdefault(key, _HostSlot(threading.BoundedSemaphore(limit)))
            slot.users += 1
        try:
            with slot.gate:
                yield
        finally:
            with self.lock:
                slot.users -= 1
                if not slot.users:
                    del self._host_slots[key]

    def hosts_in_flight(self) -> int:
        with self.lock:
            return len(self._host_slots)


_process: list[WorkerContext] = []  # the one context of this process (at most one item)
_guard = threading.Lock()


def init_process(settings: Settings | None = None) -> WorkerContext:
    """A fresh context for this process (Celery's ``worker_process_init``)."""
    with _guard:
        _process[:] = [WorkerContext(settings)]
        return _process[0]


def current() -> WorkerContext:
    """This process's context, built on first use (and again in a forked child)."""
    with _guard:
        if not _process or _process[0].pid != os.getpid():
            _process[:] = [WorkerContext()]
        return _process[0]
