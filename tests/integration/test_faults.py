"""Fault tests on the real stack. Each ends with an exact count: documents = images sent, no
duplicates, failures recorded with reasons. Counts are printed (pytest -s shows them)."""
from __future__ import annotations

import json
import os
import signal

import pytest

from es_metric.index.indices import count
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.sources import folder_source, manifest_source
from tests.imagegen import make_dataset
from tests.integration.faults import (consumers, restart_redis, start_es_again, stop_es, supervisor,
                                      wait_until, worker_children, worker_main)
from tests.integration.helpers import esm, esm_json

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _report(report, name: str, sent: int, indexed: int, failed: int) -> None:
    report(f"FAULT {name}: sent {sent}, indexed {indexed}, failed {failed}")


@pytest.fixture
def images(tmp_path):
    return make_dataset(tmp_path / "fault-images", n_classes=6, per_class=40, seed=11)


def _start(stack, es, index_name, tiny_model, images, batch=8):
    esm("mapping", "create", index_name, "--model", tiny_model)
    job = enqueue(stack.with_(batch_size=batch), es, index_name, folder_source(images))
    return job, JobProgress(stack, job.job_id)


def test_elasticsearch_stopped_mid_ingest_and_restarted(report, stack, es, index_name, tiny_model, images):
    job, progress = _start(stack, es, index_name, tiny_model, images)
    wait_until(lambda: progress.counts()[1] >= 16, 60, "the first batches")
    stop_es(stack)
    try:
        done_while_down = progress.counts()[1]
        assert done_while_down < job.total
    finally:
        start_es_again(stack)
    done, failed = wait(stack, job, timeout=300)
    make_searchable(es, job)
    _report(report, "elasticsearch stopped and restarted", job.total, count(es, index_name), failed)
    assert (done, failed) == (240, 0) and count(es, index_name) == 240


def test_worker_process_killed_mid_batch(report, stack, es, index_name, tiny_model, images):
    job, progress = _start(stack, es, index_name, tiny_model, images, batch=24)
    wait_until(lambda: 0 < progress.counts()[1] < job.total, 60, "a batch in flight")
    children = worker_children(stack)
    assert children, "no worker child process to kill"
    os.kill(children[0], signal.SIGKILL)
    done, failed = wait(stack, job, timeout=300)
    make_searchable(es, job)
    _report(report, "worker child SIGKILLed mid-batch", job.total, count(es, index_name), failed)
    assert (done, failed) == (240, 0) and count(es, index_name) == 240
    wait_until(lambda: bool(worker_children(stack)), 30, "the pool to replace the child")


def test_redis_restarted_during_ingest(report, stack, es, index_name, tiny_model, images):
    job, progress = _start(stack, es, index_name, tiny_model, images)
    wait_until(lambda: progress.counts()[1] >= 8, 60, "the first batches")
    restart_redis(stack)
    done, failed = wait(stack, job, timeout=300)
    make_searchable(es, job)
    _report(report, "redis restarted", job.total, count(es, index_name), failed)
    assert (done, failed) == (240, 0) and count(es, index_name) == 240


def test_redis_restarted_five_times_during_one_ingest(report, stack, es, index_name, tiny_model, images):
    """Five Redis restarts, each down for a second, while one job runs (a restart can take the
    worker's main process down: celery 5.7.0 with kombu 5.7.0, "Unrecoverable error:
    AttributeError(... 'hostname')"; its supervisor starts it again). Every image is indexed
    once and a worker consumes the queue afterwards."""
    restarts_before = supervisor(stack).get("restarts", 0)
    job, progress = _start(stack, es, index_name, tiny_model, images, batch=4)
    for n in range(5):
        wait_until(lambda: progress.counts()[1] >= 16 * (n + 1), 300,  # noqa: B023 - awaited in this iteration
                   f"progress before restart {n + 1}")
        restart_redis(stack)
    done, failed = wait(stack.with_(stall_seconds=20), job, timeout=900)
    make_searchable(es, job)
    revived = supervisor(stack).get("restarts", 0) - restarts_before
    _report(report, f"redis restarted 5 times (worker restarted {revived} times)", job.total,
            count(es, index_name), failed)
    assert (done, failed) == (240, 0) and count(es, index_name) == 240
    wait_until(lambda: bool(consumers(stack)), 120, "a worker consuming the queue after the restarts")


def test_worker_main_process_killed_is_restarted_by_its_supervisor(report, stack, es, index_name,
                                                                   tiny_model, tiny_data):
    """SIGKILL of the worker's main process (as the kombu reconnect crash ends it): the stack's
    supervisor starts it again, `esm stack status` counts the restart, and the new worker ingests."""
    before = supervisor(stack).get("restarts", 0)
    old = worker_main(stack)
    assert old, "no live worker recorded"
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: worker_main(stack) not in (None, old) and bool(consumers(stack)), 180,
               "the supervisor to start the worker again")
    [worker] = [c for c in esm_json("stack", "status") if c["name"] == "worker"]
    assert worker["running"] and worker["restarts"] == before + 1 and worker["pid"] != old
    assert "killed by SIGKILL" in worker["detail"]
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = esm_json("ingest", index_name, tiny_data / "class_1", "--timeout", "300")
    _report(report, "worker main process SIGKILLed", 16, count(es, index_name), summary["failed"])
    assert (summary["indexed"], summary["failed"]) == (16, 0) and count(es, index_name) == 16


def test_bulk_item_rejected_by_mapping_is_recorded(report, stack, es, index_name, tiny_model, tiny_data,
                                                   tmp_path):
    rows = [{"id": f"doc-{i}", "image": str(p), "price": i}
            for i, p in enumerate(sorted((tiny_data / "class_0").iterdir()))]
    rows[3]["price"] = "not a number"
    manifest = tmp_path / "conflict.jsonl"  # never inside the shared tiny_data folder
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    esm("mapping", "create", index_name, "--model", tiny_model, "--keyword-field", "sku")
    es.indices.put_mapping(index=index_name, properties={"price": {"type": "integer"}})
    job = enqueue(stack, es, index_name, manifest_source(manifest, roots=(tiny_data,)))
    done, failed = wait(stack, job, timeout=120)
    make_searchable(es, job)
    _report(report, "bulk item rejected by the mapping", job.total, count(es, index_name), failed)
    assert (done, failed) == (15, 1) and count(es, index_name) == 15
    [row] = [r for r in esm_failures(index_name)]
    assert row["reason"] == "rejected_by_elasticsearch" and "price" in row["message"]
    assert row["doc_id"] == "doc-3"


def esm_failures(index_name):
    from tests.integration.helpers import esm_json
    return esm_json("failures", index_name)["failures"]
