"""User fields go under the document body; names Elasticsearch would read as metadata, and
es-metric's own fields, are refused with a reason (pure functions, checked as dicts)."""
import numpy as np
import pytest

from es_metric.index.docfields import FieldRefused, check_fields, check_id
from es_metric.index.fields import DocFields
from es_metric.ingest.pipeline import build_actions, check_items

JOB = {"job_id": "j", "alias": "shop", "index": "shop-v1", "model_id": "m1", "model_path": "/m.pt",
       "vector_field": "emb", "mode": "index"}


@pytest.mark.parametrize("name", ["_index", "_id", "_source", "_routing", "_version", "_op_type",
                                  "_anything", "image_path", "image_sha256", "model_id", "indexed_at",
                                  "emb", "emb.x", "image_path.raw"])
def test_reserved_names_are_refused(name):
    with pytest.raises(FieldRefused) as info:
        check_fields({name: 1}, DocFields.top_level("emb"))
    assert info.value.reason == "reserved_field" and repr(name) in info.value.message


def test_plain_names_pass_unchanged():
    fields = {"routing": "r", "version": 2, "version_type": "external", "parent": "p",
              "nested": {"_index": "x"}, "image": "free", "label": "a"}
    assert check_fields(fields, DocFields.top_level("emb")) == fields


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), (7, "7"), ("a/b", "a/b"),
                                            ("é" * 256, "é" * 256)])
def test_ids(value, expected):
    assert check_id(value) == expected


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, [1], "x" * 513, "é" * 257])
def test_bad_ids(value):
    with pytest.raises(FieldRefused) as info:
        check_id(value)
    assert info.value.reason == "bad_id"


def test_actions_put_user_fields_under_the_body_only():
    item = {"ref": "/r/a.jpg", "id": "doc-1",
            "fields": {"title": "t", "routing": "r", "version": 3, "version_type": "external"}}
    [action] = build_actions(JOB, [(item, "sha")], np.array([[0.5, 0.25]], np.float32))
    assert set(action) == {"_op_type", "_index", "_id", "_source"}
    assert (action["_op_type"], action["_index"], action["_id"]) == ("index", "shop-v1", "doc-1")
    body = action["_source"]
    assert body["routing"] == "r" and body["version"] == 3 and body["title"] == "t"
    assert body["emb"] == [0.5, 0.25] and body["model_id"] == "m1" and body["image_path"] == "/r/a.jpg"


def test_update_actions_carry_only_the_vector_and_bookkeeping():
    item = {"ref": "/r/a.jpg", "id": "doc-1", "fields": {"title": "ignored"}}
    [action] = build_actions({**JOB, "mode": "update"}, [(item, "sha")], np.zeros((1, 2), np.float32))
    assert action["_op_type"] == "update" and set(action["_source"]) == {"doc"}
    assert set(action["_source"]["doc"]) == {"emb", "image_path", "image_sha256", "model_id", "indexed_at"}


def test_worker_checks_items_from_any_sender():
    items = [{"ref": "/r/ok.jpg", "id": 5, "fields": {"a": 1}},
             {"ref": "/r/meta.jpg", "fields": {"_index": "other"}},
             {"ref": "/r/vec.jpg", "fields": {"emb": [1]}},
             {"ref": "/r/fields.jpg", "fields": ["not", "a", "dict"]},
             {"ref": "/r/id.jpg", "id": "x" * 600},
             {"id": "no-ref"}, "not an item"]
    ok, failures = check_items(items, DocFields.top_level("emb"))
    assert ok == [{"ref": "/r/ok.jpg", "id": "5", "fields": {"a": 1}}]
    assert [f["reason"] for f in failures] == ["reserved_field", "reserved_field", "bad_fields",
                                               "bad_id", "bad_item", "bad_item"]


def test_an_index_that_keeps_its_fields_under_an_object_reserves_only_that_name():
    shop = DocFields.under("es_metric")
    fields = {"model_id": "the shop's", "image_path": "/mnt/x.jpg", "image_vector": [1], "dba": "Acme"}
    assert check_fields(fields, shop) == fields
    with pytest.raises(FieldRefused, match="'es_metric'"):
        check_fields({"es_metric": {"model_id": "x"}}, shop)
    job = {**JOB, "vector_field": shop.vector, "fields": shop.record(), "mode": "update"}
    [action] = build_actions(job, [({"ref": "/r/a.jpg", "id": "d1", "source_ref": "a.jpg"}, "sha")],
                             np.array([[0.5, 0.25]], np.float32))
    assert list(action["_source"]["doc"]) == ["es_metric"]     # nothing else of the document
    mine = action["_source"]["doc"]["es_metric"]
    assert mine["image_vector"] == [0.5, 0.25] and mine["model_id"] == "m1" and mine["image_ref"] == "a.jpg"
