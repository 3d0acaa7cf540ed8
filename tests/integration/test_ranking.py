"""Ranking a shopper trusts, on the real stack and a constructed shop whose vectors are written
by hand: five products of four near-identical photos each (P0 nearest the query, P4 farthest),
their names and descriptions, and a query document ``q`` (searched with ``--like q``).

Collapse (Elasticsearch's field collapsing on an image-only search, the same rule applied to the
fused window otherwise), MMR, the shop's own text query, the name-over-description default,
explanations and the "other" facet row; through the CLI, the HTTP API and the Python API.
"""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.model.modelfile import read_card
from tests.integration.helpers import esm_error, esm_json

pytestmark = pytest.mark.integration
NAMES = ["wool hoodie", "cotton shirt", "linen trousers", "silk scarf", "denim jacket"]
PER_PRODUCT = 4


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def vectors(dims: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The query and each document's vector: product p's centre at angle 0.35 * (p + 1) rad
    from the query (in a plane), its photos within 0.01 rad of it."""
    rng = np.random.default_rng(7)
    e0, e1 = np.eye(dims)[0], np.eye(dims)[1]
    out = {}
    for p in range(len(NAMES)):
        centre = np.cos(0.35 * (p + 1)) * e0 + np.sin(0.35 * (p + 1)) * e1
        for j in range(PER_PRODUCT):
            out[f"p{p}-{j}"] = _unit(centre + 0.01 * _unit(rng.normal(size=dims)))
    return e0, out


def documents(dims: int) -> dict[str, dict]:
    query, vecs = vectors(dims)
    docs = {"q": {"product": "P0", "title": "query", "description": "", "colour": "none", "vector": query}}
    for doc_id, vec in vecs.items():
        p, j = int(doc_id[1]), int(doc_id[3])
        docs[doc_id] = {"product": f"P{p}", "title": f"{NAMES[p]} {j}",
                        "description": f"goes well with a {NAMES[(p + 1) % 5]}",
                        "colour": ["red", "blue", "green", "black", "white", "grey"][(p * 4 + j) % 6],
                        "vector": vec}
    return docs


@pytest.fixture(scope="module")
def shop(stack, tiny_model):
    client = make_client(stack)
    alias = f"rank-{uuid.uuid4().hex[:8]}"
    create_versioned_index(client, alias, read_card(tiny_model), str(tiny_model),
                           text_fields=("title", "description"), keyword_fields=("product", "colour"))
    info = index_info(client, alias)
    ops = []
    for doc_id, doc in documents(info.dims).items():
        vec = doc.pop("vector")
        ops += [{"index": {"_index": info.concrete, "_id": doc_id}},
                {**doc, info.vector_field: vec.tolist(), "model_id": info.model_id}]
    assert not client.bulk(operations=ops, refresh=True)["errors"]
    yield alias
    client.options(ignore_status=404).indices.delete(index=f"{alias}*", expand_wildcards="all")


def search(shop, *args) -> dict:
    return esm_json("search", shop, "--like", "q", *args)


def ids(result: dict) -> list[str]:
    return [h["id"] for h in result["hits"]]


def products_of(result: dict) -> list[str]:
    return [h["source"]["product"] for h in result["hits"]]


def test_the_constructed_shop_ranks_copies_of_one_product_first(shop):
    assert products_of(search(shop, "-k", "8")) == ["P0"] * 4 + ["P1"] * 4


def test_collapse_gives_one_hit_per_product_by_elasticsearch_and_by_the_fused_window(shop):
    native = search(shop, "--collapse", "product", "-k", "4")        # image only: ES's collapse
    assert products_of(native) == ["P0", "P1", "P2", "P3"] and native["collapse"] == "product"
    assert ids(native)[0].startswith("p0-")
    client_side = search(shop, "--collapse", "product", "-k", "4", "--explain")   # the fused window
    assert ids(client_side) == ids(native)
    paged = search(shop, "--collapse", "product", "-k", "2", "--page", "2")
    assert ids(paged) == ids(native)[2:4]
    hybrid = search(shop, "--text", "hoodie trousers", "--collapse", "product", "-k", "5")
    assert sorted(products_of(hybrid)) == ["P0", "P1", "P2", "P3", "P4"]


def test_collapse_grows_the_window_until_the_page_has_its_products(shop, es):
    """A window of 4 holds one product (four photos each): both paths grow it until the page
    has its five products."""
    from es_metric.search.diversity import collapse_field
    from es_metric.search.hybrid import Window
    from es_metric.search.page import knn_page, windowed_search
    from es_metric.search.service import doc_vector, resolve

    info, props = resolve(es, shop)
    w = Window(size=4, vector=doc_vector(es, info, "q"), exclude=["q"], fusion="minmax",
               collapse=collapse_field("product", props))
    native, _ = knn_page(es, info, w, 0, 5)
    fused, _, ranking = windowed_search(es, info, w, 0, 5, None)
    for hits in (native, fused):
        assert [h["_source"]["product"] for h in hits] == ["P0", "P1", "P2", "P3", "P4"]
    assert ranking.full is False     # grown until it held everything there is


def test_collapse_on_a_field_elasticsearch_cannot_collapse_on_is_one_clear_line(shop):
    assert "cannot collapse on 'image_vector'" in esm_error("search", shop, "--like", "q", "--collapse", "image_vector")
    assert "unknown field 'prodcut'" in esm_error("search", shop, "--like", "q", "--collapse", "prodcut")


def test_diversify_brings_other_products_up_and_one_keeps_the_ranking(shop):
    plain = search(shop, "-k", "4")
    assert ids(search(shop, "-k", "4", "--diversify", "1")) == ids(plain)
    varied = search(shop, "-k", "4", "--diversify", "0.3", "--explain")
    assert len(set(products_of(varied))) >= 3 and products_of(varied)[0] == "P0"
    mmr = varied["hits"][1]["explain"]["mmr"]
    assert mmr["lambda"] == 0.3 and mmr["redundancy"] < 0.99 and varied["diversify"] == 0.3


def test_the_shops_text_query_is_the_text_leg_and_the_filters_still_apply(shop):
    query = json.dumps({"match": {"title": "{{text}}"}})
    res = esm_json("search", shop, "--text", "scarf", "--text-query", query, "-k", "10")
    assert products_of(res) == ["P3"] * 4
    blue = esm_json("search", shop, "--text", "scarf", "--text-query", query, "--filter", "colour=blue", "-k", "10")
    assert ids(blue) and all(h["source"]["colour"] == "blue" for h in blue["hits"])
    # a query of its own that tries to reach past the filters only narrows within them
    wide = json.dumps({"bool": {"should": [{"match_all": {}}], "filter": []}})
    assert {h["source"]["colour"] for h in
            esm_json("search", shop, "--text-query", wide, "--filter", "colour=red", "-k", "30")["hits"]} == {"red"}
    hybrid = search(shop, "--text", "scarf", "--text-query", query, "-k", "4", "--text-weight", "5")
    assert products_of(hybrid)[0] == "P3" and "q" not in ids(hybrid)


def test_elasticsearch_refusing_the_shops_query_is_one_clear_line(shop):
    bad = json.dumps({"match": {"title": {"query": "x", "bogus_option": 1}}})
    line = esm_error("search", shop, "--text-query", bad)
    assert "Elasticsearch refused the text query" in line and "bogus_option" in line
    assert "reads another index" in esm_error("search", shop, "--text-query",
                                              '{"terms": {"product": {"index": "x", "id": "1", "path": "p"}}}')


def test_the_default_text_leg_weighs_names_over_descriptions(shop, stack):
    """"wool hoodie" is P0's name and P4's description: names win by default; with the fields
    given unweighted (the Python API's text_fields) the description ties at best."""
    from es_metric.api import EsMetric

    top = esm_json("search", shop, "--text", "wool hoodie", "-k", "4")
    assert products_of(top) == ["P0"] * 4
    with EsMetric(stack) as api:
        flat = api.search(shop, text="wool hoodie", k=8, text_fields=["title", "description"])
        weighted = api.search(shop, text="wool hoodie", k=8)
    best = {h["source"]["product"]: h["score"] for h in reversed(flat["hits"])}
    assert best["P4"] >= best["P0"] * 0.9
    assert [h["source"]["product"] for h in weighted["hits"]][:4] == ["P0"] * 4


def test_a_shoppers_two_words_in_two_fields_find_the_product_that_has_both(stack, tiny_model):
    """"wool hoodie": one product says "hoodie" in its name and "wool" in its description. The
    default text leg counts both words (cross_fields); one best field (best_fields) scored only
    the name, where four products tie on one word each, and put "Grey hoodie" first."""
    client = make_client(stack)
    alias = f"words-{uuid.uuid4().hex[:8]}"
    create_versioned_index(client, alias, read_card(tiny_model), str(tiny_model),
                           text_fields=("title", "description"), keyword_fields=())
    info = index_info(client, alias)
    docs = {"plain": ("Grey hoodie", "Soft cotton, kangaroo pocket."),   # names of two words each
            "socks": ("Wool socks", "Knitted, ribbed cuffs."),
            "beanie": ("Wool beanie", "Knitted, one size."),
            "scarf": ("Silk scarf", "Hand rolled edges."),
            "shirt": ("Linen shirt", "Relaxed fit, two pockets."),
            "both": ("Blue hoodie", "Warm merino wool, kangaroo pocket.")}  # last: it wins no tie
    rng = np.random.default_rng(3)
    ops: list[dict] = []
    for doc_id, (title, description) in docs.items():
        ops += [{"index": {"_index": info.concrete, "_id": doc_id}},
                {"title": title, "description": description, "model_id": info.model_id,
                 info.vector_field: _unit(rng.normal(size=info.dims)).tolist()}]
    try:
        assert not client.bulk(operations=ops, refresh=True)["errors"]
        top = esm_json("search", alias, "--text", "wool hoodie", "-k", "4")
        assert ids(top)[0] == "both", ids(top)
        assert set(ids(top)[1:]) == {"plain", "socks", "beanie"}
    finally:
        client.options(ignore_status=404).indices.delete(index=f"{alias}*", expand_wildcards="all")


def test_explain_gives_each_legs_score_rank_normalised_score_and_weight(shop):
    """The default (adaptive) fusion: each hit says the legs' agreement and the text weight it
    gave (the default's times AGREE_BOOST x text_share); the answer's fusion says it once."""
    from es_metric.search.fusion import AGREE_BOOST, DEFAULT_IMAGE_WEIGHT, DEFAULT_TEXT_WEIGHT, text_share

    res = search(shop, "--text", "cotton shirt", "-k", "6", "--explain")
    assert res["fusion"]["where"] == "client"
    decided = res["hits"][0]["explain"]["adaptive"]
    share = text_share(decided["agreement"])
    assert decided["text_weight"] == pytest.approx(DEFAULT_TEXT_WEIGHT * AGREE_BOOST * share)
    assert res["fusion"]["text_weight_used"] == decided["text_weight"] > 0   # the photo agrees with "cotton shirt"
    for hit in res["hits"]:
        why = hit["explain"]
        assert why["fusion"] == "adaptive" and set(why["legs"]) == {"image", "text"}
        assert why["adaptive"] == decided and why["legs"]["text"]["weight"] == decided["text_weight"]
        assert sum(leg["contribution"] for leg in why["legs"].values()) == pytest.approx(hit["score"])
        assert why["fused"] == pytest.approx(hit["score"])
        image = why["legs"]["image"]
        assert image["weight"] == DEFAULT_IMAGE_WEIGHT and 0 <= image["normalised"] <= 1 and image["rank"] >= 1
    cotton = next(h for h in res["hits"] if h["source"]["product"] == "P1")["explain"]["legs"]["text"]
    assert cotton["rank"] <= 4 and cotton["score"] > 0
    alone = search(shop, "-k", "2", "--explain")["hits"][0]["explain"]
    assert alone["fusion"] is None and alone["legs"]["image"]["rank"] == 1


def test_facet_size_and_the_other_row_count_the_window(shop):
    res = search(shop, "--facet", "product", "--facet", "colour", "--facet-size", "2", "-k", "3")
    rows = res["facets"]["product"]
    assert len(rows) == 3 and rows[-1]["other"] is True
    assert sum(r["count"] for r in rows) == 20                       # every document but q
    other = esm_json("search", shop, "--like", "q", "--filter", rows[-1]["filter"], "-k", "30")
    assert len(other["hits"]) == rows[-1]["count"]
    assert not any(r.get("other") for r in search(shop, "--facet", "product", "-k", "3")["facets"]["product"])


def test_the_http_api_and_python_api_take_the_same_options(shop, stack):
    from fastapi.testclient import TestClient

    from es_metric.api import EsMetric
    from es_metric.web.app import create_app

    api = TestClient(create_app(stack))
    query = json.dumps({"match": {"title": "{{text}}"}})
    common = {"like": "q", "text": "scarf", "text_query": query, "collapse": "product",
              "diversify": "0.8", "explain": "true", "facets": "colour", "facet_size": "2", "k": "3"}
    posted = api.post(f"/api/indices/{shop}/search", data=common)
    got = api.get(f"/api/indices/{shop}/search", params={**common, "facet": "colour"})
    assert posted.status_code == got.status_code == 200, (posted.text, got.text)
    with EsMetric(stack) as py:
        direct = py.search(shop, like="q", text="scarf", text_query=query, collapse="product",
                           diversify=0.8, explain=True, facets=["colour"], facet_size=2, k=3)
    for body in (posted.json(), got.json(), direct):
        assert ids(body) == ids(direct) and len(set(products_of(body))) == 3
        assert all("explain" in h for h in body["hits"]) and len(body["facets"]["colour"]) <= 3
    bad = api.get(f"/api/indices/{shop}/search", params={"text_query": '{"script": {}}'})
    assert bad.status_code == 400 and "runs a script" in bad.json()["error"]
    refused = api.get(f"/api/indices/{shop}/search",
                      params={"text_query": json.dumps({"match": {"title": {"query": "x", "nope": 1}}})})
    assert refused.status_code == 400 and "Elasticsearch refused the text query" in refused.json()["error"]
    assert api.get(f"/api/indices/{shop}/search", params={"like": "q", "diversify": "2"}).status_code == 422


def _node_fuses(es, index: str, fusion: str) -> tuple[bool, str]:
    """Whether this node accepts the retriever, and its own words when it does not."""
    from elasticsearch import ApiError

    from es_metric.search.retrievers import RETRIEVER, probe_body

    try:
        es.search(index=index, body=probe_body(RETRIEVER[fusion]))
        return True, ""
    except ApiError as exc:
        return False, str(exc)


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_the_cluster_fuses_where_it_can_and_the_client_where_it_cannot(shop, es, fusion):
    from es_metric.search.retrievers import cluster_fuses

    concrete = index_info(es, shop).concrete
    accepted, said = _node_fuses(es, concrete, fusion)
    assert cluster_fuses(es, concrete, fusion) is accepted
    res = search(shop, "--text", "cotton shirt", "--fusion", fusion, "-k", "5")
    assert res["fusion"]["where"] == ("cluster" if accepted else "client")
    assert ids(res) and "q" not in ids(res)
    if not accepted:   # the integ-test node: no rank-rrf module (or, on a basic licence, 403)
        assert "unknown retriever" in said or "license" in said, said
    for other in ("zscore", "weighted", "adaptive"):   # no retriever does these: always here
        assert search(shop, "--text", "cotton", "--fusion", other)["fusion"]["where"] == "client"
    explained = search(shop, "--text", "cotton", "--fusion", fusion, "--explain")
    assert explained["fusion"]["where"] == "client"   # the legs are needed to explain them


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_cluster_and_client_fusion_give_the_same_ranking(shop, es, fusion):
    """Runs where the node has the linear / rrf retriever (rank-rrf module, enterprise or trial
    licence); the local integ-test node has neither, and says so in the skip reason."""
    from es_metric.search.hybrid import Window, ranked
    from es_metric.search.service import doc_vector, resolve, text_fields_of

    info, props = resolve(es, shop)
    accepted, said = _node_fuses(es, info.concrete, fusion)
    if not accepted:
        pytest.skip(f"this node cannot fuse by {fusion} on the cluster: {said[:120]}")
    w = Window(size=100, vector=doc_vector(es, info, "q"), exclude=["q"], text="cotton shirt trousers",
               fields=text_fields_of(props), fusion=fusion, image_weight=0.8, text_weight=0.2)
    on_cluster, here = ranked(es, info, w), ranked(es, info, Window(**{**w.__dict__, "cluster": False}))
    assert (on_cluster.where, here.where) == ("cluster", "client")
    assert [d for d, _ in on_cluster.fused] == [d for d, _ in here.fused]
    assert [s for _, s in on_cluster.fused] == pytest.approx([s for _, s in here.fused], rel=1e-4)


def test_a_cluster_that_refuses_the_fusion_request_is_fused_here_and_not_asked_again(shop, es, monkeypatch):
    """As if the probe had passed: the local node answers the real linear/rrf request with
    "unknown retriever"; the search fuses the same legs client-side and remembers it."""
    from es_metric.search import hybrid, retrievers
    from es_metric.search.hybrid import Window, ranked
    from es_metric.search.service import doc_vector, resolve, text_fields_of

    info, props = resolve(es, shop)
    w = Window(size=100, vector=doc_vector(es, info, "q"), exclude=["q"], text="cotton shirt",
               fields=text_fields_of(props), fusion="minmax", image_weight=0.8, text_weight=0.2)
    expected = ranked(es, info, Window(**{**w.__dict__, "cluster": False})).fused
    asked = []
    monkeypatch.setattr(hybrid, "cluster_fuses", lambda *args: asked.append(args) or True)
    got = ranked(es, info, w)
    assert asked and got.where == "client" and got.fused == expected
    monkeypatch.undo()
    assert retrievers.cluster_fuses(es, info.concrete, "minmax") is False   # remembered as refusing
    assert retrievers._PROBES[es][(info.concrete, "linear")][1] is False
