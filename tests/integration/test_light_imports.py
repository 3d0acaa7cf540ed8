"""The light commands against the real stack import no torch: ``esm mapping create`` reads the
model card with zipfile + json, ``esm ingest --no-wait`` only enqueues, ``esm failures`` and
``esm stack status`` read Elasticsearch and Redis. Each runs in a fresh interpreter."""
from __future__ import annotations

import pytest

from tests.imports import run_esm

pytestmark = pytest.mark.integration


def test_mapping_ingest_failures_and_status_import_no_torch(es, index_name, tiny_model, tiny_data):
    created = run_esm("mapping", "create", index_name, "--model", tiny_model)
    assert created.code == 0, created.output
    assert es.indices.exists_alias(name=index_name)
    queued = run_esm("ingest", index_name, tiny_data / "class_0", "--no-wait", "--json")
    assert queued.code == 0, queued.output
    assert queued.json()["queued"] == 16
    failures = run_esm("failures", index_name, "--json")
    assert failures.code == 0 and failures.json()["index"] == index_name
    status = run_esm("stack", "status")
    assert status.code == 0 and "running" in status.output
    index_status = run_esm("status", index_name, "--json")
    assert index_status.code == 0 and "without_vector" in index_status.json(), index_status.output
    for run in (created, queued, failures, status, index_status):
        assert "torch" not in run.modules
    assert {"elasticsearch", "celery"} <= queued.modules  # it did talk to the cluster and the broker
