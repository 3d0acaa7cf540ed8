"""The two validation protocols drawn from one catalogue (pure: samples only)."""
from __future__ import annotations

import pytest

from es_metric.training.data import Sample
from es_metric.training.protocols import MAX_QUERIES, MIN_QUERIES, catalogue_split, held_out_count


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


def test_a_large_catalogue_validates_on_a_bounded_number_of_whole_products():
    """Each protocol stops at max_queries: a validation costs queries x photos per epoch. The
    products without queries train with every photo; the queries still search all of them."""
    samples = catalogue([3, 12] * 100)                      # 12 photos: two queries per product
    split = catalogue_split(samples, 0.2, seed=0, max_queries=25)
    known, new = (split.validations[p].queries for p in ("in-domain", "class-disjoint"))
    assert 25 <= len(known) <= 26 and 25 <= len(new) <= 26  # whole products: at most one over
    possible = [split.validations[p].possible for p in ("in-domain", "class-disjoint")]
    assert sum(possible) == 100 * 1 + 100 * 2 and possible[0] > len(known) and possible[1] > len(new)
    for queries in (known, new):
        by_product = {q.cls for q in queries}
        assert all(sum(q.cls == c for q in queries) == (2 if int(c[1:]) % 2 else 1) for c in by_product)
    arrivals = {q.cls for q in new}
    trained = {s.cls for s in split.train}
    assert not arrivals & trained and len(trained) == 200 - len(arrivals)  # 40 planned, the rest train
    asked = {q.path for q in known + new}
    assert len(split.index) == len(samples) - len(asked)
    unasked = {s.cls for s in samples} - {q.cls for q in known + new}
    assert sum(s.cls in unasked for s in split.train) == sum(s.cls in unasked for s in samples)


def test_the_default_bound_leaves_a_shops_catalogue_alone_and_bounds_a_large_one():
    small = catalogue_split(catalogue([3] * 2400), 0.2, seed=0)
    assert [len(v.queries) for v in small.validations.values()] == [1920, 480]
    assert [v.possible for v in small.validations.values()] == [1920, 480]
    large = catalogue_split(catalogue([2] * 30000), 0.2, seed=0)
    assert [len(v.queries) for v in large.validations.values()] == [MAX_QUERIES, MAX_QUERIES]
    assert [v.possible for v in large.validations.values()] == [24000, 6000]


def test_the_card_says_when_a_protocol_was_bounded():
    """`esm train`'s validation line: `2000 of 24000 queries` on a large catalogue, the plain
    count otherwise."""
    import numpy as np

    from es_metric.cli.cards import protocol_line
    from es_metric.similarity import Metric
    from es_metric.training.validate import Validator

    samples = catalogue([3] * 200)
    rng = np.random.default_rng(0)
    vectors = {s.path: rng.standard_normal(8).astype(np.float32) for s in samples}

    def embed(batch):
        return np.stack([vectors[s.path] for s in batch])

    lines = {}
    for bound in (30, 10_000):
        v = Validator(catalogue_split(samples, 0.2, seed=0, max_queries=bound), {}, "in-domain")
        scores = v.scores(embed, Metric.COSINE)
        lines[bound] = protocol_line("in-domain", v.report(scores, scores)["in-domain"])
    assert "  in-domain       30 of 160 queries  R@1" in lines[30]
    assert "  in-domain       160 queries  R@1" in lines[10_000]
