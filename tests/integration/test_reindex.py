"""Blue/green reindex to a model with other dims while searches keep running."""
from __future__ import annotations

import threading

import pytest

from es_metric.index.indices import count, index_info
from es_metric.search.service import SearchRequest, run_search
from tests.integration.helpers import esm, esm_json, stored_docs

pytestmark = pytest.mark.integration


def test_reindex_swaps_alias_while_searches_never_fail(es, index_name, tiny_model, tiny_model_l2,
                                                       tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model, "--index-type", "int8_hnsw")
    esm_json("ingest", index_name, tiny_data)
    old = index_info(es, index_name)
    query = (tiny_data / "class_0" / "img_001.jpg").read_bytes()

    errors, answered, stop = [], [], threading.Event()

    def search_loop():
        from es_metric.index.client import make_client
        from es_metric.config import Settings
        client = make_client(Settings.from_env())
        while not stop.is_set():
            try:
                res = run_search(client, index_name, SearchRequest(image=query, k=5))
                assert len(res["hits"]) == 5
                answered.append(res["model_id"])
            except Exception as exc:  # any failure is a test failure
                errors.append(repr(exc))

    thread = threading.Thread(target=search_loop)
    thread.start()
    try:
        # the tiny l2 model need not beat its baseline: --force accepts it (the gate is tested below)
        out = esm_json("reindex", index_name, "--model", tiny_model_l2, "--force")
    finally:
        stop.set()
        thread.join()
    new = index_info(es, index_name)
    assert errors == []
    assert out["swapped"] and out["old_index"] == old.concrete and out["new_index"] == new.concrete
    assert new.dims == 24 and new.similarity == "l2_norm" and new.model_id != old.model_id
    assert count(es, index_name) == 96 == out["documents"] == out["vectors"]
    assert len(answered) > 3 and set(answered) <= {old.model_id, new.model_id}
    assert es.indices.exists(index=old.concrete)  # kept until --delete-old
    res = esm_json("search", index_name, "--image", tiny_data / "class_0" / "img_001.jpg", "-k", "3")
    assert res["model_id"] == new.model_id
    assert all(h["source"]["model_id"] == new.model_id for h in res["hits"])


def test_reindex_refuses_a_model_that_failed_its_gate(es, index_name, tiny_model, tmp_path):
    from es_metric.model.modelfile import load_model, save_model
    model = load_model(tiny_model)
    card = {**model.card, "model_id": "failed-gate-model"}
    card["metrics"] = {**card["metrics"], "gate": {**card["metrics"]["gate"], "passed": False}}
    bad = save_model(tmp_path / "bad.pt", model.encoder, card)
    esm("mapping", "create", index_name, "--model", tiny_model)
    result = esm("reindex", index_name, "--model", bad, ok=False)
    assert result.exit_code == 1 and "did not pass its evaluation gate" in result.output
    assert "--force" in result.output


def test_interrupted_reindex_can_be_abandoned_and_alias_never_moves(es, index_name, tiny_model,
                                                                    tiny_model_l2, tiny_data):
    from es_metric.model.modelfile import read_card
    from es_metric.ingest.reindex import prepare_target

    esm("mapping", "create", index_name, "--model", tiny_model)
    esm_json("ingest", index_name, tiny_data / "class_1")
    old = index_info(es, index_name)
    card = read_card(tiny_model_l2)
    target = prepare_target(es, old, card, str(tiny_model_l2))  # as if a reindex died after step 1
    assert es.indices.exists(index=target) and index_info(es, index_name).concrete == old.concrete
    meta = es.indices.get_mapping(index=target)[target]["mappings"]["_meta"]["es_metric"]
    assert meta["reindex_state"] == {"state": "building", "from": old.concrete}
    out = esm("reindex", index_name, "--model", tiny_model_l2, "--abandon")
    assert target in out.output and not es.indices.exists(index=target)
    assert index_info(es, index_name).concrete == old.concrete
    refused = esm("reindex", index_name, "--model", tiny_model, "--abandon", ok=False)
    assert refused.exit_code == 1 and "is live" in refused.output


def test_writes_during_reindex_reach_the_new_index(es, stack, index_name, tiny_model, tiny_model_l2,
                                                   tiny_data, tmp_path):
    """While the new index is being built, users keep writing through the alias (create, update,
    delete) and an ingest job adds images with the old model: all of it is in the new index
    after the swap, re-embedded with the new model."""
    import random

    from es_metric.ingest.enqueue import enqueue
    from es_metric.model.modelfile import read_card
    from es_metric.ingest.reindex import reindex
    from es_metric.ingest.sources import Source
    from tests.imagegen import make_image

    esm("mapping", "create", index_name, "--model", tiny_model)
    esm_json("ingest", index_name, tiny_data / "class_0")   # 16 documents
    old = index_info(es, index_name)
    ids = sorted(h["_id"] for h in es.search(index=index_name, size=20, source=False)["hits"]["hits"])
    rng = random.Random(11)
    late = []
    for i in range(4):
        path = tmp_path / f"late_{i}.jpg"
        make_image(3 + i, rng).save(path)
        late.append(path)
    writes = []

    def write_during_reindex(total, done, failed):
        if writes:
            return
        writes.append(done)
        es.index(index=index_name, id="late-doc", document={"label": "late", "image_path": str(late[0])})
        es.update(index=index_name, id=ids[0], doc={"label": "renamed"})
        es.delete(index=index_name, id=ids[1])
        enqueue(stack, es, index_name, Source([{"ref": str(p), "id": None, "fields": {"label": "ingested"}}
                                               for p in late[1:]], [], (tmp_path,)))

    card = read_card(tiny_model_l2)
    res = reindex(stack, es, index_name, str(tiny_model_l2), card, force=True,
                  on_progress=write_during_reindex, timeout=120)
    assert writes, "the writes were not made during the reindex"
    new = index_info(es, index_name)
    assert new.concrete == res.new_index != old.concrete
    assert res.documents == 16 + 1 - 1 + 3 == count(es, index_name) == res.vectors
    assert res.caught_up >= 5 and res.removed == 1
    assert es.get(index=index_name, id=ids[0])["_source"]["label"] == "renamed"
    assert not es.exists(index=index_name, id=ids[1])
    late_doc = stored_docs(es, index_name, {"ids": {"values": ["late-doc"]}})["late-doc"]
    assert late_doc["model_id"] == new.model_id and len(late_doc["image_vector"]) == 24
    ingested = stored_docs(es, index_name, {"match": {"label": "ingested"}})
    assert len(ingested) == 3
    assert all(d["model_id"] == new.model_id and len(d["image_vector"]) == 24
               for d in ingested.values())
