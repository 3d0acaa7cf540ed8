"""Mapping bodies from the model card, and the one-metric rule."""
import pytest

from es_metric.errors import ConfigError, MappingMismatch
from es_metric.index.indices import rescore_factor
from es_metric.index.mappings import (IndexOptions, check_compatible, existing_index_update,
                                      new_index_body, versioned_name)
from es_metric.similarity import Metric
from es_metric.training.losses import OBJECTIVES

CARD = {"model_id": "small-cnn-triplet-abc", "dims": 128, "similarity": "cosine", "backbone": "small-cnn"}


def test_new_index_body_takes_dims_and_similarity_from_card():
    body = new_index_body(CARD, "/m.pt", options=IndexOptions("int8_hnsw", 24, 200),
                          text_fields=("title",), keyword_fields=("category",))
    vec = body["mappings"]["properties"]["image_vector"]
    assert vec == {"type": "dense_vector", "dims": 128, "index": True, "similarity": "cosine",
                   "index_options": {"type": "int8_hnsw", "m": 24, "ef_construction": 200,
                                     "rescore_vector": {"oversample": 3.0}}}
    props = body["mappings"]["properties"]
    assert props["title"]["fields"]["keyword"]["type"] == "keyword"
    assert props["category"] == {"type": "keyword"}
    assert props["model_id"] == {"type": "keyword"} and props["image_sha256"] == {"type": "keyword"}
    assert body["mappings"]["_meta"]["es_metric"]["model_id"] == CARD["model_id"]


@pytest.mark.parametrize("kind,oversample,expected", [
    ("int8_hnsw", 3.0, {"oversample": 3.0}), ("bbq_hnsw", 2, {"oversample": 2.0}),
    ("int4_hnsw", 3.0, {"oversample": 3.0}), ("int8_hnsw", 0, None),
    ("hnsw", 3.0, None), ("flat", 3.0, None),  # float vectors: nothing to rescore (ES refuses it)
])
def test_quantised_types_rescore_with_the_full_vectors_by_default(kind, oversample, expected):
    assert IndexOptions(kind, oversample=oversample).as_dict(128).get("rescore_vector") == expected
    assert IndexOptions(kind).as_dict(128).get("rescore_vector") == (
        {"oversample": 3.0} if kind in ("int8_hnsw", "bbq_hnsw", "int4_hnsw") else None)


@pytest.mark.parametrize("kind,oversample,factor", [
    ("int8_hnsw", 3.0, 3.0), ("bbq_hnsw", 2, 2.0), ("int8_hnsw", 0, 1.0), ("hnsw", 3.0, 1.0)])
def test_a_rescored_field_widens_the_knn_candidates_by_its_oversample(kind, oversample, factor):
    field = new_index_body(CARD, "/m.pt", options=IndexOptions(kind, oversample=oversample))
    assert rescore_factor(field["mappings"]["properties"]["image_vector"]) == factor
    assert rescore_factor({}) == 1.0  # an index's field of another mapping shape: unchanged


@pytest.mark.parametrize("oversample", [0.5, 11, -1])
def test_rescore_oversample_out_of_range_is_refused(oversample):
    with pytest.raises(ConfigError, match="oversample"):
        IndexOptions("int8_hnsw", oversample=oversample).as_dict(128)


def test_index_records_the_runtime_of_its_vectors():
    meta = new_index_body(CARD, "/m.pt")["mappings"]["_meta"]["es_metric"]
    assert meta["runtime"] == "torch" and "runtime_parity" not in meta
    card = {**CARD, "runtime": {"chosen": "onnxruntime", "parity_min_cosine": 0.999998}}
    meta = new_index_body(card, "/m.pt")["mappings"]["_meta"]["es_metric"]
    assert (meta["runtime"], meta["runtime_parity"]) == ("onnxruntime", 0.999998)


def test_bbq_needs_64_dims():
    with pytest.raises(ConfigError, match="at least 64 dims"):
        IndexOptions("bbq_hnsw").as_dict(32)
    assert IndexOptions("bbq_hnsw").as_dict(64)["type"] == "bbq_hnsw"


def test_existing_update_adds_one_object_of_its_own_and_keeps_meta():
    current = {"properties": {"title": {"type": "text"}, "image_path": {"type": "keyword"}},
               "_meta": {"owner": "shop"}}
    body = existing_index_update(CARD, "/m.pt", current)
    assert set(body["properties"]) == {"es_metric"}
    assert set(body["properties"]["es_metric"]["properties"]) == {
        "image_vector", "image_path", "image_sha256", "model_id", "indexed_at", "image_ref"}
    assert body["_meta"]["owner"] == "shop" and body["_meta"]["es_metric"]["dims"] == 128
    assert body["_meta"]["es_metric"]["vector_field"] == "es_metric.image_vector"


def test_existing_update_of_an_older_index_keeps_its_top_level_layout():
    old = {"model_id": CARD["model_id"], "vector_field": "image_vector", "dims": 128}
    vector = {"type": "dense_vector", "dims": 128, "similarity": "cosine", "index_options": {"type": "flat"}}
    current = {"properties": {"image_vector": vector, "model_id": {"type": "text"}},
               "_meta": {"es_metric": old}}
    body = existing_index_update(CARD, "/m.pt", current, options=IndexOptions("int8_hnsw"))
    assert set(body["properties"]) == {"image_path", "image_sha256", "indexed_at", "image_ref"}  # what is missing
    assert body["_meta"]["es_metric"]["vector_field"] == "image_vector"
    assert body["_meta"]["es_metric"]["fields"]["model_id"] == "model_id"


@pytest.mark.parametrize("field,match", [
    ({"type": "dense_vector", "dims": 64, "similarity": "cosine"}, "has 64 dims"),
    ({"type": "dense_vector", "dims": 128, "similarity": "l2_norm"}, "similarity 'l2_norm'"),
    ({"type": "keyword"}, "not dense_vector"),
])
def test_incompatible_vector_field_is_refused(field, match):
    with pytest.raises(MappingMismatch, match=match):
        check_compatible(CARD, field)


def test_versioned_name():
    assert versioned_name("shop", "m-1") == "shop-m-1"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_training_metric_and_mapping_similarity_agree(name):
    """One Metric drives both: the loss trains for it and the mapping serves it."""
    metric = OBJECTIVES[name].metric
    card = {**CARD, "similarity": metric.es_similarity}
    vec = new_index_body(card, "/m.pt")["mappings"]["properties"]["image_vector"]
    assert vec["similarity"] == metric.value
    assert (metric is Metric.COSINE) == metric.normalize
