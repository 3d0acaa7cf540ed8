"""The calibrated cut-off (training/calibrate.py): thresholds worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from es_metric.search.rerank import NO_RERANK, ReRank
from es_metric.similarity import Metric
from es_metric.training.calibrate import calibrate_cutoff, check_cutoff, precision_threshold, searched_similarities


def test_precision_threshold_is_the_loosest_similarity_that_keeps_the_target():
    sims = [0.6, 0.9, 0.7, 0.8]                 # sorted: 0.9 T, 0.8 T, 0.7 F, 0.6 T
    relevant = [True, True, False, True]
    # running precision 1, 1, 2/3, 3/4
    assert precision_threshold(sims, relevant, 0.75) == (0.6, 1.0)
    t, recall = precision_threshold(sims, relevant, 0.9)
    assert t == 0.8 and recall == pytest.approx(2 / 3)


def test_precision_threshold_keeps_ties_together():
    # 0.8 holds a relevant and an irrelevant pair: a threshold cannot split them, so 0.8 means
    # precision 2/3, and the loosest threshold at 0.9 precision is 0.9 itself
    t, recall = precision_threshold([0.9, 0.8, 0.8], [True, True, False], 0.9)
    assert (t, recall) == (0.9, pytest.approx(1 / 2))


def test_precision_threshold_none_when_unreachable():
    assert precision_threshold([0.9, 0.5], [False, True], 0.9) is None
    assert precision_threshold([0.9, 0.5], [False, False], 0.5) is None


def test_searched_similarities_without_reranking_are_the_plain_ones():
    v = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    sims = searched_similarities(v, Metric.COSINE, NO_RERANK)
    assert np.isneginf(np.diag(sims)).all()
    assert sims[0, 1] == pytest.approx(0.6) and sims[0, 2] == pytest.approx(0.0)
    assert sims[2, 1] == pytest.approx(0.8)


def test_searched_similarities_expand_the_query_as_search_does():
    """QE k=1, alpha=1, no DBA: query 0 = normalise(v0 + 0.6 * v1) (its neighbour v1 at 0.6)."""
    v = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    sims = searched_similarities(v, Metric.COSINE, ReRank(qe_k=1, qe_alpha=1.0, dba_k=0))
    q = np.array([1 + 0.36, 0.48]) / np.hypot(1.36, 0.48)
    assert sims[0, 1] == pytest.approx(q @ [0.6, 0.8], abs=1e-6)
    assert sims[0, 2] == pytest.approx(q[1], abs=1e-6)


def test_calibrate_cutoff_cosine_and_l2_units():
    # two tight classes on the unit circle; the nearest other-class pair is 90 degrees away
    angles = np.radians([0, 10, 90, 100])
    v = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.array([0, 0, 1, 1])
    cos = calibrate_cutoff(v, labels, Metric.COSINE, precision=0.99)
    assert cos["similarity"] == pytest.approx(math.cos(math.radians(10)), abs=1e-6)
    assert cos["keep"] == "at least" and cos["recall"] == 1.0 and cos["precision"] == 0.99
    l2 = calibrate_cutoff(v, labels, Metric.L2, precision=0.99)
    assert l2["similarity"] == pytest.approx(2 * math.sin(math.radians(5)), abs=1e-6)  # chord
    assert l2["keep"] == "at most"


def test_calibrate_cutoff_none_without_pairs_of_a_class():
    v = np.eye(3, dtype=np.float32)
    assert calibrate_cutoff(v, np.array([0, 1, 2]), Metric.COSINE) is None


def test_calibrate_cutoff_counts_each_querys_first_page_only():
    """The pairs are each query's first WINDOW hits, as a search shows them: the threshold is
    the one a brute-force ranking of every row gives, not the one over every pair."""
    from es_metric.training.calibrate import WINDOW
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 10)
    v = rng.normal(size=(40, 8)) + 3 * np.eye(8)[labels]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    page = np.argsort(-sims, axis=1)[:, :WINDOW]
    expected = precision_threshold(np.take_along_axis(sims, page, 1), labels[page] == labels[:, None], 0.7)
    every_pair = precision_threshold(sims[~np.eye(40, dtype=bool)],
                                     (labels[:, None] == labels[None])[~np.eye(40, dtype=bool)], 0.7)
    cut = calibrate_cutoff(v, labels, Metric.COSINE, precision=0.7)
    assert cut["similarity"] == pytest.approx(expected[0], abs=1e-6) and cut["k"] == WINDOW == 10
    assert cut["recall"] == round(expected[1], 4)
    assert abs(cut["similarity"] - every_pair[0]) > 1e-3  # a first page is not every pair


@pytest.mark.parametrize("kind,size,quality", [("jpeg70", (100, 50), 70), ("resize90", (90, 45), 90),
                                               ("crop4", (92, 46), 90), ("all", (83, 41), 70)])
def test_copies_a_catalogue_gets_again(kind, size, quality):
    from PIL import Image

    from es_metric.training.calibrate import copy_of
    copy, q = copy_of(Image.new("RGB", (100, 50)), kind)
    assert (copy.size, q) == (size, quality)


def test_the_duplicate_threshold_keeps_99_percent_of_the_copies():
    from es_metric.training.calibrate import COPY_KINDS, calibrate_duplicates
    copies = np.array([[1.0, 0.99, 0.95, 0.9], [0.98, 0.97, 0.93, 0.8]])   # 2 photos x 4 kinds
    # three distinct photos: 0-1 of one class at 0.85, 1-2 of two classes at 0.82, 0-2 at 0.5
    a = math.acos(0.85)
    v = np.array([[1, 0, 0], [0.85, math.sin(a), 0], [0, 0, 0]], float)
    v[2] = [0.5, (0.82 - 0.5 * 0.85) / math.sin(a), 0]
    v[2, 2] = math.sqrt(1 - v[2, 0] ** 2 - v[2, 1] ** 2)
    assert v[1] @ v[2] == pytest.approx(0.82)
    dup = calibrate_duplicates(copies, v, np.array([0, 0, 1]), Metric.COSINE)
    assert dup["similarity"] == pytest.approx(0.8 + 0.07 * 0.1)   # the 1st percentile of the 8
    assert dup["weakest_copy"] == dict(zip(COPY_KINDS, [0.98, 0.97, 0.93, 0.8]))
    assert dup["distinct_pairs_linked"] == {"same_class": 1, "other_class": 1, "of": 3}
    assert dup["keep"] == "at least" and dup["n_copied"] == 2
    l2 = calibrate_duplicates(-copies, v, np.array([0, 0, 1]), Metric.L2)   # negative distances
    assert l2["similarity"] == pytest.approx(-np.quantile(-copies, 0.01)) and l2["keep"] == "at most"


def _two_pairs_and_a_single() -> tuple[np.ndarray, np.ndarray]:
    """A1, A2 close (cos 0.995), B1, B2 close, C between A and B (cos 0.707 / 0.774 to them)."""
    a2, b2 = (0.995, math.sqrt(1 - 0.995 ** 2)), (math.sqrt(1 - 0.995 ** 2), 0.995)
    vecs = np.array([(1, 0), a2, (0, 1), b2, (math.sqrt(0.5), math.sqrt(0.5))], np.float32)
    return vecs, np.array([0, 0, 1, 1, 2])


@pytest.mark.parametrize("similarity, kept, precision, emptied", [
    (0.9, 4, 1.0, 1),      # only A1<->A2 and B1<->B2: the single C's page is emptied
    (0.75, 8, 0.5, 0),     # + A2<->C and B2<->C (0.774): four wrong hits kept
    (1.01, 0, None, 5),    # nothing kept, every page emptied
])
def test_check_cutoff_counts_what_a_cards_cutoff_keeps_on_other_photos(similarity, kept, precision, emptied):
    vecs, labels = _two_pairs_and_a_single()
    got = check_cutoff(vecs, labels, Metric.COSINE, similarity, 0.95)
    assert got is not None and (got["kept"], got["precision"], got["emptied"]) == (kept, precision, emptied)
    assert got["k"] == 4 and got["n_queries"] == 5 and got["target"] == 0.95
    assert got["recall"] == (1.0 if kept else 0.0)   # each pair member's one right hit, kept or not


def test_check_cutoff_reads_an_l2_cards_distance_as_a_ceiling():
    vecs, labels = _two_pairs_and_a_single()
    # A1-A2 are 0.1 apart, A2-C 0.67: a ceiling of 0.5 keeps the two pairs only
    got = check_cutoff(vecs, labels, Metric.L2, 0.5, 0.9)
    assert got is not None and (got["kept"], got["precision"], got["emptied"]) == (4, 1.0, 1)
    assert got["keep"] == "at most" and got["target"] == 0.9
    assert check_cutoff(vecs[:2], labels[:2], Metric.L2, 0.5) is None   # too few to query
