"""Pure rules of follow mode and the model change in place."""
from __future__ import annotations

from es_metric.index.indices import IndexInfo
from es_metric.index.record import Migration
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
    return IndexInfo(name="shop", concrete="shop", model_id="old", model_path="/m/old.pt",
                     vector_field="image_vector", dims=32, similarity="cosine",
                     migration=Migration.from_record(migration) if migration else None)


def test_a_hit_of_the_previous_model_is_accepted_only_once_search_switched_fields():
    moving = {"model_id": "new", "model_path": "/m/new.pt", "vector_field": "image_vector__new",
              "from_model_id": "old"}
    assert info().serves("old") and info().serves(None) and not info().serves("new")
    filling = info({**moving, "state": "filling"})
    assert not filling.serves("new")
    assert second_model(filling) == {"model_id": "new", "model_path": "/m/new.pt",
                                     "vector_field": "image_vector__new", "vector_only": True}
    switched = IndexInfo(name="shop", concrete="shop", model_id="new", model_path="/m/new.pt",
                         vector_field="image_vector__new", dims=24, similarity="l2_norm",
                         migration=Migration.from_record({**moving, "state": "switched"}))
    assert switched.serves("old") and switched.serves("new") and not switched.serves("other")
    assert second_model(switched) is None


def test_an_image_field_to_follow_is_never_one_es_metric_writes():
    import pytest

    from es_metric.errors import ConfigError
    from es_metric.index.fields import DocFields
    from es_metric.ingest.enqueue import check_image_field

    shop = IndexInfo(name="shop", concrete="shop", model_id="m", model_path="/m.pt",
                     vector_field="es_metric.image_vector", dims=32, similarity="cosine",
                     recorded_fields=DocFields.under("es_metric"))
    check_image_field(shop, "photo")
    check_image_field(shop, "image_ref")            # the shop's own field of that name
    for mine in ("es_metric.image_ref", "es_metric", "es_metric.image_path"):
        with pytest.raises(ConfigError, match="es-metric writes itself"):
            check_image_field(shop, mine)
    check_image_field(info(), "image_path")          # an index es-metric made: its own images again
    with pytest.raises(ConfigError):
        check_image_field(info(), "image_ref")
