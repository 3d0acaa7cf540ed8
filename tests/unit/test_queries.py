"""Query bodies are pure dicts: checked field by field."""
import pytest

from es_metric.errors import SearchError
from es_metric.queries import (Filter, exact_field, filter_clauses, knn_clause, parse_filter, rrf_fuse,
                               search_body, text_query)

PROPS = {"title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
         "category": {"type": "keyword"}, "price": {"type": "float"}}


@pytest.mark.parametrize("text,expected", [
    ("category=Fruit", Filter("category", "=", "Fruit")),
    ("price>=10", Filter("price", ">=", "10")),
    ("price < 50", Filter("price", "<", "50")),
    ("label!=a|b", Filter("label", "!=", "a|b")),
    ("price=10..50", Filter("price", "=", "10..50")),
])
def test_parse_filter(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("bad", ["nofilter", "=x", "a="])
def test_parse_filter_refuses(bad):
    with pytest.raises(SearchError, match="cannot read filter"):
        parse_filter(bad)


def test_exact_field_uses_keyword_subfield_of_text():
    assert exact_field("title", PROPS) == "title.keyword"
    assert exact_field("category", PROPS) == "category"
    assert exact_field("unknown", PROPS) == "unknown"


def test_filter_clauses_combine_terms_ranges_and_negation():
    got = filter_clauses([parse_filter("title=Red dress"), parse_filter("price<50"),
                          parse_filter("price=10..20"), parse_filter("category!=a|b")], PROPS)
    assert got == {"bool": {
        "filter": [{"term": {"title.keyword": "Red dress"}}, {"range": {"price": {"lt": 50}}},
                   {"range": {"price": {"gte": 10, "lte": 20}}}],
        "must_not": [{"terms": {"category": ["a", "b"]}}]}}
    assert filter_clauses([], PROPS) == {}


def test_knn_clause_puts_filter_inside_and_sizes_candidates():
    filt = {"bool": {"filter": [{"term": {"category": "x"}}]}}
    got = knn_clause("v", [1, 0.5], 5, filter_query=filt, min_similarity=0.8, boost=2,
                     exclude_ids=["doc1"])
    assert got == {"field": "v", "query_vector": [1.0, 0.5], "k": 5, "num_candidates": 100,
                   "filter": {"bool": {"filter": [{"term": {"category": "x"}}],
                                       "must_not": [{"ids": {"values": ["doc1"]}}]}},
                   "similarity": 0.8, "boost": 2.0}
    assert filt == {"bool": {"filter": [{"term": {"category": "x"}}]}}  # input not mutated
    assert knn_clause("v", [0.0], 50)["num_candidates"] == 500
    assert knn_clause("v", [0.0], 5, num_candidates=1000)["num_candidates"] == 1000


def test_text_query_and_search_body():
    q = text_query("red dress", ["title"], {"bool": {"filter": [{"term": {"c": 1}}]}}, boost=0.5)
    assert q == {"bool": {"must": [{"multi_match": {"query": "red dress", "fields": ["title"],
                                                    "type": "best_fields", "boost": 0.5}}],
                          "filter": [{"term": {"c": 1}}]}}
    body = search_body(knn={"k": 1}, query=q, size=3, offset=6, vector_field="v",
                       highlight_fields=["title"])
    assert body["size"] == 3 and body["from"] == 6
    assert body["_source"] == {"excludes": ["v", "v_raw"]}  # nor the raw vector a DBA pass keeps
    assert body["highlight"]["fields"] == {"title": {}}


def test_rrf_by_hand():
    # a: 1/61 + 1/62 ; b: 1/62 + 1/61 ; c: 1/63 ; d: 1/63
    fused = rrf_fuse([["a", "b", "c"], ["b", "a", "d"]], k=60)
    assert [d for d, _ in fused] == ["a", "b", "c", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2][1] == pytest.approx(1 / 63)
    assert rrf_fuse([["x"], []], k=1, size=1) == [("x", 0.5)]


def test_expansion_body_fetches_only_the_neighbours_vectors():
    from es_metric.queries import expansion_body
    filt = {"bool": {"filter": [{"term": {"group": "Fruit"}}]}}
    body = expansion_body("image_vector", [0.6, 0.8], 5, filter_query=filt, exclude_ids=["d1"])
    assert body["size"] == 5 and body["_source"] == ["image_vector", "model_id"]
    knn = body["knn"]
    assert knn["k"] == 5 and knn["query_vector"] == [0.6, 0.8] and knn["num_candidates"] >= 100
    assert knn["filter"]["bool"]["filter"] == [{"term": {"group": "Fruit"}}]  # same filters as the search
    assert knn["filter"]["bool"]["must_not"] == [{"ids": {"values": ["d1"]}}]
    assert "query" not in body
