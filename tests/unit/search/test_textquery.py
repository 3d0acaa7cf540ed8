"""The shop's own text query is data: checked, bounded, wrapped in es-metric's filters; the
default text leg weighs name/title fields over the rest."""
import json

import pytest

from es_metric.errors import SearchError
from es_metric.search.service import SearchRequest
from es_metric.search.textquery import (MAX_QUERY_CHARS, default_query, field_weights, is_name,
                                        leg_query, parse_text_query, with_text)

SHOP = {"multi_match": {"query": "{{text}}", "fields": ["name^4", "brand^2"], "type": "cross_fields"}}


def test_a_query_object_is_accepted_from_json_or_a_dict():
    assert parse_text_query(json.dumps(SHOP)) == SHOP == parse_text_query(SHOP)
    fs = {"function_score": {"query": {"match": {"name": "wool"}},
                             "field_value_factor": {"field": "sales", "modifier": "log1p"}}}
    assert parse_text_query(fs) == fs


@pytest.mark.parametrize("value, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object naming one query"),
    ('"wool"', "JSON object naming one query"),
    ('{"match": {"a": 1}, "term": {"b": 2}}', "naming one query"),
    ('{}', "naming one query"),
    ('{"query": {"match_all": {}}}', "search body key"),
    ('{"size": 10000}', "search body key"),
    ('{"knn": {"field": "v"}}', "search body key"),
    ('{"terms": {"sku": {"index": "secrets", "id": "1", "path": "sku"}}}', "'index' reads another index"),
    ('{"more_like_this": {"fields": ["a"], "like": [{"_index": "other", "_id": "1"}]}}', "reads another index"),
    ('{"script": {"script": {"source": "true"}}}', "runs a script"),
    ('{"function_score": {"query": {"match_all": {}}, "script_score": {"script": "1"}}}', "runs a script"),
    ('{"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}', "hides a query"),
])
def test_what_is_not_one_query_of_this_index_is_refused(value, message):
    with pytest.raises(SearchError, match=message):
        parse_text_query(value)


def test_size_and_depth_are_bounded():
    with pytest.raises(SearchError, match="characters"):
        parse_text_query('{"match": {"a": "' + "x" * MAX_QUERY_CHARS + '"}}')
    deep: dict = {"match_all": {}}
    for _ in range(30):
        deep = {"bool": {"must": [deep]}}
    with pytest.raises(SearchError, match="too deep"):
        parse_text_query(deep)
    with pytest.raises(SearchError, match="too deep or too large"):
        parse_text_query({"terms": {"sku": list(range(5000))}})


def test_the_text_goes_in_as_a_value_where_the_placeholder_says():
    sly = 'wool", "boost": 1000, "x": "'
    filled = with_text(SHOP, sly)
    assert filled["multi_match"]["query"] == sly and filled["multi_match"]["fields"] == ["name^4", "brand^2"]
    assert SHOP["multi_match"]["query"] == "{{text}}"                    # the template is not changed
    with pytest.raises(SearchError, match="no text was given"):
        with_text(SHOP, None)
    with pytest.raises(SearchError, match="no {{text}} placeholder"):
        with_text({"match": {"name": "wool"}}, "hoodie")
    assert with_text({"match": {"name": "wool"}}, None) == {"match": {"name": "wool"}}


def test_filters_and_exclusions_wrap_the_shop_query_and_cannot_be_replaced():
    filt = {"bool": {"filter": [{"term": {"brand": "x"}}], "must_not": [{"ids": {"values": ["q"]}}]}}
    shop = {"bool": {"should": [{"match": {"name": "wool"}}], "filter": []}}   # an empty filter of its own
    body = leg_query(shop, filt)
    assert body == {"bool": {"must": [shop], "filter": [{"term": {"brand": "x"}}],
                             "must_not": [{"ids": {"values": ["q"]}}]}}
    assert leg_query(shop, None) == {"bool": {"must": [shop]}}


def test_name_and_title_fields_weigh_more_in_the_default_leg():
    assert field_weights(["description", "title", "product_name", "coarse_class"], 3) == \
        ["description", "title^3", "product_name^3", "coarse_class"]
    assert field_weights(["title", "notes"], 1) == ["title", "notes"]
    assert [is_name(f) for f in ("productTitle", "shop.name", "NAME", "filename", "names")] == \
        [True, True, True, False, False]
    assert default_query("wool hoodie", ["title^3", "description"]) == \
        {"multi_match": {"query": "wool hoodie", "fields": ["title^3", "description"], "type": "cross_fields"}}


def test_the_search_request_checks_the_new_options():
    req = SearchRequest(text="wool", text_query=json.dumps(SHOP), collapse="product", diversify=0.7,
                        explain=True, facet_size=25)
    assert req.text_query == SHOP
    for kwargs, message in [({"diversify": 1.5}, "diversify"), ({"diversify": float("nan")}, "diversify"),
                            ({"diversify": True}, "diversify"), ({"collapse": " "}, "collapse"),
                            ({"explain": "yes"}, "explain"), ({"text_query": "{"}, "not JSON")]:
        with pytest.raises(SearchError, match=message):
            SearchRequest(**{"text": "x", **kwargs})
