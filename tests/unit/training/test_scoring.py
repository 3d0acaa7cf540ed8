"""Per-query product scores and the paired bootstrap, on vectors worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from es_metric.similarity import Metric
from es_metric.training import scoring
from es_metric.training.scoring import paired_bootstrap, score_queries, summary_of, top_stable


def unit(*angles_deg):
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


# index photos on the unit circle: A at 0° and 100°, B at 20°, C at 45°
INDEX = unit(0, 100, 20, 45)
PRODUCTS = ["A", "A", "B", "C"]


def test_rank_of_the_product_by_its_best_photo_and_map_at_r():
    # a query of A at 30°: cosines 0°→.866, 100°→.342, 20°→.985, 45°→.966
    s = score_queries(unit(30), ["A"], INDEX, PRODUCTS, Metric.COSINE)
    assert s.rank.tolist() == [3]                 # B (.985) and C (.966) before A's best (.866)
    # R = 2 photos of A; the first 2 photos are B, C: no hit -> AP@R 0
    assert s.ap_at_r.tolist() == [0.0]
    # a query of A at 5°: A0 .996 first, B .966, C .819, A100 .087 -> rank 1, AP@R = (1/1)/2
    s = score_queries(unit(5), ["A"], INDEX, PRODUCTS, Metric.COSINE)
    assert s.rank.tolist() == [1]
    assert s.ap_at_r.tolist() == [pytest.approx(0.5)]
    assert s.metric("mrr").tolist() == [1.0] and s.metric("recall_at_1").tolist() == [1.0]


def test_a_query_that_is_an_index_photo_never_finds_itself():
    # photo 0 (A at 0°) queries the index it belongs to: without itself A's best is 100° (.174),
    # behind B (.940) and C (.707)
    s = score_queries(INDEX[:1], ["A"], INDEX, PRODUCTS, Metric.COSINE, self_rows=np.array([0]))
    assert s.rank.tolist() == [3]
    assert s.ap_at_r.tolist() == [0.0]  # R = 1 (its one other photo), first photo is B


def test_group_precision_counts_the_first_products_in_the_query_group():
    groups = {"A": "mugs", "B": "mugs", "C": "plates"}
    s = score_queries(unit(5), ["A"], INDEX, PRODUCTS, Metric.COSINE, groups=groups)
    # three products only: A, B in "mugs", C not -> 2 of the first 3 (GROUP_K=10 cut at 3)
    assert s.group_precision.tolist() == [pytest.approx(2 / 3)]
    assert "group_precision_at_10" in summary_of(s)


def test_l2_models_rank_by_distance():
    s = score_queries(np.array([[0.9, 0.0]], np.float32), ["B"],
                      np.array([[1.0, 0.0], [3.0, 0.0]], np.float32), ["B", "C"], Metric.L2)
    assert s.rank.tolist() == [1]


def test_a_constructed_tie_is_not_better():
    scores = np.random.default_rng(0).random(200)
    tie = paired_bootstrap(scores, scores.copy(), "map_at_r")
    assert (tie.low, tie.high, tie.better) == (0.0, 0.0, False)
    # float noise (0.8974476 vs 0.8974474 on every query) is no difference either
    noisy = paired_bootstrap(scores + 2e-10, scores, "map_at_r")
    assert not noisy.better and noisy.difference == 0.0


def test_a_real_gain_has_its_interval_above_zero_and_a_lucky_few_do_not():
    base = np.zeros(200)
    model = base.copy()
    model[:60] = 1.0                       # right on 60 more queries of 200
    gain = paired_bootstrap(model, base, "recall_at_1")
    assert gain.better and gain.low > 0.2 and gain.difference == pytest.approx(0.3)
    lucky = base.copy()
    lucky[:3] = 1.0                        # 3 of 200 better, 2 worse: chance
    lucky[3:5] = -1.0
    assert not paired_bootstrap(lucky, base).better


def test_average_precision_over_every_photo_skips_the_query_itself():
    # photo 0 (A at 0°) queries the index; its product's other photo (100°) is last of the
    # three others: AP = 1/3 (its own row never counts)
    s = score_queries(INDEX[:1], ["A"], INDEX, PRODUCTS, Metric.COSINE, self_rows=np.array([0]), full=True)
    assert s.metric("map").tolist() == [pytest.approx(1 / 3)]


def _fig(diff: float, lo: float, hi: float, n: int = 34) -> dict:
    return {"in-domain": {"model": {"map_at_r": 0.5, "n_queries": n}, "baseline": {"map_at_r": 0.4},
                          "difference": {"map_at_r": {"difference": diff, "ci95": [lo, hi], "better": lo > 0}}}}


def test_the_gate_says_worse_as_good_or_too_few_to_tell_with_its_figures():
    from es_metric.training.validate import gate_verdict
    against = "pretrained-cosine efficientnet-lite0"
    better = gate_verdict(_fig(0.2, 0.05, 0.35), "in-domain", against)
    assert better["passed"] and better["verdict"] == f"better than {against}"
    tie = gate_verdict(_fig(0.0, -0.01, 0.012, n=200), "in-domain", against)
    assert not tie["passed"] and tie["verdict"] == (
        f"not better than {against} beyond the bootstrap margin: the baseline is as good "
        "(MAP@R +0.000 [-0.010, +0.012] on 200 validation queries)")
    few = gate_verdict(_fig(0.12, -0.024, 0.256), "in-domain", against)["verdict"]
    assert few.startswith(f"not better than {against} beyond the bootstrap margin: the baseline is as good "
                          "(MAP@R +0.120 [-0.024, +0.256] on 34 validation queries); the difference is positive")
    assert "esm evaluate" in few and "--force" in few
    worse = gate_verdict(_fig(-0.2, -0.3, -0.1), "in-domain", against)
    assert not worse["passed"] and worse["verdict"].startswith(f"worse than {against} beyond the bootstrap margin")
    assert "--head none" in worse["verdict"]


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_the_partial_top_k_is_the_stable_full_sort(k):
    """Ties (few distinct values), a query's own photo at -inf, k beyond the row: each row's
    first k columns are those of a stable argsort, in its order."""
    rng = np.random.default_rng(k)
    values = rng.integers(0, 6, size=(50, 37)).astype(np.float32) / 5
    values[np.arange(50), rng.integers(0, 37, 50)] = -np.inf
    values[7] = 0.4                                       # a row of one value: column order
    expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
    assert np.array_equal(top_stable(values, k), expected)
    smooth = rng.standard_normal((20, 300)).astype(np.float32)
    assert np.array_equal(top_stable(smooth, k), np.argsort(-smooth, axis=1, kind="stable")[:, :k])


def test_scores_are_the_same_in_small_blocks(monkeypatch):
    """A large index scores fewer queries at a time (memory bounded): the figures do not move."""
    rng = np.random.default_rng(0)
    index = rng.standard_normal((60, 8)).astype(np.float32)
    products = [f"p{i % 12}" for i in range(60)]
    queries = index[:24] + 0.3 * rng.standard_normal((24, 8)).astype(np.float32)
    groups = {f"p{i}": f"g{i % 3}" for i in range(12)}
    whole = score_queries(queries, products[:24], index, products, Metric.COSINE, groups, full=True)
    monkeypatch.setattr(scoring, "BLOCK_CELLS", 100)     # one query (60 photos) at a time
    blocks = score_queries(queries, products[:24], index, products, Metric.COSINE, groups, full=True)
    for name in whole.names:
        assert np.array_equal(whole.metric(name), blocks.metric(name)), name


def test_average_precision_over_every_photo_counted_is_the_sorted_one(monkeypatch):
    """With few photos per product the mAP counts each relevant photo's rank instead of sorting
    rows: the same figures, ties (photos scored the same) and a query's own photo included."""
    rng = np.random.default_rng(5)
    index = rng.standard_normal((90, 4)).astype(np.float32)
    index[10] = index[11]                                  # exact copies: tied similarities
    index[40] = index[11]
    products = [f"p{i % 15}" for i in range(90)]          # 6 photos each
    queries = np.round(index[:30] * 2) / 2                 # coarse: many ties
    for self_rows in (None, np.arange(30)):
        q = index[:30] if self_rows is not None else queries
        counted = score_queries(q, products[:30], index, products, Metric.COSINE, self_rows=self_rows, full=True)
        monkeypatch.setattr(scoring, "COUNTED_AP_PHOTOS", 0)
        sorted_ = score_queries(q, products[:30], index, products, Metric.COSINE, self_rows=self_rows, full=True)
        monkeypatch.undo()
        assert np.allclose(counted.metric("map"), sorted_.metric("map"), rtol=0, atol=1e-12)


def test_average_precision_of_many_photo_products_sorts_only_what_ranks_above():
    """Beyond COUNTED_AP_PHOTOS photos per product the mAP sorts only the photos scored at least
    as high as each row's last relevant one: exactly the figures of sorting whole rows, with
    ties (in column order), a query's own photo (-inf) and a row whose relevant photos rank last."""
    rng = np.random.default_rng(7)
    n, queries = 200, 12
    column = np.arange(n) % 5                                    # 40 photos per product
    target = np.arange(queries) % 5
    sims = (np.round(rng.standard_normal((queries, n)) * 2) / 2).astype(np.float32)  # many ties
    sims[3, column == target[3]] = sims[3].min() - 1             # row 3: every relevant photo last
    sims[np.arange(queries), np.arange(queries)] = -np.inf       # each query's own photo
    relevant = (column[None, :] == target[:, None]) & (sims > -np.inf)
    r = relevant.sum(1)
    assert r.max() > scoring.COUNTED_AP_PHOTOS
    top = np.argsort(-sims, axis=1, kind="stable")                # whole rows sorted, ties in column order
    hits = (column[top] == target[:, None]) & (np.take_along_axis(sims, top, 1) > -np.inf)
    whole = ((np.cumsum(hits, axis=1) / np.arange(1, n + 1)) * hits).sum(1) / r
    above = scoring._average_precision(sims, column, target, r)
    assert np.allclose(above, whole, rtol=0, atol=1e-12)
    assert above[3] < 0.3 and above.max() <= 1
