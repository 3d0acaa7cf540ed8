"""Where DBA keeps its state, and who may write it: mapping bodies as dicts."""
import pytest

from es_metric.index.dbafields import DbaFields, augmented_doc, dba_properties, marker, raw_state
from es_metric.index.fields import DocFields
from es_metric.index.mappings import IndexOptions, existing_index_update, index_meta, new_index_body

CARD = {"model_id": "m1", "dims": 64, "similarity": "cosine", "backbone": "small-cnn"}
DBA_CARD = {**CARD, "rerank": {"qe_k": 10, "qe_alpha": 3.0, "dba_k": 10, "dba_alpha": 3.0}}


def test_every_dba_name_is_the_index_layouts_own():
    top = DocFields.top_level("emb")
    f = DbaFields.of(top)
    assert (f.vector, f.raw, f.marker, f.stamp, f.model_id) == (
        "emb", "emb_raw", "emb_dba", "indexed_at", "model_id")
    assert top.dba_derived == ("emb_raw", "emb_dba", "dba")  # the older pass's marker too
    assert {"emb_raw", "emb_dba", "dba"} <= top.reserved  # no manifest column may take them
    shop = DocFields.under("esm", "emb")  # an --existing index: all under es-metric's object
    g = DbaFields.of(shop)
    assert (g.vector, g.raw, g.marker, g.stamp, g.model_id) == (
        "esm.emb", "esm.emb_raw", "esm.emb_dba", "esm.indexed_at", "esm.model_id")
    assert shop.dba_derived == ("esm.emb_raw", "esm.emb_dba", "esm.dba")


def test_the_raw_copy_is_indexed_as_the_searched_vector_is():
    vector = {"type": "dense_vector", "dims": 64, "index": True, "similarity": "cosine",
              "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100,
                                "rescore_vector": {"oversample": 3.0}}}
    props = dba_properties(DbaFields.of("emb"), vector)
    assert props["emb_raw"] == vector  # same dims, similarity and graph: kNN on raw vectors
    assert props["emb_dba"]["properties"] == {"run": {"type": "keyword"}, "at": {"type": "date"}}
    assert props["emb_dba"]["dynamic"] is False  # k, alpha, kth: kept in _source, not mapped


@pytest.mark.parametrize("mapping,state", [
    ({}, "absent"),
    ({"v_raw": {"type": "dense_vector", "dims": 4, "index": True, "similarity": "cosine"}}, "indexed"),
    ({"v_raw": {"type": "dense_vector", "dims": 4, "index": False}}, "unindexed"),  # before this change
    ({"v_raw": {"type": "keyword"}}, "unindexed"),                                  # a shop's own field
])
def test_raw_state_tells_whether_knn_on_raw_vectors_works(mapping, state):
    assert raw_state(mapping, DbaFields.of("v")) == state
    under = {"esm": {"properties": mapping}, **mapping}  # a shop's own top-level field never counts
    assert raw_state(under, DbaFields.of(DocFields.under("esm", "v"))) == state


def test_an_augmented_document_carries_both_vectors_and_its_marker():
    mark = marker(10, 3.0, 0.812345678, "run1", "2026-01-01T00:00:00Z")
    assert mark == {"k": 10, "alpha": 3.0, "kth": 0.8123457, "run": "run1", "at": "2026-01-01T00:00:00Z"}
    assert augmented_doc(DbaFields.of("v"), [1.0], [0.5], mark) == {"v": [1.0], "v_raw": [0.5], "v_dba": mark}
    assert augmented_doc(DbaFields.of(DocFields.under("esm", "v")), [1.0], [0.5], mark) == {
        "esm": {"v": [1.0], "v_raw": [0.5], "v_dba": mark}}  # a partial update: merged into the object


def test_a_new_index_maps_dba_fields_only_when_its_card_asks_for_dba():
    with_dba = new_index_body(DBA_CARD, "/m.pt", options=IndexOptions("hnsw"))["mappings"]
    without = new_index_body(CARD, "/m.pt")["mappings"]
    assert with_dba["_meta"]["es_metric"]["dba"] is True and "image_vector_raw" in with_dba["properties"]
    assert without["_meta"]["es_metric"]["dba"] is False and "image_vector_raw" not in without["properties"]
    assert with_dba["_source"] == {"excludes": ["image_vector", "image_vector_raw"]}  # lean: both out


def test_a_shops_index_gets_dba_fields_under_the_object_and_only_when_asked():
    shop = {"properties": {"title": {"type": "text"}, "image_vector_raw": {"type": "keyword"},
                           "image_vector_dba": {"type": "keyword"}}, "_meta": {"owner": "shop"}}
    plain = existing_index_update(DBA_CARD, "/m.pt", shop)  # the card asks; the shop did not
    assert plain["_meta"]["es_metric"]["dba"] is False
    assert not {"image_vector_raw", "image_vector_dba"} & set(plain["properties"]["es_metric"]["properties"])
    asked = existing_index_update(DBA_CARD, "/m.pt", shop, dba=True)
    assert asked["_meta"]["es_metric"]["dba"] is True and asked["_meta"]["owner"] == "shop"
    assert set(asked["properties"]) == {"es_metric"}  # the shop's fields are never re-mapped
    mine = asked["properties"]["es_metric"]["properties"]
    assert mine["image_vector_raw"]["dims"] == 64 and mine["image_vector_dba"]["type"] == "object"
    again = {"properties": {**shop["properties"], **asked["properties"]}, "_meta": asked["_meta"]}
    assert existing_index_update(DBA_CARD, "/m.pt", again, dba=True)["properties"] == {}  # a re-run


def test_multi_photo_indices_never_run_dba():
    assert index_meta(DBA_CARD, "/m.pt", "photos.vector")["es_metric"]["dba"] is False
