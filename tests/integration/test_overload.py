"""Documents Elasticsearch refuses as overloaded (429 items inside a 200) are sent again until
they are written, never recorded as failed while the task has tries left: a loopback proxy in
front of the real node refuses them on demand (tests/integration/esproxy.py)."""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from es_metric.errors import ClusterOverloaded
from es_metric.index.client import make_client
from es_metric.index.indices import count, index_info
from es_metric.ingest.enqueue import enqueue, job_spec, make_searchable, wait
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.outcomes import is_transient
from es_metric.ingest.pipeline import process_batch
from es_metric.ingest.sources import folder_items, folder_source
from es_metric.stack import worker as esm_stack
from tests.imagegen import make_dataset
from tests.integration.esproxy import Overload, overload_proxy
from tests.integration.helpers import esm, esm_json

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _batch(stack, es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    items = list(folder_items(tiny_data / "class_2"))
    spec = job_spec(index_info(es, index_name), index_name, uuid.uuid4().hex[:16], "index",
                    roots=(str(tiny_data),))
    JobProgress(stack, spec["job_id"]).start(len(items), index=spec["index"], alias=index_name)
    return spec, items


def test_documents_refused_as_overloaded_are_retried_not_failed(stack, es, index_name, tiny_model, tiny_data):
    """A try with retries left: the refused documents raise a transient error and nothing is
    recorded; the next try writes every document once."""
    spec, items = _batch(stack, es, index_name, tiny_model, tiny_data)
    overload = Overload(times=4, index=spec["index"])
    with overload_proxy(stack.es_url, overload) as url:
        client = make_client(stack.with_(es_url=url))
        with pytest.raises(ClusterOverloaded) as caught:
            process_batch(stack, client, spec, items, final=False)
        assert is_transient(caught.value) and "429" in str(caught.value)
        assert overload.seen == 4 and overload.refused == 4 * len(items)  # the helper's own tries first
        assert JobProgress(stack, spec["job_id"]).counts() == (len(items), 0, 0)
        assert esm_json("failures", index_name)["failures"] == []
        result = process_batch(stack, client, spec, items, final=False)
    es.indices.refresh(index=spec["index"])
    assert (result["indexed"], result["failed"]) == (len(items), 0)
    assert count(es, index_name) == len(items)
    assert JobProgress(stack, spec["job_id"]).counts() == (len(items), len(items), 0)


def test_on_the_last_try_only_the_refused_documents_fail_with_the_reason(stack, es, index_name, tiny_model,
                                                                         tiny_data):
    """The task's last try: the documents still refused fail as retries_exhausted with
    Elasticsearch's words; the others of the batch are written."""
    spec, items = _batch(stack, es, index_name, tiny_model, tiny_data)
    refused = {_doc_id(items[0]), _doc_id(items[1])}
    with overload_proxy(stack.es_url, Overload(times=-1, index=spec["index"], ids=refused)) as url:
        result = process_batch(stack, make_client(stack.with_(es_url=url)), spec, items, final=True)
    es.indices.refresh(index=spec["index"])
    assert (result["indexed"], result["failed"]) == (len(items) - 2, 2)
    assert count(es, index_name) == len(items) - 2
    rows = esm_json("failures", index_name)["failures"]
    assert {r["reason"] for r in rows} == {"retries_exhausted"} and len(rows) == 2
    assert "es_rejected_execution_exception" in rows[0]["message"]


def _doc_id(item) -> str:
    """The id a document of a folder image gets: its content hash."""
    return hashlib.sha256(Path(item["ref"]).read_bytes()).hexdigest()


def test_a_worker_behind_an_overloaded_node_loses_nothing(report, stack, es, index_name, tiny_model, tmp_path):
    """Through the real worker: each document is refused the first 6 times it is sent (more
    than the bulk helper's own tries), then written; the job ends with every image written once."""
    images = make_dataset(tmp_path / "overload-images", n_classes=4, per_class=12, seed=5)
    esm("mapping", "create", index_name, "--model", tiny_model)
    overload = Overload(times=6, index=index_info(es, index_name).concrete)
    with overload_proxy(stack.es_url, overload) as url:
        s = stack.with_(es_url=url, worker_queue="esm-overload")
        esm_stack.start_worker(s)
        try:
            job = enqueue(s.with_(batch_size=8), es, index_name, folder_source(images))
            done, failed = wait(s, job, timeout=300)
        finally:
            esm_stack.stop_worker(s)
    make_searchable(es, job)
    report(f"FAULT bulk documents refused as overloaded: sent {job.total}, indexed {count(es, index_name)}, "
           f"failed {failed}; {overload.refused} documents refused in {overload.seen} bulk requests")
    assert overload.refused == 6 * 48
    assert (done, failed) == (job.total, 0) and count(es, index_name) == job.total == 48
