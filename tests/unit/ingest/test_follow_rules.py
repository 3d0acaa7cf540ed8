"""Pure rules of follow mode and the model change in place."""
from __future__ import annotations

from es_metric.index.indices import IndexInfo
from es_metric.ingest.follow import is_stale
from es_metric.ingest.migrate import model_field, second_model


def test_stale_means_new_or_changed_image_only():
    assert is_stale({"photo": "a.jpg"}, "photo")                         # never embedded
    assert is_stale({"photo": "b.jpg", "image_ref": "a.jpg"}, "photo")   # photo changed
    assert not is_stale({"photo": "a.jpg", "image_ref": "a.jpg", "price": 3}, "photo")
    assert not is_stale({"title": "no photo"}, "photo")
    assert not is_stale({"photo": ""}, "photo")
    assert is_stale({"photo": ["a.jpg"], "image_ref": "a.jpg"}, "photo")  # hostile: refused later


def test_each_model_gets_its_own_field():
    assert model_field("image_vector", "small-cnn-triplet-abc") == "image_vector__small-cnn-triplet-abc"
    assert model_field("image_vector__old-model", "New.Model/x") == "image_vector__new_model_x"


def info(migration=None) -> IndexInfo:
    return IndexInfo("shop", "shop", "old", "/m/old.pt", "image_vector", 32, "cosine",
                     migration=migration)


def test_a_hit_of_the_previous_model_is_accepted_only_once_search_switched_fields():
    moving = {"model_id": "new", "model_path": "/m/new.pt", "vector_field": "image_vector__new",
              "from_model_id": "old"}
    assert info().serves("old") and info().serves(None) and not info().serves("new")
    filling = info({**moving, "state": "filling"})
    assert not filling.serves("new")
    assert second_model(filling) == {"model_id": "new", "model_path": "/m/new.pt",
                                     "vector_field": "image_vector__new", "vector_only": True}
    switched = IndexInfo("shop", "shop", "new", "/m/new.pt", "image_vector__new", 24, "l2_norm",
                         migration={**moving, "state": "switched"})
    assert switched.serves("old") and switched.serves("new") and not switched.serves("other")
    assert second_model(switched) is None
