"""Where es-metric keeps its own fields (index/fields.py) and what ``image_ref`` stores
(index/imageref.py): pure, checked as dicts."""
from __future__ import annotations

import pytest

from es_metric.errors import ConfigError
from es_metric.index.fields import DocFields
from es_metric.index.imageref import is_stale, ref_token, retired
from es_metric.index.mappings import index_meta

CARD = {"model_id": "m1", "dims": 2, "similarity": "cosine", "backbone": "small-cnn"}


def test_an_older_record_is_the_top_level_layout():
    old = {"model_id": "m1", "vector_field": "image_vector", "dims": 2}
    f = DocFields.of_record(old)
    assert (f.vector, f.model_id, f.image_ref, f.raw_vector, f.dba, f.object) == (
        "image_vector", "model_id", "image_ref", "image_vector_raw", "dba", None)
    assert f.reserved == {"image_vector", "image_vector_raw", "image_vector_dba", "dba", "image_path",
                          "image_sha256", "model_id", "indexed_at", "image_ref"}


@pytest.mark.parametrize("photos", [None, "photos"])
def test_the_record_round_trips_through_the_index_meta(photos):
    f = DocFields.under("visual", "emb", photos)
    meta = index_meta(CARD, "/m.pt", f)["es_metric"]
    assert DocFields.of_record(meta) == f and f.reserved == {"visual"}
    assert meta["fields"]["object"] == "visual" and meta["fields"]["model_id"] == "visual.model_id"
    assert meta["vector_field"] == ("visual.photos.vector" if photos else "visual.emb")


def test_properties_nest_under_the_object_and_the_photos():
    f = DocFields.under("es_metric", photos="photos")
    props = f.properties({"type": "dense_vector", "dims": 2})
    assert list(props) == ["es_metric"]
    inner = props["es_metric"]["properties"]
    assert inner["model_id"] == {"type": "keyword"} and inner["indexed_at"] == {"type": "date"}
    assert inner["photos"]["type"] == "nested" and inner["photos"]["properties"]["vector"]["dims"] == 2
    assert f.has_vector() == {"nested": {"path": "es_metric.photos",
                                         "query": {"exists": {"field": "es_metric.photos.vector"}}}}


def test_read_pop_and_doc_follow_dotted_paths():
    src = {"es_metric": {"model_id": "m1", "photos": [{"ref": "a"}]}, "model_id": "shop"}
    assert DocFields.read(src, "es_metric.model_id") == "m1" and DocFields.read(src, "model_id") == "shop"
    assert DocFields.read(src, "es_metric.nothing.here") is None and DocFields.read(None, "x") is None
    assert DocFields.read({"a.b": 1}, "a.b") == 1   # a literal dotted key, as a client wrote it
    assert DocFields.doc({"o.a": 1, "o.b.c": None, "t": 2}) == {"o": {"a": 1, "b": {"c": None}}, "t": 2}
    assert DocFields.pop(src, "es_metric.photos") == [{"ref": "a"}] and "photos" not in src["es_metric"]


@pytest.mark.parametrize("name", ["", "_x", "a.b", "A", "x" * 65, "with space"])
def test_a_fields_object_must_be_a_plain_name(name):
    with pytest.raises(ConfigError, match="fields object"):
        DocFields.under(name)


def test_image_ref_stores_a_value_over_8_kib_by_its_digest_and_compares_it():
    long = "http://cdn.example/p.jpg?" + "x" * 9000
    token = ref_token(long)
    assert token.startswith("sha256:") and len(token) == 71 and ref_token(long) == token
    assert ref_token("a.jpg") == "a.jpg" and ref_token(["a", "b"]) == ["a", "b"] and ref_token("") is None
    assert ref_token(["a", long]).startswith("sha256:") and ref_token("é" * 4097).startswith("sha256:")
    f = DocFields.under("es_metric")
    assert not is_stale({"photo": long, "es_metric": {"image_ref": token}}, "photo", f)
    assert is_stale({"photo": long + "y", "es_metric": {"image_ref": token}}, "photo", f)
    assert is_stale({"photo": long}, "photo", f) and not is_stale({"photo": []}, "photo", f)


def test_a_refused_image_clears_the_vector_and_records_the_value():
    doc = retired(DocFields.under("es_metric"), "../etc/passwd")["es_metric"]
    assert doc["image_vector"] is None and doc["image_vector_raw"] is None and doc["image_path"] is None
    assert doc["image_ref"] == "../etc/passwd" and doc["indexed_at"]
    photos = retired(DocFields.top_level("photos.vector", "photos"), ["a", "b"])
    assert photos["photos"] is None and photos["image_ref"] == ["a", "b"]
