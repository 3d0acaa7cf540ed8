"""Every job ends: permanent worker failures fail each image with a reason, lost tasks raise
the stall error, and a dead job never blocks a reindex."""
from __future__ import annotations

import shutil
import time
import uuid

import pytest
import redis

from es_metric.errors import EsmError
from es_metric.index.indices import count, index_info
from es_metric.ingest.enqueue import TASK_NAME, Job, enqueue, job_spec, wait
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.sources import folder_items
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration


def _reasons(index: str) -> set[str]:
    return {r["reason"] for r in esm_json("failures", index)["failures"]}


def test_model_file_deleted_after_mapping_create_fails_every_image(index_name, tiny_model, tiny_data,
                                                                    tmp_path):
    model = tmp_path / "gone.pt"
    shutil.copy(tiny_model, model)
    esm("mapping", "create", index_name, "--model", model)
    model.unlink()
    summary = esm_json("ingest", index_name, tiny_data / "class_2", "--timeout", "120")
    assert (summary["indexed"], summary["failed"]) == (0, 16)
    rows = esm_json("failures", index_name)["failures"]
    assert len(rows) == 16 and _reasons(index_name) == {"model_error"}
    assert "does not exist" in rows[0]["message"]


def test_model_file_replaced_by_another_model_fails_every_image(index_name, tiny_model, tiny_model_l2,
                                                                 tiny_data, tmp_path):
    model = tmp_path / "swapped.pt"
    shutil.copy(tiny_model, model)
    esm("mapping", "create", index_name, "--model", model)
    shutil.copy(tiny_model_l2, model)
    summary = esm_json("ingest", index_name, tiny_data / "class_3", "--timeout", "120")
    assert (summary["indexed"], summary["failed"]) == (0, 16)
    assert _reasons(index_name) == {"mapping_mismatch"}


def test_retries_exhausted_fail_every_image_with_the_reason(stack, es, index_name, tiny_model, tiny_data):
    """What the task shell does once a transient error outlived its retries."""
    from elasticsearch import ConnectionError as EsConnectionError

    from es_metric.ingest.outcomes import fail_batch

    esm("mapping", "create", index_name, "--model", tiny_model)
    items = list(folder_items(tiny_data / "class_4"))[:5]
    spec = job_spec(index_info(es, index_name), index_name, uuid.uuid4().hex[:16], "index")
    JobProgress(stack, spec["job_id"]).start(5, index=spec["index"], alias=index_name)
    result = fail_batch(stack, es, spec, items, EsConnectionError("connection refused"))
    assert (result["indexed"], result["failed"]) == (0, 5)
    assert JobProgress(stack, spec["job_id"]).counts() == (5, 0, 5)
    assert _reasons(index_name) == {"retries_exhausted"}


@pytest.fixture
def orphan_queue(stack):
    """Settings whose queue no worker consumes (tasks sent there wait, or get lost)."""
    s = stack.with_(worker_queue=f"esm-orphan-{uuid.uuid4().hex[:8]}", stall_seconds=2)
    yield s
    r = redis.Redis.from_url(s.redis_url)
    r.delete(s.worker_queue)


def test_queued_tasks_without_a_worker_end_the_wait_with_the_reason(orphan_queue, es, index_name,
                                                                  tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    job = enqueue(orphan_queue, es, index_name, list(folder_items(tiny_data / "class_5")))
    t0 = time.monotonic()
    with pytest.raises(EsmError, match="wait in the queue .*but no live worker consumes") as info:
        wait(orphan_queue, job, timeout=60)
    assert "esm stack up" in str(info.value) and time.monotonic() - t0 < 60


@pytest.fixture
def consumer_cancelled(stack):
    """The stack's worker alive and answering, but told to stop consuming its queue (Celery's
    ``cancel_consumer``, as an operator draining it would, or as a worker whose consumer died on
    a broker restart is); the tasks queued meanwhile are dropped and the queue consumed again."""
    from es_metric.ingest.celery_app import make_app, worker_ping

    workers = worker_ping(stack)
    assert workers, f"no worker answers on {stack.worker_queue!r}"
    app = make_app(stack)

    def consuming() -> set[str]:
        replies = app.control.inspect(destination=workers, timeout=5).active_queues() or {}
        return {w for w, queues in replies.items() if any(q["name"] == stack.worker_queue for q in queues)}

    def resume() -> None:
        app.control.add_consumer(stack.worker_queue, destination=workers, reply=True, timeout=10)

    try:
        app.control.cancel_consumer(stack.worker_queue, destination=workers, reply=True, timeout=10)
        assert not consuming()
        yield workers, resume
    finally:
        redis.Redis.from_url(stack.redis_url).delete(stack.worker_queue)  # this test's tasks only
        resume()
        assert consuming() == set(workers)
        app.close()


@pytest.mark.parametrize("case", ["a queue no worker consumes", "a worker told to cancel its queue"])
def test_ingest_wait_ends_when_no_live_worker_consumes_the_queue(case, request, stack, es, index_name,
                                                                 tiny_model, tiny_data, monkeypatch):
    """`esm ingest --wait`: tasks queued, and no live worker consumes their queue for the stall
    timeout, while workers answer (the stack's, consuming its own queue; or one that answers to
    the queue's name but was told to stop consuming it: the code before this check took it for
    a consumer and waited forever). The wait ends with one error line naming the queue and the
    workers that answered; `--timeout` only bounds the test."""
    from es_metric.ingest.celery_app import worker_ping

    esm("mapping", "create", index_name, "--model", tiny_model)
    workers = worker_ping(stack)
    if case == "a queue no worker consumes":
        queue = request.getfixturevalue("orphan_queue").worker_queue
        monkeypatch.setenv("ESM_QUEUE", queue)
    else:
        queue, (workers, _resume) = stack.worker_queue, request.getfixturevalue("consumer_cancelled")
    result = esm("ingest", index_name, tiny_data / "class_5", "--stall-timeout", "3", "--timeout", "120",
                 ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    line = errors[0]
    assert f"16 of 16 images wait in the queue {queue!r}, but no live worker consumes that queue" in line
    assert f"the live workers ({', '.join(workers)}) consume other queues" in line
    assert f"worker -Q {queue}" in line and f"add_consumer {queue}" in line


def test_lost_tasks_end_the_wait_with_the_stall_error(orphan_queue, es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    job = enqueue(orphan_queue, es, index_name, list(folder_items(tiny_data / "class_5")))
    redis.Redis.from_url(orphan_queue.redis_url).delete(orphan_queue.worker_queue)  # the broker lost them
    with pytest.raises(EsmError, match="none of its tasks is queued or running") as info:
        wait(orphan_queue, job, timeout=60)
    assert "run the same ingest again" in str(info.value)


def test_tasks_the_broker_lost_are_sent_again_by_the_wait(stack, es, index_name, tiny_model, tiny_data,
                                                          consumer_cancelled):
    """A task lost by the broker (kombu's Redis transport pops a task before it records it as
    delivered: a Redis restart in between loses it; here the queue is deleted while no one
    consumes it): the waiting client still has the batches and sends the unfinished ones again
    under the same task ids, so the job finishes instead of ending with the stall error."""
    _workers, resume = consumer_cancelled
    esm("mapping", "create", index_name, "--model", tiny_model)
    s = stack.with_(batch_size=4, stall_seconds=2)
    from es_metric.ingest.sources import Source

    job = enqueue(s, es, index_name, Source(list(folder_items(tiny_data / "class_5")), [], (tiny_data,)))
    redis.Redis.from_url(s.redis_url).delete(s.worker_queue)  # the broker lost all 4 tasks
    resume()
    assert wait(s, job, timeout=120) == (16, 0)
    es.indices.refresh(index=index_name)
    assert count(es, index_name) == 16


def test_a_running_job_is_not_called_stalled(stack, es, index_name, tiny_model, tiny_data):
    """A stall threshold shorter than one batch: the task is held by the worker, so waiting goes on."""
    esm("mapping", "create", index_name, "--model", tiny_model)
    s = stack.with_(stall_seconds=0.01, batch_size=96)
    source = list(folder_items(tiny_data))
    from es_metric.ingest.sources import Source
    job = enqueue(s, es, index_name, Source(source, [], (tiny_data,)))
    assert wait(s, job, timeout=180, poll=0.05) == (96, 0)


def test_a_dead_job_does_not_block_reindex(stack, es, index_name, tiny_model, tiny_model_l2, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    esm_json("ingest", index_name, tiny_data / "class_0")
    concrete = index_info(es, index_name).concrete
    dead = JobProgress(stack, f"dead{uuid.uuid4().hex[:12]}")
    dead.start(10, index=concrete, alias=index_name)  # no task was ever sent: it cannot finish
    long_ago = time.time() - 3600
    dead.redis.hset(dead.key, mapping={"created": long_ago, "updated": long_ago})
    try:
        res = esm_json("reindex", index_name, "--model", tiny_model_l2, "--force", "--timeout", "60")
    finally:
        dead.redis.delete(dead.key)
    assert res["documents"] == res["vectors"] == 16 == count(es, index_name)


def test_a_batch_whose_worker_keeps_dying_fails_instead_of_looping(stack, es, index_name, tiny_model,
                                                                   tiny_data):
    """Late acks redeliver a task whose worker process died; a batch that kills it every time
    (out of memory, a decoder crash) would loop forever. Its deliveries are counted: the
    fourth start of the same try fails the batch with worker_lost."""
    from es_metric.ingest.outcomes import MAX_DELIVERIES
    from es_metric.ingest.stall import task_id
    from es_metric.ingest.celery_app import make_app

    esm("mapping", "create", index_name, "--model", tiny_model)
    items = list(folder_items(tiny_data / "class_1"))[:4]
    spec = job_spec(index_info(es, index_name), index_name, uuid.uuid4().hex[:16], "index",
                    roots=(str(tiny_data),))
    progress = JobProgress(stack, spec["job_id"])
    progress.start(4, index=spec["index"], alias=index_name)
    tid = task_id(spec["job_id"], 0)
    progress.redis.hset(progress.key + ":deliveries", f"{tid}:0", MAX_DELIVERIES)  # died 3 times
    app = make_app(stack)
    app.send_task(TASK_NAME, args=[spec, items], queue=stack.worker_queue, task_id=tid)
    app.close()
    assert wait(stack, Job(spec["job_id"], 4, spec["index"], 1), timeout=120) == (0, 4)
    assert _reasons(index_name) == {"worker_lost"} and count(es, index_name) == 0


TAKE_AND_VANISH = """
import os, sys
from es_metric.config import Settings
from es_metric.ingest.celery_app import make_app
app = make_app(Settings.from_env())
conn = app.connection_for_read()
message = conn.default_channel.basic_get(sys.argv[1], no_ack=False)  # delivered, never acknowledged
print("took" if message is not None else "nothing", flush=True)
os._exit(0)  # gone without closing: kombu cannot give it back
"""


def test_a_task_taken_by_a_worker_that_vanished_goes_back_to_the_queue(orphan_queue, es, index_name,
                                                                       tiny_model, tiny_data, monkeypatch):
    """A task delivered to a consumer that vanished without acknowledging it (a worker killed,
    or one that dropped its prefetched task when Redis restarted) would come back only after the
    30-min visibility timeout; the wait gives it back to the queue and the job finishes."""
    import subprocess
    import sys

    from es_metric.ingest.sources import Source
    from es_metric.stack.worker import start_worker, stop_worker

    esm("mapping", "create", index_name, "--model", tiny_model)
    s = orphan_queue.with_(batch_size=4)
    job = enqueue(s, es, index_name, Source(list(folder_items(tiny_data / "class_5")), [], (tiny_data,)))
    monkeypatch.setenv("ESM_QUEUE", s.worker_queue)
    took = subprocess.run([sys.executable, "-c", TAKE_AND_VANISH, s.worker_queue], capture_output=True,
                          text=True, timeout=60)
    assert took.stdout.strip() == "took", took.stderr
    from es_metric.ingest.broker import redis_layout
    assert any(redis_layout().unacked(redis.Redis.from_url(s.redis_url)))
    try:
        start_worker(s.with_(worker_concurrency=1))
        done, failed = wait(s, job, timeout=120)
    finally:
        stop_worker(s)
    assert (done, failed) == (job.total, 0) and count(es, index_name) == job.total
