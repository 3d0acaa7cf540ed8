"""Query bodies are pure dicts: checked field by field."""
import pytest

from es_metric.errors import SearchError
from es_metric.search.queries import (Filter, FieldInfo, default_candidates, field_info,
                                      filter_clauses, knn_clause, leaf_fields, parse_filter,
                                      search_body, text_field_paths)

PROPS = {"title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
         "category": {"type": "keyword"}, "price": {"type": "float"}}
# one field of each kind a filter meets: the types come from here, never from the value's look
TYPED = {**PROPS, "sku": {"type": "keyword"}, "stock": {"type": "integer"}, "big": {"type": "long"},
         "tiny": {"type": "byte"}, "serial": {"type": "unsigned_long"}, "weight": {"type": "double"},
         "half": {"type": "half_float"}, "cents": {"type": "scaled_float", "scaling_factor": 100},
         "released": {"type": "date"}, "day": {"type": "date", "format": "dd/MM/yyyy"},
         "in_stock": {"type": "boolean"}, "notes": {"type": "text"}, "host": {"type": "ip"},
         "dims": {"properties": {"width": {"type": "short"}, "unit": {"type": "keyword"}}},
         "variants": {"type": "nested", "properties": {"color": {"type": "keyword"}}},
         "code": {"type": "alias", "path": "sku"}, "a.b": {"type": "keyword"},
         "image_vector": {"type": "dense_vector", "dims": 3}}


def clause(text: str, props: dict = TYPED) -> dict:
    return filter_clauses([parse_filter(text)], props)["bool"]


@pytest.mark.parametrize("text,expected", [
    ("category=Fruit", Filter("category", "=", "Fruit")),
    ("price>=10", Filter("price", ">=", "10")),
    ("price < 50", Filter("price", "<", "50")),
    ("label!=a|b", Filter("label", "!=", "a|b")),
    ("price=10..50", Filter("price", "=", "10..50")),
])
def test_parse_filter(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("bad", ["nofilter", "=x", "a=", "a b=c", "<5"])
def test_parse_filter_refuses(bad):
    with pytest.raises(SearchError, match="cannot read filter"):
        parse_filter(bad)


def test_field_info_walks_objects_nested_multi_fields_and_aliases():
    assert field_info("title", PROPS) == FieldInfo("title", "title", "text", exact="title.keyword")
    assert field_info("title.keyword", PROPS) == FieldInfo("title.keyword", "title.keyword", "keyword")
    assert field_info("dims.width", TYPED) == FieldInfo("dims.width", "dims.width", "short")
    assert field_info("variants.color", TYPED).nested == "variants"
    assert field_info("code", TYPED) == FieldInfo("code", "sku", "keyword")
    assert field_info("a.b", TYPED).path == "a.b"  # a dotted name kept as one field (subobjects off)
    assert field_info("day", TYPED).date_format == "dd/MM/yyyy"
    assert "image_vector" not in leaf_fields(TYPED) and "title.keyword" in leaf_fields(TYPED)


def test_unknown_field_names_similar_and_available_fields():
    with pytest.raises(SearchError, match=r"unknown field 'prise'; did you mean price\?") as info:
        clause("prise<5")
    assert "fields of this index: a.b, big, category, cents" in info.value.hint
    with pytest.raises(SearchError, match="'dims' is an object") as info:
        clause("dims=3")
    assert "dims.unit" in info.value.hint and "dims.width" in info.value.hint
    with pytest.raises(SearchError, match="its type is dense_vector"):
        clause("image_vector=1")
    with pytest.raises(SearchError, match="unknown field"):
        filter_clauses([parse_filter("price<5")], {})


def test_text_fields_are_the_index_text_fields_named_literally():
    props = {**TYPED, "desc": {"type": "text", "fields": {"en": {"type": "text"}}},
             "blurb": {"type": "alias", "path": "desc"},
             "variants": {"type": "nested", "properties": {"note": {"type": "text"}}}}
    assert text_field_paths(["title", "desc.en", "blurb", "desc"], props) == ["title", "desc.en", "desc"]
    for name, message in [("*", "is not a field name"), ("ti*", "is not a field name"), ("title^100", "not a field"),
                          ("titl?", "not a field name"), (" ", "not a field name"),
                          ("nope", r"'nope' is not a text field of this index \(unknown\)"),
                          ("sku", r"\(keyword\)"), ("title.keyword", r"\(keyword\)"), ("_id", r"\(keyword\)"),
                          ("dims", r"\(unknown\)"), ("variants.note", r"\(text in nested variants\)"),
                          ("image_vector", r"\(dense_vector\)")]:
        with pytest.raises(SearchError, match=message) as info:
            text_field_paths(["title", name], props)
        assert info.value.hint.startswith("text fields of this index: desc, desc.en, notes, title"), name


def test_keyword_values_stay_strings():
    assert clause("sku=007") == {"filter": [{"term": {"sku": "007"}}]}
    assert clause("sku=1_000|inf|nan") == {"filter": [{"terms": {"sku": ["1_000", "inf", "nan"]}}]}
    assert clause("title=nan") == {"filter": [{"term": {"title.keyword": "nan"}}]}
    assert clause('sku="a|b"') == {"filter": [{"term": {"sku": "a|b"}}]}
    assert clause('sku="1..2"') == {"filter": [{"term": {"sku": "1..2"}}]}
    assert clause("sku=a..m") == {"filter": [{"range": {"sku": {"gte": "a", "lte": "m"}}}]}


@pytest.mark.parametrize("text,expected", [
    ("stock=007", {"term": {"stock": 7}}),
    ("stock>=-3", {"range": {"stock": {"gte": -3}}}),
    ("big=9223372036854775807", {"term": {"big": 9223372036854775807}}),
    ("serial=18446744073709551615", {"term": {"serial": 18446744073709551615}}),
    ("price=10..20.5", {"range": {"price": {"gte": 10, "lte": 20.5}}}),
    ("weight<1e300", {"range": {"weight": {"lt": 1e300}}}),
    ("cents=.5|2", {"terms": {"cents": [0.5, 2]}}),
    ("tiny=..127", {"range": {"tiny": {"lte": 127}}}),
    ("in_stock=TRUE", {"term": {"in_stock": True}}),
    ("released>=now-7d/d", {"range": {"released": {"gte": "now-7d/d"}}}),
    ("released=2024-01-31..2024-02-01T10:00:00Z", {"range": {"released": {
        "gte": "2024-01-31", "lte": "2024-02-01T10:00:00Z"}}}),
    ("released=1700000000000", {"term": {"released": "1700000000000"}}),
    ("day=31/01/2024", {"term": {"day": "31/01/2024"}}),  # a custom format: Elasticsearch checks
    ("host=10.0.0.0/8", {"term": {"host": "10.0.0.0/8"}}),
    ("notes=red dress", {"match_phrase": {"notes": "red dress"}}),
    ("dims.width>3", {"range": {"dims.width": {"gt": 3}}}),
    ("variants.color=red", {"nested": {"path": "variants", "query": {"term": {"variants.color": "red"}}}}),
])
def test_values_are_typed_by_the_mapping(text, expected):
    assert clause(text) == {"filter": [expected]}


@pytest.mark.parametrize("text,expected", [
    ("stock=1_000", "'1_000' is not an integer from -2147483648 to 2147483647"),
    ("stock=1.5", "is not an integer"),
    ("stock=٣", "is not an integer"),  # a digit, but not an ASCII one
    ("tiny=128", "is not an integer from -128 to 127"),
    ("serial=-1", "is not an integer from 0 to"),
    ("big=9223372036854775808", "is not an integer"),
    ("price=inf", "'inf' is not a finite number"),
    ("price=nan", "'nan' is not a finite number"),
    ("price=-Infinity", "is not a finite number"),
    ("price=1e39", "is not a finite number of at most 3.40282e\\+38"),
    ("half=70000", "is not a finite number of at most 65504"),
    ("weight=1e400", "is not a finite number"),
    ("price=0x10", "is not a finite number"),
    ("in_stock=yes", "'yes' is not true or false"),
    ("released=yesterday", "is not a date"),
    ("released=2024-1-1", "is not a date"),
    ("host=999.1.1.1", "is not an IP address"),
    ("stock=1||2", "empty value in the list"),
    ("stock=..", "empty range"),
    ("in_stock>true", "cannot compare 'in_stock' \\(boolean\\) by range"),
    ("notes>a", "cannot compare 'notes' \\(text\\) by range"),
])
def test_bad_values_are_refused_naming_the_field_and_type(text, expected):
    with pytest.raises(SearchError, match=expected) as info:
        clause(text)
    assert f"'{parse_filter(text).field}'" in str(info.value)


def test_filter_clauses_combine_terms_ranges_and_negation():
    got = filter_clauses([parse_filter("title=Red dress"), parse_filter("price<50"),
                          parse_filter("price=10..20"), parse_filter("category!=a|b"),
                          parse_filter("price!=1..2")], PROPS)
    assert got == {"bool": {
        "filter": [{"term": {"title.keyword": "Red dress"}}, {"range": {"price": {"lt": 50}}},
                   {"range": {"price": {"gte": 10, "lte": 20}}}],
        "must_not": [{"terms": {"category": ["a", "b"]}}, {"range": {"price": {"gte": 1, "lte": 2}}}]}}
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


@pytest.mark.parametrize("k,factor,expected", [
    (10, 1.0, 100), (50, 1.0, 500), (10, 3.0, 300), (2000, 3.0, 10_000), (10_000, 1.0, 10_000)])
def test_default_candidates_scale_with_the_rescore_factor_within_the_limit(k, factor, expected):
    assert default_candidates(k, factor) == expected


def test_search_body():
    q = {"bool": {"must": [{"match": {"title": "red dress"}}], "filter": [{"term": {"c": 1}}]}}
    body = search_body(knn={"k": 1}, query=q, size=3, offset=6, vector_field="v",
                       highlight_fields=["title"])
    assert body["size"] == 3 and body["from"] == 6
    assert body["_source"] == {"excludes": ["v", "v_raw"]}  # nor the raw vector a DBA pass keeps
    assert body["highlight"]["fields"] == {"title": {}}
    assert body["query"] == q and body["knn"] == {"k": 1} and body["track_total_hits"] is False


def test_expansion_body_fetches_only_the_neighbours_vectors():
    from es_metric.search.queries import expansion_body
    filt = {"bool": {"filter": [{"term": {"group": "Fruit"}}]}}
    body = expansion_body("image_vector", [0.6, 0.8], 5, filter_query=filt, exclude_ids=["d1"])
    assert body["size"] == 5 and body["_source"] == ["model_id"]
    assert body["docvalue_fields"] == ["image_vector"]  # a lean index has no vector in _source
    knn = body["knn"]
    assert knn["k"] == 5 and knn["query_vector"] == [0.6, 0.8] and knn["num_candidates"] >= 100
    assert knn["filter"]["bool"]["filter"] == [{"term": {"group": "Fruit"}}]  # same filters as the search
    assert knn["filter"]["bool"]["must_not"] == [{"ids": {"values": ["d1"]}}]
    assert "query" not in body
