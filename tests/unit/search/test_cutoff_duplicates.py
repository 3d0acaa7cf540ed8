"""The similarity floor (search/cutoff.py) and the union-find of near-duplicates
(search/duplicates.py) as pure functions: values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from es_metric.errors import SearchError
from es_metric.index.indices import IndexInfo
from es_metric.search.cutoff import AUTO, auto_cutoff, below, cut_body, parse_min_similarity, score_similarity
from es_metric.search.duplicates import Links, knn_search, link_value, own_vectors, Scan
from es_metric.search.service import SearchRequest

INFO = IndexInfo(name="shop", concrete="shop-v1", model_id="m1", model_path="/m.pt",
                 vector_field="image_vector", dims=2, similarity="cosine")


@pytest.mark.parametrize("value,expected", [
    (None, None), ("auto", AUTO), (" AUTO ", AUTO), ("0.75", 0.75), (0.5, 0.5), (-1, -1.0)])
def test_min_similarity_is_a_number_or_auto(value, expected):
    assert parse_min_similarity(value) == expected
    assert SearchRequest(text="x", min_similarity=value).min_similarity == expected


@pytest.mark.parametrize("value", ["nan", "inf", "high", "", True, [0.5], math.inf])
def test_anything_else_is_refused_in_one_line(value):
    with pytest.raises(SearchError, match="min_similarity must be a finite number.*or auto"):
        SearchRequest(text="x", min_similarity=value)


def test_auto_needs_a_calibrated_card():
    card = {"metrics": {"cutoff": {"precision": 0.9, "similarity": 0.61}}}
    assert auto_cutoff(card, "m1") == 0.61
    for old in ({}, {"metrics": {}}, {"metrics": {"cutoff": None}}, {"metrics": {"cutoff": {"similarity": "x"}}}):
        with pytest.raises(SearchError) as err:
            auto_cutoff(old, "m1")
        assert str(err.value) == ("model m1 has no calibrated cut-off for --min-similarity auto (retrain it "
                                  "with `esm train` (this version calibrates one), or give a number: "
                                  "--min-similarity S)")


def test_scores_back_to_elasticsearch_similarity_units():
    assert score_similarity(0.9, "cosine") == pytest.approx(0.8)      # (1 + 0.8) / 2
    assert score_similarity(0.5, "cosine") == pytest.approx(0.0)
    assert score_similarity(0.2, "l2_norm") == pytest.approx(2.0)     # 1 / (1 + 2²)
    assert score_similarity(1.0, "l2_norm") == 0.0
    assert below(0.5, 0.6, "cosine") and not below(0.6, 0.6, "cosine")
    assert below(2.5, 2.0, "l2_norm") and not below(2.0, 2.0, "l2_norm")


def test_the_cut_count_asks_for_the_window_without_the_floor():
    body = cut_body(INFO, [1.0, 0.0], 20, num_candidates=None,
                    filter_query={"bool": {"filter": [{"term": {"c": "x"}}]}},
                    exclude_ids=["q"])
    assert body["size"] == 20 and body["_source"] is False and "similarity" not in body["knn"]
    assert body["knn"]["k"] == 20 and body["knn"]["filter"]["bool"]["must_not"] == [{"ids": {"values": ["q"]}}]


def test_union_find_joins_transitively_and_keeps_the_weakest_link():
    links = Links("cosine")
    links.link("a", "b", 0.99)
    links.link("c", "d", 0.97)
    links.link("b", "c", 0.95)        # joins the two clusters
    links.link("a", "d", 0.96)        # inside one cluster: the weakest stays 0.95
    links.link("x", "y", 0.98)
    assert links.clusters() == [{"ids": ["a", "b", "c", "d"], "similarity": 0.95},
                                {"ids": ["x", "y"], "similarity": 0.98}]
    links.link("y", "x", 0.90)        # a weaker link found later lowers it
    assert links.clusters()[1] == {"ids": ["x", "y"], "similarity": 0.9}


def test_union_find_with_distances_keeps_the_largest():
    links = Links("l2_norm")
    links.link("a", "b", 0.1)
    links.link("b", "c", 0.3)
    links.link("d", "e", 0.05)
    assert links.clusters() == [{"ids": ["a", "b", "c"], "similarity": 0.3},
                                {"ids": ["d", "e"], "similarity": 0.05}]


def test_union_find_holds_only_linked_ids():
    links = Links()
    for i in range(0, 1000, 2):
        links.link(str(i), str(i + 1), 1.0)
    assert len(links.parent) == 1000 and len(links.clusters()) == 500
    assert all(len(c["ids"]) == 2 for c in links.clusters())


def test_links_are_judged_on_the_model_vectors():
    own = np.array([3.0, 4.0])
    assert link_value(own, [4.0, 3.0], "cosine") == pytest.approx(24 / 25)
    assert link_value(own, [0.0, 0.0], "l2_norm") == pytest.approx(5.0)


def test_a_documents_own_vectors():
    dba = {"fields": {"image_vector": [[0.6, 0.8]], "image_vector_raw": [[1.0, 0.0]]}}
    assert own_vectors(INFO, dba) == ([[0.6, 0.8]], [1.0, 0.0])   # search augmented, judge raw
    plain = {"fields": {"image_vector": [[0.6, 0.8]]}}
    assert own_vectors(INFO, plain) == ([[0.6, 0.8]], [0.6, 0.8])
    photos = IndexInfo(name="p", concrete="p-v1", model_id="m1", model_path="/m.pt", vector_field="photos.vector",
                       dims=2, similarity="cosine", photos_field="photos")
    hit = {"_source": {"photos": [{"ref": "a.jpg", "vector": [1, 0]}, {"ref": "b.jpg"}, "junk",
                                  {"ref": "c.jpg", "vector": [0, 1]}]}}
    assert own_vectors(photos, hit) == ([[1, 0], [0, 1]], None)


def test_a_documents_knn_excludes_itself():
    body = knn_search(INFO, [1.0, 0.0], "d1", Scan(k=5), None)
    assert body["knn"]["k"] == 5 and body["knn"]["filter"] == {"bool": {"must_not": [{"ids": {"values": ["d1"]}}]}}
    assert body["docvalue_fields"] == ["image_vector", "image_vector_raw"] and "similarity" not in body["knn"]
    floored = knn_search(INFO, [1.0, 0.0], "d1", Scan(k=5), 0.9)
    assert floored["knn"]["similarity"] == 0.9 and "docvalue_fields" not in floored
