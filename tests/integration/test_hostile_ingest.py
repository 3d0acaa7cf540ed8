"""Hostile ingest input on the real stack: user data is data, never control.

Manifest columns never become bulk metadata (another index, a delete, routing, versions, a
replaced body); a document Elasticsearch refuses costs only itself; files outside the image
roots are never read (worker) nor served (HTTP API); a later success clears a dead letter.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from es_metric.index.indices import count, index_info
from es_metric.ingest.enqueue import Job, wait
from es_metric.ingest.jobs import JobProgress
from tests.integration.helpers import esm, esm_json, own_fields

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture
def photos(tmp_path, tiny_data) -> Path:
    """A private folder of 8 distinct images (so a manifest beside them has them as its root)."""
    folder = tmp_path / "shop"
    folder.mkdir()
    for i, src in enumerate(sorted((tiny_data / "class_1").iterdir())[:8]):
        shutil.copy(src, folder / f"p{i}.jpg")
    return folder


def _manifest(folder: Path, extra: dict[int, dict]) -> Path:
    rows = [{"id": f"p{i}", "image": f"p{i}.jpg", "title": f"photo {i}", **extra.get(i, {})}
            for i in range(8)]
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _failures(index: str) -> dict[str, dict]:
    return {Path(r["ref"]).name: r for r in esm_json("failures", index)["failures"]}


def _ingest(index, source, *more) -> dict:
    return esm_json("ingest", index, source, "--timeout", "120", *more)


def test_index_key_writes_nowhere_else(es, index_name, tiny_model, photos):
    other = f"{index_name}-other"
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = _ingest(index_name, _manifest(photos, {3: {"_index": other}}))
    assert (summary["indexed"], summary["failed"]) == (7, 1)
    assert not es.indices.exists(index=other) and count(es, index_name) == 7
    row = _failures(index_name)["p3.jpg"]
    assert row["reason"] == "reserved_field" and "'_index'" in row["message"] and "line 4" in row["message"]


def test_delete_op_in_a_manifest_deletes_nothing(es, index_name, tiny_model, photos):
    victim = f"{index_name}-victim"
    es.index(index=victim, id="keep-me", document={"title": "precious"}, refresh=True)
    esm("mapping", "create", index_name, "--model", tiny_model)
    line = {"id": "keep-me", "_op_type": "delete", "_index": victim}
    summary = _ingest(index_name, _manifest(photos, {2: line}))
    assert (summary["indexed"], summary["failed"]) == (7, 1)
    assert es.get(index=victim, id="keep-me")["_source"] == {"title": "precious"}
    assert _failures(index_name)["p2.jpg"]["reason"] == "reserved_field"


def test_source_key_cannot_replace_the_body(es, index_name, tiny_model, photos):
    esm("mapping", "create", index_name, "--model", tiny_model)
    line = {"_source": {"image_path": "/etc/passwd", "title": "owned"}}
    summary = _ingest(index_name, _manifest(photos, {5: line}))
    assert (summary["indexed"], summary["failed"]) == (7, 1)
    es.indices.refresh(index=index_name)
    assert es.count(index=index_name, query={"term": {"image_path": "/etc/passwd"}})["count"] == 0
    assert not es.exists(index=index_name, id="p5")
    assert _failures(index_name)["p5.jpg"]["reason"] == "reserved_field"


def test_bulk_parameter_names_are_ordinary_fields_and_cost_no_batch(es, index_name, tiny_model, photos):
    """``version`` alone or ``parent`` made Elasticsearch refuse the whole bulk request: the
    other images of the batch were lost and ``--wait`` never ended. Under the body they are
    plain fields; routing and external versions do not alter the write."""
    esm("mapping", "create", index_name, "--model", tiny_model)
    extra = {0: {"version": 3}, 1: {"parent": "p0"}, 2: {"routing": "elsewhere"},
             3: {"version": 99, "version_type": "external"}, 4: {"version_type": "force"}}
    summary = _ingest(index_name, _manifest(photos, extra))
    assert (summary["indexed"], summary["failed"]) == (8, 0) and count(es, index_name) == 8
    routed = es.get(index=index_name, id="p2")  # found without routing: it was not routed
    assert routed["_source"]["routing"] == "elsewhere" and "_routing" not in routed
    versioned = es.get(index=index_name, id="p3")
    assert versioned["_version"] == 1 and versioned["_source"]["version"] == 99
    assert es.get(index=index_name, id="p0")["_source"]["version"] == 3
    assert es.get(index=index_name, id="p1")["_source"]["parent"] == "p0"


def _send_raw(settings, es, alias: str, items: list[dict], roots: list[str]) -> Job:
    """A task as another application would send it, straight to the broker (no manifest check)."""
    from es_metric.ingest.celery_app import make_app

    info = index_info(es, alias)
    job_id = uuid.uuid4().hex[:16]
    spec = {"job_id": job_id, "alias": alias, "index": info.concrete, "model_id": info.model_id,
            "model_path": info.model_path, "vector_field": info.vector_field, "mode": "index",
            "roots": roots}
    total = len({i["ref"] for i in items})
    JobProgress(settings, job_id).start(total, index=info.concrete, alias=alias)
    app = make_app(settings)
    app.send_task("es_metric.embed_batch", args=[spec, items], queue=settings.worker_queue)
    app.close()
    return Job(job_id, total, info.concrete, 1)


def test_worker_refuses_metadata_from_other_senders(stack, es, index_name, tiny_model, photos):
    """Defense in depth: a task that never went through a manifest."""
    other = f"{index_name}-other"
    esm("mapping", "create", index_name, "--model", tiny_model)
    bad = {"p0.jpg": {"fields": {"_index": other}}, "p1.jpg": {"fields": {"model_id": "forged"}},
           "p2.jpg": {"fields": {"image_vector": [0.0] * 32}}, "p3.jpg": {"id": "x" * 600}}
    items = [{"ref": str(photos / f"p{i}.jpg"), "id": f"raw-{i}", "fields": {"n": i},
              **bad.get(f"p{i}.jpg", {})} for i in range(8)]
    job = _send_raw(stack, es, index_name, items, [str(photos)])
    assert wait(stack, job, timeout=120) == (4, 4)
    assert count(es, index_name) == 4 and not es.indices.exists(index=other)
    rows = _failures(index_name)
    assert {name: r["reason"] for name, r in rows.items()} == {
        "p0.jpg": "reserved_field", "p1.jpg": "reserved_field", "p2.jpg": "reserved_field",
        "p3.jpg": "bad_id"}
    assert "512-byte limit" in rows["p3.jpg"]["message"]


def test_a_whole_request_refusal_costs_only_the_refused_document(es, index_name):
    """A 600-byte id makes Elasticsearch refuse the whole bulk request (400, not one item):
    the writer splits the request until the refused document stands alone."""
    from es_metric.ingest.pipeline import write_bulk

    es.indices.create(index=index_name)
    ids = [f"doc-{i}" for i in range(7)] + ["x" * 600]
    actions = [{"_op_type": "index", "_index": index_name, "_id": i, "_source": {"n": n}}
               for n, i in enumerate(ids[:4] + ids[7:] + ids[4:7])]
    result = write_bulk(es, actions, {i: [{"ref": f"ref-{i[:5]}"}] for i in ids})
    assert sorted(result.indexed) == sorted(f"ref-{i}" for i in ids[:7])
    [failure] = result.failures
    assert failure["reason"] == "rejected_by_elasticsearch" and "too long" in failure["message"]
    assert count(es, index_name) == 7


def test_worker_reads_nothing_outside_the_job_roots(stack, es, index_name, tiny_model, photos, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    (photos / "escape.jpg").symlink_to(tiny_data / "class_2" / "img_000.jpg")
    outside = tiny_data / "class_2" / "img_001.jpg"
    items = [{"ref": str(photos / "p0.jpg"), "id": None, "fields": {}},
             {"ref": str(photos / "escape.jpg"), "id": None, "fields": {}},
             {"ref": str(outside), "id": None, "fields": {}}]
    job = _send_raw(stack, es, index_name, items, [str(photos)])
    assert wait(stack, job, timeout=120) == (1, 2)
    rows = _failures(index_name)
    assert rows["escape.jpg"]["reason"] == rows["img_001.jpg"]["reason"] == "path_refused"


def test_manifest_path_outside_the_roots_is_refused_by_line(es, index_name, tiny_model, photos, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    outside = str(tiny_data / "class_3" / "img_000.jpg")
    summary = _ingest(index_name, _manifest(photos, {6: {"image": outside}, 7: {"image": "../../x.jpg"}}))
    assert (summary["indexed"], summary["failed"], summary["refused"]) == (6, 2, 2)
    rows = _failures(index_name)
    assert rows["img_000.jpg"]["reason"] == rows["x.jpg"]["reason"] == "path_refused"
    assert "ESM_IMAGE_ROOTS" in rows["img_000.jpg"]["message"]


@pytest.fixture
def api(stack):
    from fastapi.testclient import TestClient

    from es_metric.web.app import create_app
    return TestClient(create_app(stack.with_(image_roots=())), raise_server_exceptions=False)


def test_image_endpoint_serves_only_files_under_the_roots(api, es, index_name, tiny_model, photos):
    """With ESM_IMAGE_ROOTS unset, a document whose image_path is /etc/passwd (written by any
    writer of the index) was served in full."""
    esm("mapping", "create", index_name, "--model", tiny_model)
    _ingest(index_name, photos)
    (photos / "link.jpg").symlink_to("/etc/passwd")
    for doc_id, path in (("passwd", "/etc/passwd"), ("link", str(photos / "link.jpg")),
                         ("dots", str(photos / ".." / ".." / "etc" / "passwd"))):
        es.index(index=index_name, id=doc_id, document={"image_path": path}, refresh=True)
        r = api.get(f"/api/indices/{index_name}/image/{doc_id}")
        assert r.status_code == 403, (doc_id, r.status_code, r.text[:200])
        assert r.json()["reason"] == "path_refused" and "root:" not in r.text
    es.index(index=index_name, id="device", document={"image_path": "/dev/zero"}, refresh=True)
    assert api.get(f"/api/indices/{index_name}/image/device").status_code == 403
    [hit] = es.search(index=index_name, query={"term": {"image_path": str(photos / "p4.jpg")}})["hits"]["hits"]
    ok = api.get(f"/api/indices/{index_name}/image/{hit['_id']}")
    assert ok.status_code == 200 and ok.content == (photos / "p4.jpg").read_bytes()


def test_from_index_paths_are_confined(es, index_name, tiny_model, photos, tiny_data):
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    docs = {"inside": str(photos / "p0.jpg"), "relative": "p1.jpg", "passwd": "/etc/passwd",
            "elsewhere": str(tiny_data / "class_4" / "img_000.jpg")}
    for doc_id, path in docs.items():
        es.index(index=index_name, id=doc_id, document={"photo": path})
    es.indices.refresh(index=index_name)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")

    unconfined = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--timeout", "60")
    assert (unconfined["indexed"], unconfined["failed"]) == (0, 4)
    assert "--base-dir" in _failures(index_name)["passwd"]["message"]

    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo",
                       "--base-dir", photos, "--timeout", "60")
    assert (summary["indexed"], summary["failed"]) == (2, 2)
    rows = _failures(index_name)
    assert rows["passwd"]["reason"] == rows["img_000.jpg"]["reason"] == "path_refused"
    refs = {r["ref"] for r in rows.values()}
    assert str(photos / "p0.jpg") not in refs and str(photos / "p1.jpg") not in refs
    assert "vector" in own_fields(es, index_name, es.get(index=index_name, id="relative")["_source"])
    assert "vector" not in own_fields(es, index_name, es.get(index=index_name, id="elsewhere")["_source"])


def test_a_later_success_clears_the_dead_letter(es, index_name, tiny_model, photos):
    esm("mapping", "create", index_name, "--model", tiny_model)
    (photos / "p7.jpg").rename(photos / "later.jpg")
    manifest = _manifest(photos, {})
    first = _ingest(index_name, manifest)
    assert (first["indexed"], first["failed"]) == (7, 1)
    assert _failures(index_name)["p7.jpg"]["reason"] == "missing_file"
    (photos / "later.jpg").rename(photos / "p7.jpg")
    second = _ingest(index_name, manifest)
    assert (second["indexed"], second["failed"]) == (8, 0)
    assert _failures(index_name) == {}


def test_a_pipe_is_never_read(es, index_name, tiny_model, photos):
    """Opening a FIFO for reading blocks until a writer comes; /dev/zero never ends. Only
    regular files are read (and never beyond the byte limit)."""
    esm("mapping", "create", index_name, "--model", tiny_model)
    os.mkfifo(photos / "p6.jpg.fifo")
    summary = _ingest(index_name, _manifest(photos, {6: {"image": "p6.jpg.fifo"}}))
    assert (summary["indexed"], summary["failed"]) == (7, 1)
    assert _failures(index_name)["p6.jpg.fifo"]["reason"] == "not_a_file"
