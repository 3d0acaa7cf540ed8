"""Multi-photo request bodies and actions as dicts (pure)."""
from __future__ import annotations

import numpy as np
import pytest

from es_metric.errors import ConfigError, MappingMismatch
from es_metric.index.fields import DocFields
from es_metric.index.gallery import layout, multi_photo_vector_field
from es_metric.index.mappings import existing_index_update, new_index_body
from es_metric.ingest.photos import expand, gallery_actions
from es_metric.search.gallery import combine, matched_image

CARD = {"model_id": "m1", "dims": 2, "similarity": "cosine", "backbone": "small-cnn"}


def test_a_multi_photo_index_nests_ref_sha_and_vector_and_records_the_field():
    body = new_index_body(CARD, "/m.pt", vector_field=multi_photo_vector_field())
    photos = body["mappings"]["properties"]["photos"]
    assert photos["type"] == "nested" and set(photos["properties"]) == {"ref", "sha256", "vector"}
    assert photos["properties"]["vector"]["dims"] == 2
    assert body["mappings"]["_meta"]["es_metric"]["photos_field"] == "photos"
    assert layout("photos.vector").has_vector() == {"nested": {"path": "photos", "query": {
        "exists": {"field": "photos.vector"}}}}
    assert layout("image_vector").has_vector() == {"exists": {"field": "image_vector"}}
    with pytest.raises(ConfigError):
        multi_photo_vector_field("_source")


def test_existing_index_gets_the_nested_field_under_its_fields_object():
    update = existing_index_update(CARD, "/m.pt", {"properties": {"title": {"type": "text"},
                                                                  "photos": {"type": "keyword"}}},
                                   vector_field="photos.vector")
    assert set(update["properties"]) == {"es_metric"}          # the shop's photos field untouched
    mine = update["_meta"]["es_metric"]
    assert (mine["vector_field"], mine["photos_field"]) == ("es_metric.photos.vector", "es_metric.photos")
    nested = DocFields.mapping_of(update["properties"], "es_metric.photos")
    assert nested["type"] == "nested" and nested["properties"]["vector"]["dims"] == 2
    with pytest.raises(MappingMismatch, match="'es_metric'"):
        existing_index_update(CARD, "/m.pt", {"properties": {"es_metric": {"type": "keyword"}}},
                              vector_field="photos.vector")


def test_gallery_actions_one_document_per_item_failed_photos_do_not_cost_it():
    items = [{"ref": "a1", "refs": ["a1", "a2", "a1"], "id": "A", "fields": {"t": 1}},
             {"ref": "b1", "refs": ["b1"], "id": "B", "fields": {}},
             {"ref": "c1", "refs": "c1", "id": "C", "fields": {}}]
    kept, photos, refused = expand(items, multi=True)
    assert [p["ref"] for p in photos] == ["a1", "a2", "b1"] and refused[0]["reason"] == "bad_item"
    good = [(photos[0], "s1"), (photos[1], "s2")]
    failures = [{"ref": "b1", "reason": "url_not_found", "message": "404", "doc_id": "B"}]
    job = {"photos_field": "photos", "vector_field": "photos.vector", "index": "i", "model_id": "m1",
           "mode": "index"}
    actions, owners, failed = gallery_actions(job, kept, good, np.array([[1, 0], [0, 1]], np.float32), failures)
    [a] = actions
    assert a["_id"] == "A" and a["_source"]["t"] == 1 and a["_source"]["image_path"] == "a1"
    assert [(p["ref"], p["sha256"], p["vector"]) for p in a["_source"]["photos"]] == [
        ("a1", "s1", [1.0, 0.0]), ("a2", "s2", [0.0, 1.0])]
    assert failed == [{"ref": "b1", "reason": "url_not_found", "message": "404", "doc_id": "B"}]
    _, _, several = expand([{"ref": "a", "refs": ["a", "b"], "id": "X"}], multi=False)
    assert several[0]["reason"] == "several_photos"


def test_combined_query_and_matched_image():
    assert combine([[1, 0], [0, 1]], "cosine") == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert combine([[2, 0], [0, 2]], "l2_norm") == pytest.approx([1, 1])
    hit = {"inner_hits": {"photos": {"hits": {"hits": [
        {"_nested": {"field": "photos", "offset": 2}, "_score": 0.9, "fields": {"photos": [{"ref": ["x.jpg"]}]}}]}}}}
    assert matched_image(hit, "photos") == {"ref": "x.jpg", "score": 0.9, "offset": 2}
    assert matched_image({"_id": "text-only"}, "photos") is None
