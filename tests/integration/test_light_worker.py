"""A light worker node on the real stack: a Celery worker started as the stack starts one
(``start_worker``), on its own queue, in an interpreter whose import system refuses torch (a
``sitecustomize`` first on PYTHONPATH, so the worker and every process it forks or execs is a
light node), ingests a folder through ``esm ingest``. Its vectors, read back from the lean
index's doc values, match the torch worker's within the parity tolerance, and no process of
that worker ever mapped libtorch."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from es_metric.images import DecodeLimits
from es_metric.index.indices import index_info
from es_metric.index.vectors import is_lean
from es_metric.ingest.pipeline import decode_and_embed
from es_metric.model.export import cosines
from es_metric.model.modelfile import load_model
from es_metric.model.runtime import PARITY_COSINE, TorchEmbedder
from es_metric.stack.worker import start_worker, stop_worker
from tests.imagegen import make_grainy
from tests.imports import light_node, maps_torch, run_esm
from tests.integration.helpers import esm, esm_json, stored_docs, worker_log

pytestmark = pytest.mark.integration


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a Celery worker and its pool processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # the command name in parentheses may hold spaces: split after its last ")"
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    tree = [pid]
    for p in tree:
        tree += [child for child, parent in parents.items() if parent == p]
    return tree


@pytest.fixture
def light_worker(stack, tmp_path, monkeypatch):
    """(settings, pid) of a Celery worker that cannot import torch, on a queue of its own (the
    stack's worker never sees its tasks); stopped by pid afterwards, whatever happened."""
    light_node(tmp_path / "light-node", monkeypatch)
    settings = stack.with_(worker_queue=f"light{uuid.uuid4().hex[:8]}", worker_concurrency=1)
    try:
        yield settings, start_worker(settings).pid
    finally:
        stop_worker(settings)


def test_light_worker_ingests_without_torch_within_parity(es, index_name, exported, light_worker,
                                                          monkeypatch, tmp_path):
    settings, pid = light_worker
    images = make_grainy(tmp_path / "images")  # resized and cropped by the light node's Pillow path
    refused = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
    assert refused.returncode != 0 and "(light node)" in refused.stderr  # the shim is in force

    esm("mapping", "create", index_name, "--model", exported)
    info = index_info(es, index_name)
    assert info.runtime == "onnxruntime" and info.runtime_parity >= PARITY_COSINE
    monkeypatch.setenv("ESM_QUEUE", settings.worker_queue)  # `esm ingest` queues for the light node
    summary = esm_json("ingest", index_name, images)
    assert (summary["indexed"], summary["failed"]) == (16, 0)

    log = worker_log(settings)
    assert "embedding with ONNX Runtime" in log and f"job {summary['job_id']}: batch of" in log
    tree = process_tree(pid)
    assert len(tree) >= 2  # the worker and its pool process, which ran the task
    assert not any(maps_torch(p) for p in tree)

    assert is_lean(es.indices.get_mapping(index=info.concrete)[info.concrete]["mappings"],
                   info.vector_field)  # so the vectors below come from doc values
    docs = stored_docs(es, info.concrete)
    assert len(docs) == 16
    model = load_model(exported)
    assert {d["model_id"] for d in docs.values()} == {model.model_id}
    refs = sorted(d["image_path"] for d in docs.values())
    good, failures, reference = decode_and_embed([{"ref": r} for r in refs], TorchEmbedder(model),
                                                 DecodeLimits(), (images,))
    assert failures == [] and maps_torch(os.getpid())  # the check above can see torch
    by_path = {d["image_path"]: d[info.vector_field] for d in docs.values()}
    light = np.array([by_path[item["ref"]] for item, _ in good], np.float32)
    assert light.shape == reference.shape == (16, model.card["dims"])
    assert cosines(light, reference).min() >= PARITY_COSINE


def test_a_light_query_node_searches_by_image_and_by_document(es, index_name, exported, tmp_path,
                                                              monkeypatch):
    """`esm search` in an interpreter that refuses torch: by image (decode + ONNX Runtime) and by
    an indexed document, both with query expansion (numpy), ranking as a node with torch does."""
    images = make_grainy(tmp_path / "images")
    esm("mapping", "create", index_name, "--model", exported)
    assert esm_json("ingest", index_name, images)["failed"] == 0
    query = images / "img_003.jpg"
    full = esm_json("search", index_name, "--image", query, "--qe-k", "3")
    doc = full["hits"][0]["id"]
    full_doc = esm_json("search", index_name, "--like", doc, "--qe-k", "3")
    light_node(tmp_path / "light-node", monkeypatch)
    for args, reference in ((("--image", query), full), (("--like", doc), full_doc)):
        light = run_esm("search", index_name, *args, "--qe-k", "3", "--json")
        assert light.code == 0, light.output
        assert "torch" not in light.modules and "torchvision" not in light.modules
        got = light.json()
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in reference["hits"]]
        assert len(got["hits"]) >= 5
        np.testing.assert_allclose([h["score"] for h in got["hits"]],
                                   [h["score"] for h in reference["hits"]], atol=1e-3)
