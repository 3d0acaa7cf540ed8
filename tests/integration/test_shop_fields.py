"""The shop's index is the shop's: `esm mapping create --existing` never takes over a field the
shop already has (its own ``model_id``, ``image_path``, ``indexed_at``, a vector field...).
es-metric keeps its own fields under one object whose name the index records, refuses a name
that is taken (naming the clash), and indices made by older versions, whose record names
top-level fields, keep working."""
from __future__ import annotations

import pytest

from es_metric.index.indices import index_info
from tests.integration.helpers import esm, esm_error, esm_json

pytestmark = pytest.mark.integration

SHOP_MAPPING = {"properties": {
    "photo": {"type": "keyword"}, "title": {"type": "text"},
    "model_id": {"type": "keyword"}, "image_path": {"type": "keyword"}, "image_ref": {"type": "keyword"},
    "image_sha256": {"type": "keyword"}, "indexed_at": {"type": "date"},
    "image_vector": {"type": "dense_vector", "dims": 32, "index": True, "similarity": "cosine"}}}


def shop_document(i: int, photo: str) -> dict:
    return {"photo": photo, "title": f"item {i}", "model_id": f"shop-recommender-{i}",
            "image_path": f"/mnt/shop/{i}.jpg", "image_ref": f"cdn-{i}", "image_sha256": f"shop-{i}",
            "indexed_at": "2021-03-04T05:06:07.000Z",
            "image_vector": [1.0 if d == i else 0.0 for d in range(32)]}


def test_existing_and_ingest_leave_the_shops_own_fields_alone(es, index_name, tiny_model, tiny_data):
    files = [sorted((tiny_data / f"class_{c}").iterdir())[2] for c in (0, 1, 2)]
    es.indices.create(index=index_name, mappings=SHOP_MAPPING)
    before = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    shop = {f"s{i}": shop_document(i, f"{f.parent.name}/{f.name}") for i, f in enumerate(files)}
    for doc_id, doc in shop.items():
        es.index(index=index_name, id=doc_id, document=doc)
    es.indices.refresh(index=index_name)

    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    assert (summary["indexed"], summary["failed"]) == (3, 0)
    for doc_id, doc in shop.items():
        src = es.get(index=index_name, id=doc_id)["_source"]
        assert {k: src[k] for k in doc} == doc, doc_id      # every value the shop wrote survives
    props = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert {k: props[k] for k in before} == before             # the shop's mapping too

    info = index_info(es, index_name)    # es-metric's fields: where the index record says
    assert info.vector_field not in SHOP_MAPPING["properties"]
    assert info.fields.model_id not in SHOP_MAPPING["properties"]
    top = es.search(index=index_name, knn={"field": info.vector_field, "k": 1, "num_candidates": 10,
                                           "query_vector": [1.0] * 32}, size=1)["hits"]["hits"][0]
    assert info.fields.read(top["_source"], info.fields.model_id) == info.model_id
    for i, f in enumerate(files):   # search uses es-metric's vectors, not the shop's
        assert esm_json("search", index_name, "--image", f, "-k", "1")["hits"][0]["id"] == f"s{i}"
    assert esm_json("status", index_name)["without_vector"] == 0


def test_a_taken_fields_object_is_refused_naming_the_clash(es, index_name, tiny_model):
    es.indices.create(index=index_name, mappings={"properties": {
        "photo": {"type": "keyword"}, "es_metric": {"properties": {"score": {"type": "float"}}}}})
    line = esm_error("mapping", "create", index_name, "--model", tiny_model, "--existing")
    assert "es_metric" in line and "--fields-object" in line
    assert "_meta" not in es.indices.get_mapping(index=index_name)[index_name]["mappings"]
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing", "--fields-object", "visual")
    info = index_info(es, index_name)
    assert info.vector_field == "visual.image_vector" and info.fields.model_id == "visual.model_id"


def test_an_index_made_by_an_older_version_keeps_its_top_level_fields(es, index_name, tiny_model, tiny_data):
    """What `mapping create --existing` wrote before the fields object: top-level bookkeeping
    fields, and a record that names only the vector field."""
    from es_metric.model.card import read_card

    card = read_card(tiny_model)
    files = [sorted((tiny_data / "class_3").iterdir())[i] for i in (0, 1)]
    es.indices.create(index=index_name, mappings={
        "properties": {"photo": {"type": "keyword"}, "image_path": {"type": "keyword"},
                       "image_sha256": {"type": "keyword"}, "model_id": {"type": "keyword"},
                       "indexed_at": {"type": "date"}, "image_ref": {"type": "keyword"},
                       "image_vector": {"type": "dense_vector", "dims": 32, "index": True,
                                        "similarity": "cosine"}},
        "_meta": {"es_metric": {"model_id": card["model_id"], "model_path": str(tiny_model), "dims": 32,
                                "similarity": "cosine", "vector_field": "image_vector",
                                "backbone": card["backbone"], "runtime": "torch"}}})
    for i, f in enumerate(files):
        es.index(index=index_name, id=f"o{i}", document={"photo": f"class_3/{f.name}"})
    es.indices.refresh(index=index_name)
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    assert (summary["indexed"], summary["failed"]) == (2, 0)
    src = es.get(index=index_name, id="o1")["_source"]
    assert src["model_id"] == card["model_id"] and src["image_ref"] == f"class_3/{files[1].name}"
    assert len(src["image_vector"]) == 32
    assert esm_json("search", index_name, "--image", files[1], "-k", "1")["hits"][0]["id"] == "o1"
    assert esm_json("status", index_name)["without_vector"] == 0
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")   # again: same layout
    assert index_info(es, index_name).vector_field == "image_vector"


def test_the_shops_own_writes_at_the_same_moment_neither_fail_nor_lose_an_update(stack, es, index_name,
                                                                                tiny_model, tiny_data):
    """The shop's application updates its documents (stock counts) while es-metric writes their
    vectors: Elasticsearch answers a partial update that met a concurrent one with 409 (about 1 %
    of them here), which failed the image before. Every vector is written, and every value the
    shop wrote last is what the document holds."""
    import threading
    import uuid

    from elasticsearch import ConflictError

    from es_metric.index.client import make_client
    from es_metric.ingest.enqueue import job_spec
    from es_metric.ingest.jobs import JobProgress
    from es_metric.ingest.pipeline import process_batch

    files = [sorted((tiny_data / "class_1").iterdir())[i] for i in (0, 1)]
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    for i, f in enumerate(files):
        es.index(index=index_name, id=f"s{i}", document={"photo": f"{f.parent.name}/{f.name}"}, refresh=True)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    spec = job_spec(index_info(es, index_name), index_name, uuid.uuid4().hex[:16], "update",
                    roots=(str(tiny_data),))
    items = [{"ref": str(f), "id": f"s{i}"} for i, f in enumerate(files)]
    rounds, stop = 150, threading.Event()
    written: dict[tuple[int, str], int] = {}   # (writer, document) -> the last count it wrote

    def shop(writer: int) -> None:
        client, n = make_client(stack), 0
        while not stop.is_set():
            n += 1
            for doc_id in ("s0", "s1"):
                try:
                    client.update(index=index_name, id=doc_id, doc={f"stock_{writer}": n})
                    written[writer, doc_id] = n
                except ConflictError:
                    pass     # the shop's own write lost to another of its writers: not ours to judge
    writers = [threading.Thread(target=shop, args=(w,)) for w in range(3)]
    for t in writers:
        t.start()
    try:
        JobProgress(stack, spec["job_id"]).start(len(items) * rounds, index=spec["index"], alias=index_name)
        outcomes = [process_batch(stack, es, spec, items) for _ in range(rounds)]
    finally:
        stop.set()
        for t in writers:
            t.join()
    failures = [f for o in outcomes for f in o["failures"]]
    assert failures == [] and sum(o["indexed"] for o in outcomes) == len(items) * rounds
    info = index_info(es, index_name)
    for doc_id in ("s0", "s1"):
        src = es.get(index=index_name, id=doc_id)["_source"]
        assert {w: src.get(f"stock_{w}") for w in range(3)} == {w: written.get((w, doc_id)) for w in range(3)}
        assert len(info.fields.read(src, info.vector_field)) == 32 and src["photo"].startswith("class_1/")
