"""The kombu adapter against the real Redis and kombu: the queue it counts is the queue kombu
counts (every priority), the tasks it finds waiting or delivered are the ones sent, and what it
gives back is delivered again."""
from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from es_metric.ingest.broker import redis_layout, restore
from es_metric.ingest.celery_app import TASK_NAME, make_app
from es_metric.ingest.jobs import redis_client
from es_metric.web.app import create_app
from tests.integration.test_metrics import scrape

pytestmark = pytest.mark.integration
PRIORITIES = (0, 4, 9)


@pytest.fixture
def idle_queue(stack):
    """Settings whose queue no worker consumes, holding one task per priority of PRIORITIES."""
    s = stack.with_(worker_queue=f"esm-idle-{uuid.uuid4().hex[:8]}")
    job = uuid.uuid4().hex[:12]
    app = make_app(s)
    try:
        for n, priority in enumerate(PRIORITIES):
            app.send_task(TASK_NAME, args=[{}, []], queue=s.worker_queue, task_id=f"{job}.{n}",
                          priority=priority)
    finally:
        app.close()
    yield s, job
    r = redis_client(s)
    r.delete(*redis_layout().queue_keys(s.worker_queue))


@contextmanager
def channel(s):
    app = make_app(s)
    try:
        with app.connection_for_write() as conn:
            yield conn.default_channel
    finally:
        app.close()


def test_the_depth_is_kombus_own_count_over_every_priority(idle_queue):
    s, job = idle_queue
    r = redis_client(s)
    layout = redis_layout()
    with channel(s) as ch:
        kombus = ch.queue_declare(s.worker_queue, passive=True).message_count
    assert layout.depth(r, s.worker_queue) == kombus == len(PRIORITIES)
    assert r.llen(s.worker_queue) < len(PRIORITIES)  # the priorities do sit in other lists
    assert sorted(layout.queued_task_ids(r, s.worker_queue)) == [f"{job}.{n}" for n in range(3)]


def test_the_queue_depth_metric_counts_every_priority(idle_queue):
    """Before the adapter the gauge read LLEN of the queue's own list: 1 of the 3 tasks here."""
    s, _job = idle_queue
    after = scrape(TestClient(create_app(s)))
    assert after[("esm_queue_depth", (("queue", s.worker_queue),))] == len(PRIORITIES)


def test_a_delivery_never_acknowledged_is_found_and_given_back(idle_queue):
    s, job = idle_queue
    r = redis_client(s)
    layout = redis_layout()
    with channel(s) as ch:
        message = ch.basic_get(s.worker_queue, no_ack=False)
        assert message is not None
        taken = message.headers["id"]
        mine = [(tag, task) for tag, task in layout.unacked(r) if task and task.startswith(job)]
        assert [task for _tag, task in mine] == [taken]
        assert layout.depth(r, s.worker_queue) == len(PRIORITIES) - 1
        restore(ch, [tag for tag, _task in mine])
    assert not [task for _tag, task in layout.unacked(r) if task and task.startswith(job)]
    assert layout.depth(r, s.worker_queue) == len(PRIORITIES)
    assert taken in set(layout.queued_task_ids(r, s.worker_queue))
