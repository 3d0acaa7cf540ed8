"""A two-node local cluster (two ES processes on loopback): one node stopped during an ingest and
a loop of searches, and 429s (a tiny write queue) under load. Exact counts at the end."""
from __future__ import annotations

import re
import shutil
import threading
import time

import pytest
from elasticsearch.helpers import streaming_bulk

from es_metric.index.client import make_client
from es_metric.index.indices import count, create_versioned_index, resolve_concrete
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.sources import folder_source
from es_metric.model.modelfile import read_card
from es_metric.search.service import SearchRequest, run_search
from es_metric.stack import worker as esm_stack
from tests.imagegen import make_dataset
from tests.integration.faults import wait_until
from tests.integration.helpers import worker_log
from tests.integration.nodes import launch, port_offset, prepare_node

pytestmark = [pytest.mark.integration, pytest.mark.fault]
def _common(off: int) -> list[str]:
    return ["cluster.name: esm-two-node-test", "xpack.security.enabled: false",
            f"discovery.seed_hosts: [\"127.0.0.1:{9361 + off}\", \"127.0.0.1:{9362 + off}\"]",
            "cluster.initial_master_nodes: [esm-a]",
            "thread_pool.write.size: 1", "thread_pool.write.queue_size: 2"]


@pytest.fixture(scope="module")
def cluster(stack):
    root = stack.stack_dir / "two-node-test"
    shutil.rmtree(root, ignore_errors=True)
    nodes = []
    off = port_offset(stack)
    s = stack.with_(es_url=f"http://127.0.0.1:{9261 + off}", es_external=True, worker_queue="esm-two-node")
    try:
        for name, http, transport, roles in (("a", 9261 + off, 9361 + off, "[master, data]"),
                                             ("b", 9262 + off, 9362 + off, "[data]")):
            env = prepare_node(stack, root / name, _common(off) + [f"node.name: esm-{name}", f"http.port: {http}",
                                                             f"transport.port: {transport}",
                                                             f"node.roles: {roles}"])
            nodes.append(launch(stack, root / name, env))
        client = make_client(s)
        wait_until(lambda: _health(client) == "green", 180, "the two-node cluster")
        esm_stack.start_worker(s)
        yield s, client, nodes
    finally:
        esm_stack.stop_worker(s)
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _health(client) -> str | None:
    try:
        return client.cluster.health(wait_for_nodes="2", timeout="1s")["status"]
    except Exception:
        return None


@pytest.fixture
def images(tmp_path):
    return make_dataset(tmp_path / "cluster-images", n_classes=6, per_class=40, seed=21)


def _rejected(client) -> int:
    stats = client.nodes.stats(metric="thread_pool")["nodes"]
    return sum(n["thread_pool"]["write"]["rejected"] for n in stats.values())


def _bulk_requests(log: str) -> list[int]:
    """HTTP statuses of the _bulk requests a worker logged (elastic_transport, one line each)."""
    return [int(code) for code in re.findall(r"(?:POST|PUT) \S+/_bulk \[status:(\d+)", log)]


def _ingest_into_a_flood(s, client, model, images, alias: str):
    """One job ingested while six plain writers hammer the tiny write queue until it ends."""
    create_versioned_index(client, alias, read_card(model), str(model))
    # both indices on one node: its one write thread and queue of 2 serve the flood and the
    # worker alike (with the shards on different nodes the worker might never meet a full queue)
    pin = {"index.routing.allocation.require._name": "esm-a"}
    client.indices.put_settings(index=resolve_concrete(client, alias), settings=pin)
    log_before = len(worker_log(s))
    flood_ok, flood_errors, sent, stop = [], [], [], threading.Event()
    client.indices.create(index="t-flood", settings={"number_of_replicas": 0, **pin})
    client.cluster.health(index=[alias, "t-flood"], wait_for_no_relocating_shards=True,
                          wait_for_status="green", timeout="60s")
    loader = make_client(s, request_timeout=120, max_retries=10)

    def flood(t: int) -> None:
        def docs():
            i = 0
            while not stop.is_set():
                sent.append(1)
                yield {"_index": "t-flood", "_id": f"{t}-{i}", "n": i}
                i += 1
        for ok, info in streaming_bulk(loader, docs(), chunk_size=5, max_retries=50, initial_backoff=0.2,
                                       max_backoff=2, raise_on_error=False):
            (flood_ok if ok else flood_errors).append(info)
    threads = [threading.Thread(target=flood, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    try:
        job = enqueue(s.with_(batch_size=8), client, alias, folder_source(images))
        done, failed = wait(s, job, timeout=300)
    finally:
        stop.set()
        for t in threads:
            t.join()
    make_searchable(client, job)
    bulk = _bulk_requests(worker_log(s)[log_before:])
    return job, (done, failed), bulk, (flood_ok, flood_errors, sent)


def test_429_under_load_loses_nothing(report, cluster, tiny_model, images):
    """The worker's own rejections are counted, from its log: each task writes its batch of 8
    in one bulk request, so every _bulk request beyond one per task is the worker sending again
    what Elasticsearch rejected with 429 (items inside a 200, or the whole request). Whether the
    worker's requests meet a full queue is chance: the scenario runs again (at most 3 times)
    until they do, and every run must lose nothing."""
    s, client, _ = cluster
    before = _rejected(client)
    for attempt in range(3):
        alias = f"t-load-{attempt}"
        job, outcome, bulk, (flood_ok, flood_errors, sent) = _ingest_into_a_flood(s, client, tiny_model,
                                                                                 images, alias)
        resent = len(bulk) - job.tasks
        report(f"FAULT 429 under load (run {attempt + 1}): sent {job.total}, indexed {count(client, alias)}, "
               f"failed {outcome[1]}; the worker made {len(bulk)} bulk requests for {job.tasks} tasks "
               f"({resent} resent after 429, {bulk.count(429)} whole requests answered 429); "
               f"cluster-wide write rejections so far {_rejected(client) - before}")
        assert outcome == (240, 0) and count(client, alias) == 240
        # the load generator is a plain client: whatever it was told is written is there, once
        client.indices.refresh(index="t-flood")
        assert count(client, "t-flood") == len(flood_ok) and len(flood_ok) + len(flood_errors) == len(sent)
        report(f"load generator: {len(flood_ok)} written, {len(flood_errors)} gave up: "
               f"{sorted({str(next(iter(e.values())).get('status')) for e in flood_errors})}")
        client.indices.delete(index=["t-flood", *resolve_concrete(client, alias)])
        if resent > 0:
            break
    assert resent > 0, "the worker was never rejected in 3 runs: the test proved nothing"


def test_node_stopped_during_ingest_and_searches(report, cluster, tiny_model, images):
    s, client, nodes = cluster
    alias = "t-replicated"
    create_versioned_index(client, alias, read_card(tiny_model), str(tiny_model), replicas=1)
    seed = enqueue(s, client, alias, folder_source(images / "class_0"))
    wait(s, seed, timeout=120)
    make_searchable(client, seed)
    wait_until(lambda: _health(client) == "green", 60, "replicas allocated")
    query = next((images / "class_0").iterdir()).read_bytes()
    errors, answered, stop = [], [], threading.Event()

    def search_loop():
        c = make_client(s)
        while not stop.is_set():
            try:
                answered.append(len(run_search(c, alias, SearchRequest(image=query, k=5))["hits"]))
            except Exception as exc:
                errors.append(repr(exc))
            time.sleep(0.05)

    thread = threading.Thread(target=search_loop)
    thread.start()
    job = enqueue(s.with_(batch_size=8), client, alias, folder_source(images))
    try:
        wait_until(lambda: JobProgress(s, job.job_id).counts()[1] >= 40, 120, "ingest under way")
        before = len(answered)
        assert nodes[1].stop(), "node b was not stopped"  # node b goes away
        done, failed = wait(s, job, timeout=300)
        # searches go on after the stop: a count of them, not a time (ingest may end first)
        wait_until(lambda: len(answered) + len(errors) >= before + 10, 120, "searches after the stop")
    finally:
        stop.set()
        thread.join()
    make_searchable(client, job)
    report(f"FAULT node stopped: sent {job.total}, indexed {count(client, alias)}, failed {failed}; "
          f"{len(answered)} searches answered ({len(answered) - before} after the stop), {len(errors)} failed")
    assert errors == [] and len(answered) >= before + 10 and set(answered) == {5}
    assert (done, failed) == (240, 0) and count(client, alias) == 240
    assert client.cluster.health()["number_of_nodes"] == 1
