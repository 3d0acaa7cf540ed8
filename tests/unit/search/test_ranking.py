"""Ranking after fusion, by hand on tiny windows: collapse, MMR, explanations of the fused
score, the "other" facet row, and the cluster-fusion request bodies as dicts."""
import numpy as np
import pytest

from es_metric.errors import SearchError
from es_metric.search.diversity import collapse, collapse_field, collapse_key, mmr, pairwise, relevance, scaled
from es_metric.search.facets import facet_aggs, facets_of, other_row
from es_metric.search.fusion import Leg, explain, fuse
from es_metric.search.retrievers import fusion_body, fused_window, probe_body
from es_metric.similarity import Metric

PROPS = {"product": {"type": "keyword"}, "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
         "notes": {"type": "text"}, "sku": {"type": "long"}, "tags": {"type": "wildcard"},
         "variants": {"type": "nested", "properties": {"color": {"type": "keyword"}}}}


def test_collapse_keeps_the_best_of_each_value_in_order():
    ranked = [("a1", 0.9), ("a2", 0.8), ("b1", 0.7), ("x", 0.65), ("a3", 0.6), ("b2", 0.5), ("y", 0.4)]
    keys = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "x": None, "y": None}
    # documents without the field form one group, as Elasticsearch's null group does
    assert collapse(ranked, keys) == [("a1", 0.9), ("b1", 0.7), ("x", 0.65)]


def test_collapse_field_is_what_elasticsearch_can_collapse_on():
    assert collapse_field("product", PROPS) == "product"
    assert collapse_field("title", PROPS) == "title.raw"      # a text field's keyword sub-field
    assert collapse_field("sku", PROPS) == "sku"
    for name in ("notes", "variants.color", "_id", "tags"):
        with pytest.raises(SearchError, match="cannot collapse"):
            collapse_field(name, PROPS)
    with pytest.raises(SearchError, match="unknown field"):
        collapse_field("produkt", PROPS)


def test_a_multi_valued_collapse_field_is_refused_like_elasticsearch_refuses_it():
    assert collapse_key("d", ["A"], "product") == "A" and collapse_key("d", None, "product") is None
    with pytest.raises(SearchError, match="2 values"):
        collapse_key("d", ["A", "B"], "product")


def test_mmr_by_hand_picks_the_different_one_second():
    # a and b are the same picture; c is different and a little less relevant
    vectors = {"a": [1.0, 0.0], "b": [1.0, 0.0], "c": [0.0, 1.0]}
    ranked = [("a", 1.0), ("b", 0.9), ("c", 0.5)]   # relevance 1, 0.8, 0
    order, why = mmr(ranked, vectors, 0.5, 3, Metric.COSINE)
    # second pick: b = 0.5*0.8 - 0.5*1 = -0.1; c = 0.5*0 - 0.5*0 = 0 -> c
    assert [d for d, _ in order] == ["a", "c", "b"]
    assert dict(order) == dict(ranked)                  # scores stay the fused ones
    assert why["c"] == {"relevance": 0.0, "redundancy": 0.0, "mmr": 0.0}
    assert why["b"]["redundancy"] == pytest.approx(1.0) and why["b"]["mmr"] == pytest.approx(-0.1)
    assert [d for d, _ in mmr(ranked, vectors, 1.0, 3, Metric.COSINE)[0]] == ["a", "b", "c"]


def test_mmr_stops_at_n_and_a_document_without_vector_is_redundant_with_nothing():
    ranked = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    order, _ = mmr(ranked, {"a": [1.0, 0.0], "b": None, "c": [1.0, 0.01]}, 0.3, 2, Metric.COSINE)
    assert [d for d, _ in order] == ["a", "b"]
    assert mmr([], {}, 0.5, 3, Metric.COSINE) == ([], {})


def test_pairwise_similarity_for_l2_models_is_elasticsearchs_score():
    sim = pairwise(np.array([[0.0, 0.0], [3.0, 4.0]]), Metric.L2)
    assert sim[0, 1] == pytest.approx(1 / 26) and sim[0, 0] == 1.0
    assert list(relevance([2.0, 2.0])) == [1.0, 1.0] and list(relevance([3.0, 1.0, 2.0])) == [1.0, 0.0, 0.5]
    # similarities on relevance's scale: the window's closest pair 1, its farthest 0
    sim = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]])
    assert scaled(sim)[0, 1] == pytest.approx(1.0) and scaled(sim)[0, 2] == 0.0
    assert scaled(sim)[1, 2] == pytest.approx(0.5) and scaled(sim)[0, 0] == 1.0


def test_explain_sums_to_the_fused_score_by_hand():
    image = Leg(["a", "b", "c"], [0.9, 0.8, 0.5], 0.8, "image")   # -> 1, 0.75, 0
    text = Leg(["c", "d"], [12.0, 2.0], 0.2, "text")               # -> 1, 0
    why = explain("minmax", [image, text])
    assert why["b"]["legs"]["image"] == {"score": 0.8, "rank": 2, "normalised": pytest.approx(0.75),
                                         "weight": 0.8, "contribution": pytest.approx(0.6)}
    assert why["b"]["legs"]["text"] == {"score": None, "rank": None, "normalised": 0.0, "weight": 0.2,
                                        "contribution": 0.0}
    fused = dict(fuse("minmax", [image, text]))
    assert {d: e["fused"] for d, e in why.items()} == pytest.approx(fused)
    rrf = explain("rrf", [image, text])
    assert rrf["c"]["legs"]["text"]["normalised"] == pytest.approx(1 / 61)
    assert rrf["c"]["fused"] == pytest.approx(dict(fuse("rrf", [image, text]))["c"])


def test_facet_size_and_the_other_row():
    assert facet_aggs(["product"], PROPS, 3)["product"] == {"terms": {"field": "product", "size": 3}}
    for bad in (0, 201, True, "5"):
        with pytest.raises(SearchError, match="facet size"):
            facet_aggs(["product"], PROPS, bad)
    raw = {"product": {"buckets": [{"key": "A", "doc_count": 5}, {"key": "B", "doc_count": 2}],
                       "sum_other_doc_count": 4},
           "title": {"buckets": [{"key": "x", "doc_count": 1}], "sum_other_doc_count": 0}}
    out = facets_of(raw, ["product", "title"])
    assert out["product"][-1] == {"value": None, "other": True, "count": 4, "filter": "product!=A|B"}
    assert [r.get("other") for r in out["title"]] == [None]       # nothing else: no row
    assert other_row("f", [{"value": "a|b"}], 3)["filter"] is None


def test_the_linear_retriever_body_fuses_the_same_legs():
    knn = {"field": "v", "query_vector": [1.0], "k": 100, "num_candidates": 1000}
    query = {"bool": {"must": [{"match": {"title": "red"}}], "filter": [{"term": {"c": "x"}}]}}
    body = fusion_body("minmax", knn, query, 0.8, 0.2, 100)
    assert body == {"size": 100, "_source": False, "track_total_hits": False, "retriever": {"linear": {
        "rank_window_size": 100, "retrievers": [
            {"retriever": {"knn": knn}, "weight": 0.8, "normalizer": "minmax"},
            {"retriever": {"standard": {"query": query}}, "weight": 0.2, "normalizer": "minmax"}]}}}
    rrf = fusion_body("rrf", knn, query, 1, 3, 150)["retriever"]["rrf"]
    assert rrf["rank_constant"] == 60 and rrf["rank_window_size"] == 150
    assert [c["weight"] for c in rrf["retrievers"]] == [1.0, 3.0] and "normalizer" not in rrf["retrievers"][0]
    probe = probe_body("rrf")
    assert probe["size"] == 0 and [c["weight"] for c in probe["retriever"]["rrf"]["retrievers"]] == [1.0, 0.5]
    assert fused_window({"hits": {"hits": [{"_id": "a", "_score": 1.5}]}}) == [("a", 1.5)]
