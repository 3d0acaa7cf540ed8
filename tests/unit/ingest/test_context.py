"""The worker context: one per process, and two contexts share nothing."""
from __future__ import annotations

import os
import threading

from es_metric.config import Settings
from es_metric.ingest import context
from es_metric.ingest.context import WorkerContext, current, init_process


def test_two_contexts_share_no_state():
    a, b = WorkerContext(Settings(batch_size=4)), WorkerContext(Settings(batch_size=8))
    try:
        assert a.settings.batch_size == 4 and b.settings.batch_size == 8
        assert a.http() is a.http() and a.http() is not b.http()
        assert a.decode_pool(2) is a.decode_pool(2) and a.decode_pool(2) is not b.decode_pool(2)
        assert a.lock is not b.lock and a.batch is not b.batch
        assert a.metrics() is a.metrics() and a.metrics().embedded is not b.metrics().embedded
        a.batch.add(0.5)
        assert b.batch.take() == [] and a.batch.take() == [0.5] and a.batch.take() == []
        with a.host_slot("h", 1):
            assert a.hosts_in_flight() == 1 and b.hosts_in_flight() == 0
            entered = threading.Event()

            def other() -> None:  # b's gate for the same host is b's own: not held by a
                with b.host_slot("h", 1):
                    entered.set()
            t = threading.Thread(target=other)
            t.start()
            assert entered.wait(10)
            t.join(10)
        assert a.hosts_in_flight() == 0
    finally:
        for ctx in (a, b):
            ctx.decode_pool(2).shutdown()
            ctx.http().close()


def test_one_context_per_process_built_once(monkeypatch):
    first = init_process(Settings(batch_size=3))
    assert current() is first and current() is first and current().settings.batch_size == 3
    child_pid = os.getpid() + 1
    monkeypatch.setattr(context.os, "getpid", lambda: child_pid)  # as in a forked child
    child = current()
    assert child is not first and current() is child and child.batch is not first.batch


def test_the_settings_come_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("ESM_BATCH_SIZE", "5")
    assert WorkerContext().settings.batch_size == 5
