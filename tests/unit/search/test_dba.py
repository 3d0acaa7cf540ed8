"""Incremental DBA's pure parts: the kNN bodies over raw vectors, exact neighbours, and the rule
that decides which existing documents a new one changes."""
import numpy as np
import pytest
import torch

from es_metric.index.dbafields import DbaFields
from es_metric.index.indices import IndexInfo
from es_metric.search.dba import not_augmented, owned, runs_after_ingest, window_start
from es_metric.search.dbamerge import enters
from es_metric.search.dbaknn import exact_top, neighbour_search, raw_knn, raw_read, score_similarity
from es_metric.search.rerank import augment_database, blend, blend_rows
from es_metric.similarity import Metric

F = DbaFields.of("v")


def test_raw_knn_finds_every_document_by_its_raw_vector_exactly_once():
    augmented, fresh = raw_knn(F, [0.1, 0.2], k=11, candidates=110)
    assert augmented == {"field": "v_raw", "query_vector": [0.1, 0.2], "k": 11, "num_candidates": 110}
    assert fresh["field"] == "v"  # not augmented yet: the searched vector is still the raw one
    assert fresh["filter"] == {"bool": {"must_not": [{"exists": {"field": "v_raw"}}]}}
    assert raw_knn(F, [0.0], k=50, candidates=10)[0]["num_candidates"] == 50   # never below k
    assert raw_knn(F, [0.0], k=5, candidates=10 ** 6)[0]["num_candidates"] == 10_000  # ES's ceiling


def test_a_neighbour_search_returns_what_decides_an_entry_and_no_vectors_nor_lists():
    body = neighbour_search(F, [1.0], k=101, candidates=202)
    assert body["size"] == 101 and body["_source"] == ["v_dba.k", "v_dba.kth"] and "docvalue_fields" not in body
    assert len(body["knn"]) == 2
    only = neighbour_search(F, [1.0], k=101, candidates=202, augmented_only=True)["knn"]
    assert [c["field"] for c in only] == ["v_raw"]  # a new document's entries: augmented ones only


def test_entered_documents_are_read_with_their_markers_and_versions():
    body = raw_read(F, ["a"], True, marked=True)
    assert body["_source"] == ["v_dba"] and body["seq_no_primary_term"] is True
    assert body["docvalue_fields"] == ["v_raw"]


def test_raw_vectors_are_read_from_the_raw_copy_or_from_the_vector():
    aug, fresh = raw_read(F, ["a", "b"], True), raw_read(F, ["a", "b"], False)
    assert aug["docvalue_fields"] == ["v_raw"] and fresh["docvalue_fields"] == ["v"]
    assert {"exists": {"field": "v_raw"}} in aug["query"]["bool"]["filter"]
    assert fresh["query"]["bool"]["must_not"] == [{"exists": {"field": "v_raw"}}]
    assert aug["size"] == 2 and aug["_source"] is False


@pytest.mark.parametrize("metric,sim,score", [(Metric.COSINE, 0.6, 0.8), (Metric.COSINE, -1.0, 0.0),
                                             (Metric.L2, -2.0, 1 / 5), (Metric.L2, 0.0, 1.0)])
def test_kNN_scores_convert_back_to_similarities(metric, sim, score):
    assert score_similarity(score, metric) == pytest.approx(sim)


def test_exact_top_ranks_by_similarity_and_leaves_the_document_out():
    vecs = np.eye(3, dtype=np.float32)
    q = np.array([0.9, 0.1, 0.0], np.float32)
    ids, sims, got = exact_top(q, ["self", "b", "c"], np.stack([q, vecs[1], vecs[2]]), 2, Metric.COSINE, "self")
    assert ids == ["b", "c"] and sims.tolist() == pytest.approx([0.1, 0.0])
    np.testing.assert_array_equal(got, vecs[1:])


@pytest.mark.parametrize("sim,mark,in_top,expected", [
    (0.80, {"k": 10, "kth": 0.79}, False, True),    # beats the k-th: enters, wherever it ranks
    (0.79, {"k": 10, "kth": 0.79}, True, False),    # a tie keeps the old k-th
    (0.50, {"k": 10, "kth": 0.79}, True, False),
    (0.50, {"k": 5, "kth": 0.90}, True, True),      # another k: judged by rank
    (0.50, {"k": 10}, False, False),                # an older marker without kth
])
def test_a_new_document_enters_a_neighbourhood_only_by_beating_its_kth(sim, mark, in_top, expected):
    assert enters(sim, mark, in_top, 10) is expected


def test_an_ingest_augments_only_what_it_wrote():
    q = not_augmented(F, since="2026-01-01T00:00:00.000+00:00")
    assert {"range": {"indexed_at": {"gte": "2026-01-01T00:00:00.000+00:00"}}} in q["bool"]["filter"]
    assert q["bool"]["must_not"] == [{"exists": {"field": "v_raw"}}]
    assert not_augmented(F)["bool"]["filter"] == [{"exists": {"field": "v"}}]  # esm dba: every one
    assert window_start(1_767_225_660.0) == "2026-01-01T00:00:00.000+00:00"  # 60 s of slack


@pytest.mark.parametrize("metric", [Metric.COSINE, Metric.L2])
def test_numpy_batch_blend_equals_the_torch_blend(metric):
    rng = np.random.default_rng(0)
    v, nb, s = (rng.standard_normal(shape).astype(np.float32) for shape in ((4, 8), (4, 3, 8), (4, 3)))
    ref = blend(torch.from_numpy(v), torch.from_numpy(nb), torch.from_numpy(s), 3.0, metric).numpy()
    np.testing.assert_allclose(blend_rows(v, nb, s, 3.0, metric), ref, atol=1e-6)


def test_blending_each_row_with_its_exact_top_k_is_the_full_pass():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [str(i) for i in range(30)]
    rows = []
    for i in range(30):
        _, sims, vecs = exact_top(x[i], ids, x, 4, Metric.COSINE, exclude=str(i))
        rows.append(blend_rows(x[i][None], vecs[None], sims[None], 3.0, Metric.COSINE)[0])
    np.testing.assert_allclose(np.stack(rows), augment_database(x, 4, 3.0), atol=1e-6)


def info(concrete: str, dba=None, photos=None) -> IndexInfo:
    return IndexInfo(name="shop", concrete=concrete, model_id="m1", model_path="/m.pt", vector_field="v", dims=8,
                     similarity="cosine", rerank={"dba_k": 10}, photos_field=photos, dba=dba)


def test_who_runs_dba_after_an_ingest():
    assert owned(info("shop-m1")) and not owned(info("shop"))
    assert runs_after_ingest(info("shop-m1"))            # es-metric's own index, older: the card
    assert not runs_after_ingest(info("shop"))           # a shop's, older: never without --dba
    assert runs_after_ingest(info("shop", dba=True))     # asked at mapping create
    assert not runs_after_ingest(info("shop-m1", dba=False))
    assert not runs_after_ingest(info("shop-m1", dba=True, photos="photos"))
