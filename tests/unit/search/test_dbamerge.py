"""Merging new documents into the neighbour lists DBA markers keep: the result is the exact
top-k a search over every document would give, and a list that no longer holds is refused."""
import numpy as np
import pytest

from es_metric.search.dbaknn import Neighbour, exact_top
from es_metric.search.dbamerge import entered, listed, merged_top, new_top
from es_metric.similarity import Metric

K = 4


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def world(n_old: int = 40, n_new: int = 6, seed: int = 0):
    """Old documents with exact markers among themselves, and new ones near them."""
    rng = np.random.default_rng(seed)
    old = unit(rng.standard_normal((n_old, 8)))
    new = unit(old[:n_new] + 0.2 * rng.standard_normal((n_new, 8)))
    ids = [f"o{i}" for i in range(n_old)]
    marks = {}
    for i, v in enumerate(old):
        top_ids, sims, _ = exact_top(v, ids, old, K, Metric.COSINE, exclude=ids[i])
        marks[ids[i]] = {"k": K, "kth": round(float(sims[-1]), 7), "ids": top_ids}
    known = dict(zip(ids, old))
    return ids, old, [f"n{j}" for j in range(n_new)], new, marks, known


def test_merging_the_new_documents_into_a_kept_list_is_the_exact_top_k_over_everything():
    ids, old, new_ids, new, marks, known = world()
    everything, vectors = ids + new_ids, np.concatenate([old, new])
    changed = 0
    for i, doc in enumerate(ids):
        got = merged_top(doc, old[i], marks[doc], K, known, (new_ids, new), Metric.COSINE)
        want = exact_top(old[i], everything, vectors, K, Metric.COSINE, exclude=doc)
        assert got is not None and got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], atol=1e-6)
        changed += got[0] != marks[doc]["ids"]
    assert changed > 0  # the new documents did enter some lists


def test_a_list_that_no_longer_holds_is_refused():
    ids, old, new_ids, new_vectors, marks, known = world()
    new = (new_ids, new_vectors)
    doc, mark = ids[0], marks[ids[0]]
    gone = {i: v for i, v in known.items() if i != mark["ids"][1]}  # a listed neighbour deleted
    assert merged_top(doc, old[0], mark, K, gone, new, Metric.COSINE) is None
    moved = {**known, mark["ids"][0]: -old[0]}  # a listed neighbour re-embedded far away
    assert merged_top(doc, old[0], mark, K, moved, new, Metric.COSINE) is None
    assert merged_top(doc, old[0], mark, K + 1, known, new, Metric.COSINE) is None  # another k


@pytest.mark.parametrize("mark", [None, {"k": K, "kth": 0.5}, {"k": K, "kth": 0.5, "ids": "o1"},
                                  {"k": K, "kth": 0.5, "ids": ["o1", "o2"]},
                                  {"k": K, "kth": 0.5, "ids": ["o1", "o2", 3, "o4"]},
                                  {"k": K, "ids": ["o1", "o2", "o3", "o4"]}])
def test_markers_without_a_usable_list_are_left_to_a_search(mark):
    assert listed(mark, K) is None


def test_a_new_documents_top_k_counts_the_other_new_documents():
    ids, old, new_ids, new, _, known = world()
    row = ids[:K]  # what the kNN returned among the augmented documents
    twin = unit(new[0] + 0.01)
    known = {**known, "n0": new[0], "twin": twin}
    got = new_top("n0", new[0], row, ["n0", "twin"], K, known, Metric.COSINE)
    assert got[0][0] == "twin" and "n0" not in got[0]


def test_entries_are_judged_on_the_markers_kth_and_new_documents_are_not_entered():
    rows = [[Neighbour("n1", 0.99, None), Neighbour("a", 0.9, {"k": K, "kth": 0.8}),
             Neighbour("b", 0.7, {"k": K, "kth": 0.8})],
            [Neighbour("a", 0.95, {"k": K, "kth": 0.8})]]
    assert entered({"n0", "n1"}, rows, K) == pytest.approx({"a": 0.15})
