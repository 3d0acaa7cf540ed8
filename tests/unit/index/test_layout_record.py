"""VectorLayout (where the vectors are) and the typed index record, as pure values."""
from __future__ import annotations

import pytest

from es_metric.errors import IndexStateError
from es_metric.index.fields import DocFields
from es_metric.index.layout import VectorLayout
from es_metric.index.record import IndexMeta, Migration


def test_the_layout_of_a_field_name_and_of_a_shops_object():
    single, nested = VectorLayout.of_field("image_vector"), VectorLayout.of_field("photos.vector")
    assert (single.nested, single.leaf, single.has_vector()) == (False, "image_vector",
                                                                 {"exists": {"field": "image_vector"}})
    assert (nested.nested, nested.photos, nested.leaf) == (True, "photos", "vector")
    assert nested.has_vector() == {"nested": {"path": "photos", "query": {"exists": {"field": "photos.vector"}}}}
    shop = DocFields.under("es_metric", photos="photos").layout
    assert (shop.vector, shop.photos, shop.leaf) == ("es_metric.photos.vector", "es_metric.photos", "vector")
    second = shop.with_vector("es_metric.photos.vector__m2")  # a second model: another leaf, same photos
    assert (second.photos, second.leaf) == ("es_metric.photos", "vector__m2")
    with pytest.raises(ValueError):
        VectorLayout("vector", "photos")


def test_a_second_models_vector_is_merged_into_the_photos_and_removed_again():
    src = {"es_metric": {"photos": [{"ref": "a", "vector": [1.0]}, {"ref": "b", "vector": [2.0]}, "junk"]}}
    new = VectorLayout("es_metric.photos.vector__m2", "es_metric.photos")
    merged = new.merged_photos(src, {"b": [9.0, 8.0], "gone": [0.0]})
    assert merged == [{"ref": "a", "vector": [1.0]}, {"ref": "b", "vector": [2.0], "vector__m2": [9.0, 8.0]}]
    assert new.merged_photos(src, {"other": [1.0]}) is None  # nothing changes: no write
    old = VectorLayout("es_metric.photos.vector", "es_metric.photos")
    assert old.merged_photos({"es_metric": {"photos": merged}}, None) == [
        {"ref": "a"}, {"ref": "b", "vector__m2": [9.0, 8.0]}]
    assert old.photo_refs(src) == ["a", "b"] and old.photo_vectors(src) == [[1.0], [2.0]]
    assert src["es_metric"]["photos"][1] == {"ref": "b", "vector": [2.0]}  # the read source untouched


def test_the_record_is_typed_and_a_broken_one_is_a_clear_error():
    record = {"model_id": "m2", "model_path": "/m2.pt", "vector_field": "image_vector__m2", "dims": "24",
              "similarity": "cosine", "image_roots": ["/srv"], "backbone": "x",
              "migration": {"state": "switched", "model_id": "m2", "model_path": "/m2.pt",
                            "vector_field": "image_vector__m2", "from_model_id": "m1", "other": 1}}
    meta = IndexMeta.from_record(record)
    assert meta.dims == 24 and meta.image_roots == ("/srv",) and meta.layout == VectorLayout("image_vector__m2")
    assert meta.migration == Migration("switched", "m2", "/m2.pt", "image_vector__m2", "m1")
    assert meta.serves("m1") and meta.serves("m2") and meta.serves(None) and not meta.serves("m3")
    assert meta.migration.switched(5.0).record()["switched_at"] == 5.0
    with pytest.raises(IndexStateError, match="unusable"):
        IndexMeta.from_record({"model_id": "m"})
    with pytest.raises(IndexStateError, match="unknown state"):
        Migration.from_record({"state": "half", "model_id": "m"})


def test_a_window_reads_the_photos_of_a_shops_multi_photo_index_under_its_object():
    """--diversify/--collapse read each hit's photos: under the shop's object, not a top-level
    field of the dotted name (read that way, every vector was None on main)."""
    from es_metric.index.indices import IndexInfo
    from es_metric.search.page import _vector

    info = IndexInfo(name="shop", concrete="shop", model_id="m", model_path="/m.pt",
                     vector_field="es_metric.photos.vector", dims=2, similarity="cosine",
                     photos_field="es_metric.photos", recorded_fields=DocFields.under("es_metric", photos="photos"))
    photos = [{"ref": "a", "vector": [3.0, 0.0]}, {"ref": "b", "vector": [0.0, 4.0]}]
    hit = {"_source": {"es_metric": {"photos": photos}}}
    assert _vector(info, hit) == pytest.approx([0.6, 0.8])  # the mean of the photos, normalised
