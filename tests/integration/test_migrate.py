"""Model change in place on a shop's index while searches run and a follower follows."""
from __future__ import annotations

import threading

import pytest

from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.fields import DocFields
from es_metric.index.indices import index_info
from es_metric.search.service import SearchRequest, run_search
from tests.integration.helpers import esm, esm_error, esm_json
from tests.integration.test_follow import embedded, start_follower, wait_until

pytestmark = pytest.mark.integration


def shop_index(es, name: str, tiny_data, n: int = 24) -> list:
    files = [f for d in ("class_0", "class_1", "class_2") for f in sorted((tiny_data / d).iterdir())[:8]]
    es.indices.create(index=name, mappings={"properties": {"title": {"type": "text"},
                                                           "photo": {"type": "keyword"}}})
    for i, f in enumerate(files[:n]):
        es.index(index=name, id=f"p{i}", document={"title": f"product {i}",
                                                   "photo": str(f.relative_to(tiny_data))})
    es.indices.refresh(index=name)
    return files


def test_model_change_in_place_never_fails_a_search_nor_mixes_models(
        es, index_name, tiny_model, tiny_model_l2, tiny_data, redis_cleanup):
    shop_index(es, index_name, tiny_data)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    old = index_info(es, index_name)
    query = (tiny_data / "class_0" / "img_001.jpg").read_bytes()
    errors, answers, stop = [], [], threading.Event()

    def search_loop():
        client = make_client(Settings.from_env())
        while not stop.is_set():
            try:
                res = run_search(client, index_name, SearchRequest(image=query, k=5))
                answers.append((res["model_id"], {DocFields.read(h["source"], old.fields.model_id)
                                                  for h in res["hits"]}, len(res["hits"])))
            except Exception as exc:  # any failure is a test failure
                errors.append(repr(exc))

    redis_cleanup(index_name)
    follower = start_follower(index_name, str(tiny_data))
    thread = threading.Thread(target=search_loop)
    thread.start()
    result = {}
    change = threading.Thread(target=lambda: result.update(
        esm_json("reindex", index_name, "--model", tiny_model_l2, "--force")))
    try:
        wait_until(lambda: esm_json("status", index_name)["follower"]["passes"] >= 1, "the follower")
        change.start()
        wait_until(lambda: index_info(es, index_name).migration, "the model change to start")
        es.index(index=index_name, id="new", refresh=True,  # the shop, during the change
                 document={"title": "added during the change", "photo": "class_3/img_000.jpg"})
        change.join()
        out = result
        wait_until(lambda: embedded(es, index_name, "new", "class_3/img_000.jpg", out["new_field"]),
                   "the new product")
    finally:
        stop.set()
        thread.join()
        follower.terminate()
        follower.wait(20)
    new = index_info(es, index_name)
    assert errors == []
    assert new.model_id == out["new_model"] != old.model_id and new.migration is None
    assert new.vector_field == out["new_field"] != old.vector_field and new.dims == 24
    assert out["documents"] == out["vectors"] >= 24 and out["failed"] == 0
    by_model = {m for m, _, _ in answers}
    assert by_model == {old.model_id, new.model_id}, "the loop saw the switch"
    for model, stamps, n in answers:  # one model's field per answer: stamps are that model's,
        assert n == 5                 # or, just after the switch, the previous one's (not mixed)
        assert stamps <= {model} or (model == new.model_id and stamps <= {old.model_id, new.model_id})
    es.indices.refresh(index=index_name)
    assert es.count(index=index_name, query={"exists": {"field": old.vector_field}})["count"] == 0
    assert es.count(index=index_name, query={"term": {new.fields.model_id: new.model_id}})["count"] == 25
    assert es.count(index=index_name, query={"exists": {"field": new.vector_field}})["count"] == 25
    res = esm_json("search", index_name, "--image", tiny_data / "class_3" / "img_000.jpg", "-k", "1")
    assert res["hits"][0]["id"] == "new" and res["model_id"] == new.model_id


def test_mapping_create_existing_with_another_model_points_to_reindex(es, index_name, tiny_model,
                                                                     tiny_data, tmp_path):
    from es_metric.model.card import read_card
    from es_metric.model.modelfile import load_model, save_model
    model = load_model(tiny_model)
    other = save_model(tmp_path / "other.pt", model.encoder,
                       {**model.card, "model_id": "same-dims-other-model"})
    shop_index(es, index_name, tiny_data, n=2)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    line = esm_error("mapping", "create", index_name, "--model", other, "--existing")
    assert "never mixes models" in line and f"esm reindex {index_name} --model" in line
    assert index_info(es, index_name).model_id == read_card(tiny_model)["model_id"]


def test_an_interrupted_change_in_place_can_be_abandoned(es, stack, index_name, tiny_model,
                                                         tiny_model_l2, tiny_data):
    from es_metric.ingest.migrate import fill, start
    from es_metric.model.card import read_card

    files = shop_index(es, index_name, tiny_data, n=4)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    old = index_info(es, index_name)
    start(es, old, read_card(tiny_model_l2), str(tiny_model_l2))  # as if it died before the switch
    assert fill(stack, es, index_info(es, index_name), timeout=60) == 0
    field = index_info(es, index_name).migration.vector_field
    es.indices.refresh(index=index_name)
    assert es.count(index=index_name, query={"exists": {"field": field}})["count"] == 4
    out = esm("reindex", index_name, "--model", tiny_model_l2, "--abandon").output
    assert "abandoned the change" in out and "deleted" not in out
    info = index_info(es, index_name)
    assert info.migration is None and info.model_id == old.model_id and info.vector_field == old.vector_field
    assert es.count(index=index_name, query={"exists": {"field": field}})["count"] == 0
    res = esm_json("search", index_name, "--image", files[0], "-k", "1")
    assert res["model_id"] == old.model_id and res["hits"][0]["id"] == "p0"
