"""Filters typed by the index mapping, on the real stack, through the CLI and the HTTP API."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.catalogue import catalogue, ids_where  # noqa: F401  (fixture)
from tests.integration.helpers import esm_error, esm_json

pytestmark = pytest.mark.integration


def cli_ids(index: str, *filters: str) -> set[str]:
    args = [a for f in filters for a in ("--filter", f)]
    return {h["id"] for h in esm_json("search", index, "--text", "dress", "-k", "50", *args)["hits"]}


@pytest.fixture(scope="module")
def api(stack):
    from es_metric.web.app import create_app
    return TestClient(create_app(stack), raise_server_exceptions=False)


def api_ids(api, index: str, *filters: str) -> set[str]:
    r = api.get(f"/api/indices/{index}/search", params={"text": "dress", "k": 50, "filter": list(filters)})
    assert r.status_code == 200, r.text
    return {h["id"] for h in r.json()["hits"]}


def test_keyword_values_stay_strings(catalogue):
    """``sku=007`` was sent as the number 7 (matching "7"); ``1_000`` as 1000; ``nan`` crashed."""
    assert cli_ids(catalogue, "sku=007") == ids_where(lambda d: d["sku"] == "007") == {"d0", "d6", "d12", "d18"}
    assert cli_ids(catalogue, "sku=1_000") == ids_where(lambda d: d["sku"] == "1_000")
    assert cli_ids(catalogue, "sku=nan|inf") == ids_where(lambda d: d["sku"] in ("nan", "inf"))
    assert cli_ids(catalogue, "sku!=7|0070") == ids_where(lambda d: d["sku"] not in ("7", "0070"))


def test_title_nan_is_a_result_not_a_traceback_or_500(catalogue, api):
    assert esm_json("search", catalogue, "--like", "d0", "-k", "50", "--filter", "title=nan")["hits"][0]["id"] == "d5"
    r = api.get(f"/api/indices/{catalogue}/search", params={"like": "d0", "filter": "title=nan"})
    assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["d5"]


@pytest.mark.parametrize("filters,pred", [
    (["stock>=20"], lambda d: d["stock"] >= 20),
    (["stock=007"], lambda d: d["stock"] == 7),
    (["price=3..6"], lambda d: 3 <= d["price"] <= 6),
    (["price<1.6", "in_stock=false"], lambda d: d["price"] < 1.6 and not d["in_stock"]),
    (["in_stock=TRUE"], lambda d: d["in_stock"]),
    (["released>=2024-01-20"], lambda d: d["released"] >= "2024-01-20"),
    (["released=2024-01-03..2024-01-05T00:00:00Z"], lambda d: "2024-01-03" <= d["released"] <= "2024-01-05"),
    (["released<now"], lambda d: True),
    (["day=03/02/2024"], lambda d: d["day"] == "03/02/2024"),
    (["host=10.0.0.0/30"], lambda d: d["host"] in ("10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3")),
    (["dims.width>200", "dims.unit=cm"], lambda d: d["dims"]["width"] > 200 and d["dims"]["unit"] == "cm"),
    (["variants.color=black", "variants.color=red"], lambda d: d["stock"] >= 12 and d["stock"] % 3 == 0),
    (["notes=green summer"], lambda d: "green" in d["notes"]),
    (["title.keyword=red dress 3"], lambda d: d["title"] == "red dress 3"),
])
def test_numeric_date_boolean_ip_object_and_nested_filters(catalogue, api, filters, pred):
    expected = ids_where(pred)
    assert expected, "a filter case must select something"
    assert api_ids(api, catalogue, *filters) == expected
    assert cli_ids(catalogue, *filters) == expected


@pytest.mark.parametrize("flt,words", [
    ("stock=1_000", ["'stock'", "'1_000' is not an integer", "integer"]),
    ("price=inf", ["'price'", "'inf' is not a finite number", "float"]),
    ("price>nan", ["'price'", "'nan' is not a finite number"]),
    ("in_stock=yes", ["'in_stock'", "true or false", "boolean"]),
    ("released>=yesterday", ["'released'", "is not a date"]),
    ("stok=3", ["unknown field 'stok'; did you mean stock", "fields of this index:"]),
    ("dims=3", ["'dims' is an object", "dims.width"]),
    ("image_vector=1", ["cannot filter on 'image_vector'", "dense_vector"]),
    ("day=2024-02-03", ["Elasticsearch refused", "failed to parse date field", "dd/MM/yyyy"]),
])
def test_bad_filters_are_one_line_errors_and_400s(catalogue, api, flt, words):
    line = esm_error("search", catalogue, "--text", "dress", "--filter", flt)
    r = api.get(f"/api/indices/{catalogue}/search", params={"text": "dress", "filter": flt})
    assert r.status_code == 400 and "Traceback" not in r.text
    body = r.json()
    for word in words:
        assert word in line and word in f"{body['error']} ({body['hint']})", (word, line, body)
