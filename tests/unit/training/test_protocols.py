"""The two validation protocols drawn from one catalogue (pure: samples only)."""
from __future__ import annotations

import pytest

from es_metric.training.data import Sample
from es_metric.training.protocols import MIN_QUERIES, catalogue_split, held_out_count


def catalogue(photos_per_product: list[int]) -> list[Sample]:
    return [Sample(f"/c/p{i:03d}/{j}.jpg", i, f"p{i:03d}")
            for i, n in enumerate(photos_per_product) for j in range(n)]


@pytest.mark.parametrize("n, held", [(1, 0), (2, 1), (3, 1), (6, 1), (10, 2), (67, 13)])
def test_held_out_photos_are_a_fifth_at_least_one_never_all(n, held):
    assert held_out_count(n, 0.2) == held


def test_every_query_finds_its_product_in_the_index_and_never_itself():
    samples = catalogue([3, 2, 5, 1, 4] * 20)
    split = catalogue_split(samples, 0.2, seed=3)
    index = {s.path for s in split.index}
    for v in split.validations.values():
        assert v.measurable and v.queries
        for q in v.queries:
            assert q.path not in index
            assert any(s.cls == q.cls for s in split.index)
    asked = [q.path for v in split.validations.values() for q in v.queries]
    assert len(asked) == len(set(asked)) and len(index) + len(asked) == len(samples)


def test_new_arrivals_are_never_trained_on_and_known_products_are():
    samples = catalogue([3] * 60)
    split = catalogue_split(samples, 0.2, seed=0)
    arrivals = {q.cls for q in split.validations["class-disjoint"].queries}
    known = {q.cls for q in split.validations["in-domain"].queries}
    trained = {s.cls for s in split.train}
    assert len(arrivals) == 12 and not arrivals & trained and not arrivals & known
    assert known <= trained
    # three photos per product: leave one photo out
    assert len(split.validations["in-domain"].queries) == 48


def test_one_photo_products_train_but_never_query():
    samples = catalogue([1] * 30 + [2] * 40)
    split = catalogue_split(samples, 0.2, seed=1)
    singles = {f"p{i:03d}" for i in range(30)}
    assert singles <= {s.cls for s in split.train}
    assert not singles & {q.cls for v in split.validations.values() for q in v.queries}


def test_a_protocol_that_cannot_measure_says_so_and_reports_nothing():
    split = catalogue_split(catalogue([1] * 40 + [2] * 8), 0.2, seed=0)
    for v in split.validations.values():
        assert not v.measurable and v.queries == []
        assert "cannot measure" in v.note and str(MIN_QUERIES) in v.note


def test_the_split_is_deterministic_for_a_seed():
    samples = catalogue([4, 3, 2] * 15)
    a, b = catalogue_split(samples, 0.2, 7), catalogue_split(list(reversed(samples)), 0.2, 7)
    assert [s.path for s in a.index] != [] and sorted(s.path for s in a.index) == sorted(s.path for s in b.index)
