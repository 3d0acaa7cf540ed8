"""Query expansion and database-side augmentation on the real stack: the search path ranks as
the pure functions (and `esm evaluate`) say it should."""
from __future__ import annotations

import numpy as np
import pytest

from es_metric.search.rerank import augment_database, expand_query
from es_metric.similarity import Metric
from tests.integration.helpers import esm, esm_error, esm_json, stored_docs

pytestmark = pytest.mark.integration


def _stored(es, index: str) -> dict[str, dict]:
    return stored_docs(es, index)


@pytest.fixture
def indexed(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = esm_json("ingest", index_name, tiny_data)
    assert summary["dba"] is None  # the tiny model's card asks for no DBA
    return index_name


def _exact(vectors: dict[str, np.ndarray], query: np.ndarray, exclude: str, k: int) -> list[str]:
    ids = [i for i in vectors if i != exclude]
    sims = np.stack([vectors[i] for i in ids]) @ query
    return [ids[j] for j in np.argsort(-sims)[:k]]


def test_query_expansion_on_the_search_path_equals_the_pure_function(es, indexed):
    docs = _stored(es, indexed)
    vecs = {i: np.asarray(d["image_vector"], np.float32) for i, d in docs.items()}

    def expanded_ranking(like: str) -> list[str]:
        q = vecs[like]
        nb = np.stack([vecs[i] for i in _exact(vecs, q, like, 4)])
        return _exact(vecs, expand_query(q, nb, nb @ q, alpha=3.0), like, 8)

    # a document whose ranking query expansion changes (so the test can tell QE ran)
    like = next(i for i in sorted(vecs) if expanded_ranking(i) != _exact(vecs, vecs[i], i, 8))
    q, expected = vecs[like], expanded_ranking(like)

    plain = esm_json("search", indexed, "--like", like, "-k", "8")
    expanded = esm_json("search", indexed, "--like", like, "-k", "8", "--qe-k", "4")
    assert plain["query_expansion"]["k"] == 0 and expanded["query_expansion"] == {"k": 4, "alpha": 3.0}
    assert [h["id"] for h in plain["hits"]] == _exact(vecs, q, like, 8)
    assert [h["id"] for h in expanded["hits"]] == expected
    assert like not in [h["id"] for h in expanded["hits"]]


def test_dba_pass_writes_blended_vectors_keeps_raw_ones_and_does_not_compound(es, indexed):
    before = _stored(es, indexed)
    ids = sorted(before)
    raw = np.stack([before[i]["image_vector"] for i in ids]).astype(np.float32)
    expected = augment_database(raw, 3, 3.0, Metric.COSINE)

    result = esm_json("dba", indexed, "--k", "3")
    assert result["documents"] == len(ids) and result["failed"] == 0
    after = _stored(es, indexed)
    got = np.stack([after[i]["image_vector"] for i in ids])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.stack([after[i]["image_vector_raw"] for i in ids]), raw, atol=1e-6)
    assert after[ids[0]]["image_vector_dba"]["k"] == 3
    assert esm_json("dba", indexed)["documents"] == 0  # nothing new: the next pass has no work
    assert "--full" in esm_error("dba", indexed, "--k", "5")  # two settings never mix

    full = esm_json("dba", indexed, "--full")  # every vector again: from the raw ones, not compounded
    assert full["documents"] == len(ids) and full["k"] == 3  # the k the index was augmented with
    again = _stored(es, indexed)
    np.testing.assert_allclose(np.stack([again[i]["image_vector"] for i in ids]), expected, atol=1e-5)
    hit = esm_json("search", indexed, "--like", ids[0], "-k", "3")["hits"][0]
    assert "image_vector_raw" not in hit["source"] and "image_vector" not in hit["source"]


def test_ingest_runs_the_dba_pass_the_model_card_records(es, index_name, tiny_model, tiny_data, tmp_path):
    from es_metric.model.modelfile import load_model, save_model

    model = load_model(tiny_model)
    card = dict(model.card, rerank={"qe_k": 2, "qe_alpha": 3.0, "dba_k": 2, "dba_alpha": 3.0})
    path = save_model(tmp_path / "dba.pt", model.encoder, card)
    esm("mapping", "create", index_name, "--model", path)
    summary = esm_json("ingest", index_name, tiny_data)
    assert summary["dba"]["k"] == 2 and summary["dba"]["documents"] == summary["indexed"]
    docs = _stored(es, index_name)
    assert all("image_vector_raw" in d for d in docs.values())
    res = esm_json("search", index_name, "--like", sorted(docs)[0], "-k", "3")
    assert res["query_expansion"]["k"] == 2  # the card's default on the search path
    ev = esm_json("evaluate", tiny_data, "--model", path)
    assert ev["rerank"] == card["rerank"]  # evaluate ranks as search does


def test_searching_by_document_needs_no_model_file(es, index_name, tiny_data, tmp_path):
    """The index records the card's re-ranking and near-duplicate threshold at mapping creation:
    more-like-this, its query expansion and --near-duplicates keep working when the model file
    is gone from the machine that searches (before, each read the model file for its card)."""
    import shutil

    from es_metric.model.modelfile import load_model, save_model
    from es_metric.training.train import TrainConfig, train
    trained = train(tiny_data, tmp_path / "trained.pt", TrainConfig(loss="triplet", backbone="small-cnn", dim=16,
                                                                    epochs=2, batch_size=48, seed=3, qe_k=3, dba_k=0))
    # training records QE only where it helps on validation: this card asks for it regardless
    loaded = load_model(trained.path)
    card = {**loaded.card, "rerank": {**loaded.card["rerank"], "qe_k": 3, "dba_k": 0}}
    model = save_model(tmp_path / "qe.pt", loaded.encoder, card)
    esm("mapping", "create", index_name, "--model", model, "--force")  # 2 epochs: the gate is not the point
    meta = es.indices.get_mapping(index=index_name)
    meta = next(iter(meta.values()))["mappings"]["_meta"]["es_metric"]
    assert meta["rerank"]["qe_k"] == 3 and meta["near_duplicate_threshold"] is not None
    esm_json("ingest", index_name, tiny_data / "class_1")
    like = sorted(_stored(es, index_name))[0]
    shutil.move(model, tmp_path / "elsewhere.pt")
    result = esm_json("search", index_name, "--like", like, "-k", "5")
    assert result["query_expansion"]["k"] == 3 and len(result["hits"]) == 5
    near = esm_json("search", index_name, "--like", like, "-k", "5", "--near-duplicates")
    assert {h["id"] for h in near["hits"]} <= {h["id"] for h in result["hits"]} | {like}
