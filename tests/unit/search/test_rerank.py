"""Query expansion, database-side augmentation and re-ranked evaluation, by hand on tiny vectors."""
import numpy as np
import pytest
import torch

from es_metric.search.rerank import (ReRank, ReRankedKNN, augment_database, blend, expand_query,
                                     query_similarities, similarities)
from es_metric.similarity import Metric
from es_metric.training.evaluate import Embedded, neighbours, retrieval_metrics


def unit(*xs):
    v = np.asarray(xs, np.float32)
    return v / np.linalg.norm(v)


def test_expand_query_weights_neighbours_by_similarity_cubed():
    q = unit(1, 0)
    nb = np.stack([unit(0.6, 0.8), unit(0, 1)])  # cos 0.6 and 0.0 with q
    out = expand_query(q, nb, nb @ q, alpha=3.0)
    expected = q + 0.6 ** 3 * nb[0] + 0.0 * nb[1]  # the orthogonal neighbour adds nothing
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected), atol=1e-6)


def test_expand_query_ignores_negative_similarities_and_averages_for_l2():
    q = unit(1, 0)
    out = expand_query(q, np.stack([unit(-1, 0.1)]), np.array([-0.99]), alpha=1.0)
    np.testing.assert_allclose(out, q, atol=1e-6)
    q2 = np.array([0.0, 0.0], np.float32)
    nb = np.array([[2.0, 0.0], [0.0, 4.0]], np.float32)
    out = expand_query(q2, nb, np.array([-2.0, -4.0]), metric=Metric.L2)
    np.testing.assert_allclose(out, [2 / 3, 4 / 3], atol=1e-6)  # the plain mean of the three


@pytest.mark.parametrize("metric", [Metric.COSINE, Metric.L2])
def test_the_query_paths_numpy_expansion_is_the_batch_blend_of_one_row(metric):
    """Search expands one query with numpy (a query node may have no torch); evaluation blends
    batches with torch: the two must rank alike."""
    rng = np.random.default_rng(3)
    q, nb = rng.standard_normal(16).astype(np.float32), rng.standard_normal((5, 16)).astype(np.float32)
    if metric is Metric.COSINE:
        q, nb = q / np.linalg.norm(q), nb / np.linalg.norm(nb, axis=1, keepdims=True)
    sims = query_similarities(q, nb, metric)
    np.testing.assert_allclose(sims, similarities(torch.from_numpy(q[None]), torch.from_numpy(nb),
                                                  metric)[0].numpy(), atol=1e-5)
    batch = blend(torch.from_numpy(q[None]), torch.from_numpy(nb[None]),
                  torch.from_numpy(sims[None]), 2.0, metric)[0].numpy()
    np.testing.assert_allclose(expand_query(q, nb, sims, 2.0, metric), batch, atol=1e-5)


def test_database_augmentation_blends_each_vector_with_its_nearest_other():
    v = np.stack([unit(1, 0), unit(0.8, 0.6), unit(0, 1)])
    out = augment_database(v, k=1, alpha=1.0)
    # 0's nearest other is 1 (cos 0.8); 1's is 0 (0.8, vs 0.6 for 2); 2's is 1 (0.6)
    for i, (j, s) in enumerate([(1, 0.8), (0, 0.8), (1, 0.6)]):
        e = v[i] + s * v[j]
        np.testing.assert_allclose(out[i], e / np.linalg.norm(e), atol=1e-6)
    np.testing.assert_allclose(augment_database(v, k=0), v)


def _hard_case():
    """Class 0 spread on an arc: its far members are nearer a class-1 point than to each other,
    but their close neighbours are of their own class."""
    angles = np.radians([0, 20, 40, 60, 80])
    cls0 = np.stack([np.cos(angles), np.sin(angles)], 1)
    cls1 = np.stack([unit(np.cos(np.radians(-22)), np.sin(np.radians(-22))),
                     unit(np.cos(np.radians(-70)), np.sin(np.radians(-70)))])
    return np.vstack([cls0, cls1]).astype(np.float32), np.array([0, 0, 0, 0, 0, 1, 1])


def test_reranked_knn_excludes_the_query_in_both_rounds():
    v, _ = _hard_case()
    t = torch.from_numpy(v)
    for rr in (ReRank(), ReRank(qe_k=2)):
        _, idx = ReRankedKNN(Metric.COSINE, rr)(t, 3, t, ref_includes_query=True)
        assert idx.shape == (7, 3)
        assert not (idx == torch.arange(7)[:, None]).any()


def test_query_expansion_moves_a_query_toward_its_class():
    v, labels = _hard_case()
    plain = neighbours(v, Metric.COSINE, 6)
    expanded = neighbours(v, Metric.COSINE, 6, ReRank(qe_k=1, qe_alpha=1.0))
    # item 0 (0°): plain ranking has the class-1 point at -22° second, before 40°
    assert labels[plain[0]].tolist() == [0, 1, 0, 0, 1, 0]
    # expanded with its nearest neighbour (20°, cos 0.94) the query sits at 9.7°: 40° comes first
    assert labels[expanded[0]].tolist() == [0, 0, 1, 0, 0, 1]
    before = retrieval_metrics(Embedded(v, labels, [], Metric.COSINE, "p"))
    after = retrieval_metrics(Embedded(v, labels, [], Metric.COSINE, "p"), ReRank(qe_k=1, qe_alpha=1.0))
    assert after["map_at_r"] > before["map_at_r"]
    assert after["rerank"]["qe_k"] == 1 and before["rerank"]["qe_k"] == 0


def test_no_rerank_metrics_equal_plain_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.repeat(np.arange(8), 5)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(neighbours(v, Metric.COSINE, 5), np.argsort(-sims, 1)[:, :5])
    from es_metric.training.evaluate import map_at_r
    order = np.argsort(-sims, 1)
    by_hand = np.mean([map_at_r(labels[order[i]], labels[i], 4) for i in range(40)])
    assert retrieval_metrics(Embedded(v, labels, [], Metric.COSINE, "r"))["map_at_r"] == pytest.approx(by_hand)


def test_rerank_settings_round_trip():
    rr = ReRank(qe_k=5, qe_alpha=2.0, dba_k=3)
    assert ReRank.from_dict(rr.as_dict()) == rr and ReRank.from_dict(None) == ReRank()
    assert rr.active and not ReRank().active


def test_neighbours_of_a_few_rows_are_those_of_the_whole_ranking():
    """The report's image grid ranks only its few queries (rows x N, not N x N on a large
    catalogue): the same neighbours as every item's ranking, with and without QE."""
    rng = np.random.default_rng(4)
    v = rng.standard_normal((40, 6)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = [3, 17, 0, 39]
    for rr in (ReRank(), ReRank(qe_k=3, qe_alpha=3.0)):
        everything = neighbours(v, Metric.COSINE, 5, rr)
        few = neighbours(v, Metric.COSINE, 5, rr, rows=rows)
        assert few.tolist() == everything[rows].tolist()
        assert all(r not in found for r, found in zip(rows, few.tolist()))


def test_dba_and_qe_are_the_same_in_row_blocks(monkeypatch):
    """Against a large collection the neighbours are found a few rows at a time (memory bounded:
    4,096 x 1M similarities would be 16 GB): the same neighbours, so the same vectors (to the
    last float bits a matrix product of another shape may round differently)."""
    from es_metric.search import rerank

    rng = np.random.default_rng(7)
    v = rng.standard_normal((40, 6)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    whole_dba = rerank.augment_database(v, 3)
    whole_qe = rerank.expand_queries(torch.from_numpy(v[:9]), torch.from_numpy(v), 3, 3.0, Metric.COSINE,
                                     self_rows=torch.arange(9))
    monkeypatch.setattr(rerank, "TOP_CELLS", 40)          # one row of 40 at a time
    assert np.allclose(rerank.augment_database(v, 3), whole_dba, rtol=0, atol=1e-6)
    assert torch.allclose(rerank.expand_queries(torch.from_numpy(v[:9]), torch.from_numpy(v), 3, 3.0, Metric.COSINE,
                                                self_rows=torch.arange(9)), whole_qe, rtol=0, atol=1e-6)
