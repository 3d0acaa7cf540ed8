"""Every user mistake is a clear 4xx JSON answer (HTTP) or one line and a non-zero exit (CLI);
Elasticsearch's own failures become 502/503; never a 500, a traceback or a secret."""
from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from es_metric.index.client import make_client
from es_metric.index.mappings import new_index_body
from es_metric.model.modelfile import read_card
from tests.integration.catalogue import catalogue  # noqa: F401  (fixture)
from tests.integration.helpers import esm_error
from tests.integration.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def api(stack):
    from es_metric.web.app import create_app
    return TestClient(create_app(stack), raise_server_exceptions=False)


def refused(r, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert "Traceback" not in r.text and body["error"] and len(body["error"]) < 500
    text = f"{body['error']} ({body.get('hint') or ''})"
    for word in words:
        assert word in text, (word, text)
    return body


@pytest.mark.parametrize("params,words", [
    ({"page": 51, "k": 200}, ["page 51 of k=200 reaches result 10200", "10,000-result window"]),
    ({"page": 100, "k": 101}, ["reaches result 10100", "10,000-result window"]),
    ({"fusion": "bogus"}, ["unknown fusion 'bogus'", "minmax, zscore, rrf, weighted"]),
    ({"text": "   "}, ["empty text"]),
    ({"like": "no-such-doc"}, ["no document 'no-such-doc'"]),
    ({"like": "x" * 600}, ["no document 'xxxxxxx"]),
    ({"text": None}, ["nothing to search with"]),
])
def test_search_mistakes_are_400s_in_the_api_and_one_line_in_the_cli(catalogue, api, params, words):
    query = {"text": "dress", **params}
    query = {k: v for k, v in query.items() if v is not None}
    refused(api.get(f"/api/indices/{catalogue}/search", params=query), 400, *words)
    refused(api.post(f"/api/indices/{catalogue}/search", data=query), 400, *words)
    args = [a for k, v in query.items() for a in (f"--{k}" if len(k) > 1 else f"-{k}", str(v))]
    if "fusion" not in params:  # the CLI refuses --fusion bogus itself (click.Choice)
        line = esm_error("search", catalogue, *args)
        assert all(word in line for word in words), line


def test_deep_pages_within_the_window_answer(catalogue, api):
    r = api.get(f"/api/indices/{catalogue}/search", params={"like": "d0", "page": 100, "k": 100})
    assert r.status_code == 200 and r.json()["hits"] == []


@pytest.mark.parametrize("data,words", [
    ({"image_weight": "-1"}, ["image_weight", "greater than or equal to 0"]),
    ({"text_weight": "nan"}, ["text_weight"]),
    ({"image_weight": "inf"}, ["image_weight"]),
    ({"k": "abc"}, ["k", "valid integer"]),
    ({"k": "0"}, ["k", "greater than or equal to 1"]),
    ({"page": "101"}, ["page", "less than or equal to 100"]),
    ({"min_similarity": "nan"}, ["min_similarity"]),
])
def test_wrong_parameter_types_and_ranges_are_4xx(catalogue, api, data, words):
    r = api.post(f"/api/indices/{catalogue}/search", data={"text": "dress", **data})
    assert r.status_code in (400, 422)
    refused(r, r.status_code, *words)


@pytest.mark.parametrize("index,status,words", [
    ("no-such-index", 404, ["no index or alias named 'no-such-index'"]),
    ("*", 400, ["'*' is not a valid index or alias name"]),
    ("_all", 400, ["is not a valid index"]),
    ("a,b", 400, ["is not a valid index"]),
    ("Shop", 400, ["is not a valid index"]),
])
def test_index_names_are_checked(api, stack, index, status, words):
    refused(api.get(f"/api/indices/{index}/search", params={"text": "x"}), status, *words)
    esm_error("search", index, "--text", "x")


def test_unknown_routes_and_methods_are_json(api):
    refused(api.get("/api/nothing"), 404, "Not Found")
    refused(api.delete("/api/indices/x/search"), 405, "Method Not Allowed")


def test_unreachable_elasticsearch_is_503_without_secrets(stack, catalogue):
    from es_metric.web.app import create_app

    secret = "pw-" + uuid.uuid4().hex
    down = stack.with_(es_url=f"http://127.0.0.1:{free_port()}", es_user="elastic", es_password=secret)
    r = TestClient(create_app(down), raise_server_exceptions=False).get(
        f"/api/indices/{catalogue}/search", params={"text": "x"})
    body = refused(r, 503, "cannot reach Elasticsearch")
    assert r.headers["Retry-After"] and secret not in r.text and "Traceback" not in r.text
    assert body["hint"]


@pytest.fixture
def red_index(stack, tiny_model):
    """An es-metric index whose only shard can never be allocated: Elasticsearch answers every
    search on it with a server error (no shard available)."""
    client = make_client(stack)
    alias = f"red-{uuid.uuid4().hex[:8]}"
    body = new_index_body(read_card(tiny_model), str(tiny_model))
    settings = {**body["settings"], "index.routing.allocation.require._name": "no-such-node"}
    client.indices.create(index=f"{alias}-v1", settings=settings, mappings=body["mappings"],
                          aliases={alias: {}}, wait_for_active_shards="0")
    yield alias
    client.indices.delete(index=f"{alias}-v1")


def test_elasticsearch_server_errors_are_502(api, red_index, stack):
    r = api.get(f"/api/indices/{red_index}/search", params={"text": "x"})
    body = refused(r, 502, "Elasticsearch failed the search", "HTTP 503")
    assert str(stack.es_port) not in body["error"]  # clients never learn where ES is
    line = esm_error("search", red_index, "--text", "x")
    assert "failed the search" in line and f"127.0.0.1:{stack.es_port}" in line
