"""Property test on the real stack: random manifest lines (metadata names, bookkeeping names,
random JSON values, unicode, odd and huge paths) have only these outcomes: a document in the
target index with the user's fields in its body, or a refusal / failure record with a reason.
Nothing is written to another index, nothing is deleted, and every job ends."""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st

from es_metric.errors import ConfigError
from es_metric.index.failures import item_key, list_failures, record_key
from es_metric.index.indices import create_versioned_index, ensure_failures_index
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.sources import manifest_source
from es_metric.model.modelfile import read_card
from tests.integration.helpers import stored_docs

pytestmark = [pytest.mark.integration, pytest.mark.security]

IMAGES = [f"p{i}.jpg" for i in range(4)]
NAMES = ["_index", "_id", "_source", "_routing", "_version", "_op_type", "_type", "_meta", "routing",
         "version", "version_type", "parent", "pipeline", "if_seq_no", "retry_on_conflict", "doc",
         "image_path", "image_sha256", "model_id", "indexed_at", "image_vector", "label", "id",
         "doc_id", "image", "path", "", " ", ".", "a.b", "a..b", "é", "title", "price"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
odd_paths = st.sampled_from(["/etc/passwd", "../x.jpg", "", "a" * 5000, "x\x00y.jpg", "missing.jpg",
                             "p0.jpg/../p1.jpg", "/dev/zero"]) | st.text(max_size=40)
paths = st.one_of(st.sampled_from(IMAGES), st.sampled_from(IMAGES), st.sampled_from(IMAGES), odd_paths)
keys = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), st.text(max_size=12))
rows = st.fixed_dictionaries({"image": paths}, optional={"id": st.text(max_size=10) | st.integers()}) \
    .flatmap(lambda base: st.dictionaries(keys, json_values, max_size=3).map(lambda extra: {**extra, **base}))
garbage = st.sampled_from(["not json", "[1]", "{}", '{"image": "p2.jpg", "x": 1e999}']) | st.text(max_size=20)
plain_rows = st.fixed_dictionaries({"image": st.sampled_from(IMAGES)}, optional={"id": st.text(max_size=8)}) \
    .flatmap(lambda base: st.dictionaries(st.text("abcxyz_é", min_size=1, max_size=6), json_values,
                                          max_size=3).map(lambda extra: {**extra, **base}))
lines = st.lists(st.one_of(*[rows.map(lambda r: json.dumps(r, allow_nan=True))] * 3,
                           plain_rows.map(json.dumps), garbage), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def world(stack, tiny_model, tiny_data, tmp_path_factory):
    """A folder of 4 images, the model, a sentinel index that must stay untouched."""
    from es_metric.index.client import make_client

    folder = tmp_path_factory.mktemp("props")
    for name, src in zip(IMAGES, sorted((tiny_data / "class_4").iterdir())):
        shutil.copy(src, folder / name)
    es = make_client(stack)
    ensure_failures_index(es, stack.failures_index)
    prefix = f"prop-{uuid.uuid4().hex[:8]}"
    es.index(index=f"{prefix}-sentinel", id="keep", document={"title": "keep"}, refresh=True)
    yield stack, es, folder, prefix
    es.options(ignore_status=404).indices.delete(index=f"{prefix}*", expand_wildcards="all")


def _indices(es) -> set[str]:
    return set(es.indices.get(index="*", expand_wildcards="open"))


@hsettings(max_examples=20, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=lines)
def test_random_manifest_lines_are_indexed_or_refused_with_a_reason(world, tiny_model, lines):
    settings, es, folder, prefix = world
    alias = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_versioned_index(es, alias, read_card(tiny_model), str(tiny_model))
    before = _indices(es)
    manifest = folder / f"{alias}.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        source = manifest_source(manifest)
    except ConfigError as exc:  # nothing usable: one clear line naming the first bad line
        assert "line 1" in str(exc) and "\n" not in str(exc)
        event("manifest refused as a whole")
        return
    job = enqueue(settings, es, alias, source)
    done, failed = wait(settings, job, timeout=120)
    event(f"{done} indexed, {failed} failed (of which {len(source.refused)} refused)")
    make_searchable(es, job)
    assert done + failed >= job.total  # the job ended, every image accounted for
    assert _indices(es) == before      # nothing created elsewhere
    assert es.get(index=f"{prefix}-sentinel", id="keep")["_source"] == {"title": "keep"}
    _check_outcomes(es, settings, alias, source)
    es.indices.delete(index=f"{alias}*")


def _doc_id(entry: dict) -> str | None:
    """The id the worker gives a line's document: the user's id, else the image's SHA-256."""
    if entry.get("id", entry.get("doc_id")) is not None:
        return str(entry.get("id", entry.get("doc_id")))
    path = Path(entry["ref"])
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.name in IMAGES and path.is_file() else None


def _check_outcomes(es, settings, alias: str, source) -> None:
    """Every line is a document holding its fields, or has a failure record with a reason (a
    refused line's record goes only when a later line wrote that same document, image and id);
    every document comes from a line: its image, its fields, a vector."""
    records = list_failures(es, settings.failures_index, alias, size=100)
    failed = {record_key(r) for r in records}
    assert all(r["reason"] and r["message"] for r in records)
    docs = stored_docs(es, alias)

    def written(entry: dict) -> bool:
        doc = docs.get(_doc_id(entry))
        return doc is not None and doc["image_path"] == entry["ref"]

    for refused in source.refused:
        assert record_key(refused) in failed or written(refused), refused
    for item in source.items:
        assert _doc_id(item) in docs or item_key(item) in failed, item
    for doc_id, doc in docs.items():
        assert len(doc["image_vector"]) == 32 and Path(doc["image_path"]).name in IMAGES
        assert any(_doc_id(item) == doc_id and item["ref"] == doc["image_path"]
                   and all(doc.get(k) == v for k, v in item["fields"].items())
                   for item in source.items), (doc_id, doc)
