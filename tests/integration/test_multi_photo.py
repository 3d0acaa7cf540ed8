"""Several photos per document on the real stack: nested vectors, each product once in the
results with the photo that matched, --like on a product, --existing, and reindex."""
from __future__ import annotations

import json

import numpy as np
import pytest

from es_metric.index.indices import count, index_info
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration
CLASSES, PER_PRODUCT = (0, 2, 4), 3


def products(data) -> dict[str, list[str]]:
    """Products of 3 photos each: 2 products per class."""
    out = {}
    for c in CLASSES:
        files = sorted(str(p) for p in (data / f"class_{c}").iterdir())
        for j in range(2):
            out[f"p{c}-{j}"] = files[j * PER_PRODUCT:(j + 1) * PER_PRODUCT]
    return out


def write_manifest(path, prods: dict[str, list[str]]):
    """A manifest beside the image folder (its folder is the root images are read from)."""
    path.write_text("".join(json.dumps({"id": k, "image": v, "title": f"product {k}"}) + "\n"
                            for k, v in prods.items()))
    return path


def test_products_are_found_once_with_the_photo_that_matched(es, index_name, tiny_model, tiny_data):
    prods = products(tiny_data)
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    mapping = es.indices.get_mapping(index=index_info(es, index_name).concrete)
    photos = next(iter(mapping.values()))["mappings"]["properties"]["photos"]
    assert photos["type"] == "nested" and photos["properties"]["vector"]["dims"] == 32
    summary = esm_json("ingest", index_name, write_manifest(tiny_data.parent / f"{index_name}.jsonl", prods))
    assert (summary["indexed"], summary["failed"]) == (len(prods), 0)
    doc = es.get(index=index_name, id="p2-1")["_source"]
    assert [p["ref"] for p in doc["photos"]] == prods["p2-1"] and doc["title"] == "product p2-1"
    assert all(len(p["vector"]) == 32 and len(p["sha256"]) == 64 for p in doc["photos"])

    query = prods["p2-1"][1]  # the second photo of a product
    result = esm_json("search", index_name, "--image", query, "-k", "4")
    ids = [h["id"] for h in result["hits"]]
    assert ids[0] == "p2-1" and len(ids) == len(set(ids)) == 4
    top = result["hits"][0]
    assert top["matched_image"]["ref"] == query and top["matched_image"]["score"] == pytest.approx(top["score"])
    assert "vector" not in json.dumps(top["source"])

    # --like a product: the mean of its photos' vectors (normalised) is the query; each hit
    # scores by its best photo, (1 + cosine) / 2, and names it
    liked = esm_json("search", index_name, "--like", "p4-0", "-k", "5")
    assert "p4-0" not in [h["id"] for h in liked["hits"]] and len(liked["hits"]) == 5
    mine = np.array([p["vector"] for p in es.get(index=index_name, id="p4-0")["_source"]["photos"]])
    q = mine.mean(axis=0) / np.linalg.norm(mine.mean(axis=0))
    for hit in liked["hits"]:
        photos = es.get(index=index_name, id=hit["id"])["_source"]["photos"]
        scores = [(1 + q @ np.array(p["vector"]) / np.linalg.norm(p["vector"])) / 2 for p in photos]
        best = int(np.argmax(scores))
        assert hit["score"] == pytest.approx(scores[best], abs=1e-4)
        assert hit["matched_image"] == {"ref": photos[best]["ref"], "score": hit["score"], "offset": best}


def test_lists_on_a_one_vector_index_are_refused_with_a_reason(es, index_name, tiny_model, tiny_data):
    prods = dict(list(products(tiny_data).items())[:2])
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = esm_json("ingest", index_name, write_manifest(tiny_data.parent / f"{index_name}.jsonl", prods))
    assert (summary["indexed"], summary["failed"]) == (0, 2)
    reasons = {r["reason"] for r in esm_json("failures", index_name)["failures"]}
    assert reasons == {"several_photos"}


def shop_gallery(es, index: str, alias: str | None, prods: dict[str, list[str]], model, data) -> None:
    """A shop's index of products with a list of photos each (``alias`` pointing at it, if
    given), made multi-photo with --existing and embedded from its own ``gallery`` field."""
    es.indices.create(index=index, mappings={"properties": {"gallery": {"type": "keyword"},
                                                            "stock": {"type": "integer"}}},
                      aliases={alias: {}} if alias else None)
    for i, (pid, refs) in enumerate(prods.items()):
        es.index(index=index, id=pid, document={"gallery": refs, "stock": i})
    es.indices.refresh(index=index)
    esm("mapping", "create", index, "--model", model, "--existing", "--multi-photo")
    summary = esm_json("ingest", alias or index, "--from-index", "--image-field", "gallery",
                       "--base-dir", data)
    assert (summary["indexed"], summary["failed"]) == (len(prods), 0)


def test_existing_index_gets_nested_photos_and_reindex_keeps_them(es, index_name, tiny_model,
                                                                  tiny_model_l2, tiny_data):
    prods = dict(list(products(tiny_data).items())[:4])
    shop_gallery(es, f"{index_name}-v1", index_name, prods, tiny_model, tiny_data)
    doc = es.get(index=index_name, id="p2-0")["_source"]
    assert doc["stock"] == 2 and doc["gallery"] == prods["p2-0"] and len(doc["es_metric"]["photos"]) == 3

    moved = esm_json("reindex", index_name, "--model", tiny_model_l2, "--force")  # tiny model: gate
    assert (moved["documents"], moved["vectors"], moved["failed"]) == (4, 4, 0)
    doc = es.get(index=index_name, id="p2-0")["_source"]   # the same layout in the new index
    photos = doc["es_metric"]["photos"]
    assert len(photos) == 3 and len(photos[0]["vector"]) == 24 and doc["stock"] == 2
    assert count(es, index_name) == 4


def test_http_api_searches_by_url_and_serves_the_photo_that_matched(stack, es, index_name, tiny_model,
                                                                    tiny_data):
    from fastapi.testclient import TestClient

    from es_metric.web.app import create_app
    from tests.urlserver import serving

    prods = products(tiny_data)
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    esm_json("ingest", index_name, write_manifest(tiny_data.parent / f"{index_name}.jsonl", prods))
    query = prods["p0-1"][2]
    with open(query, "rb") as fh:
        photo_bytes = fh.read()
    with serving({"/q.jpg": photo_bytes}) as hp:
        client = TestClient(create_app(stack.with_(url_allow=(hp,), image_roots=(tiny_data,))))
        found = client.post(f"/api/indices/{index_name}/search", data={"image_url": f"http://{hp}/q.jpg", "k": "3"})
        got = client.get(f"/api/indices/{index_name}/search", params={"image_url": f"http://{hp}/q.jpg"})
        private = client.get(f"/api/indices/{index_name}/search",
                             params={"image_url": f"http://127.0.0.1:{stack.es_port}/"})
        path = client.get(f"/api/indices/{index_name}/search", params={"image_url": query})
    assert found.status_code == 200 and got.status_code == 200, found.text
    top = found.json()["hits"][0]
    assert top["id"] == "p0-1" and top["matched_image"]["ref"] == query and got.json()["hits"][0]["id"] == "p0-1"
    assert private.status_code == 422 and "ESM_URL_ALLOW" in private.text
    assert path.status_code == 422 and "not an http(s) URL" in path.text   # no server files by name
    shown = client.get(f"/api/indices/{index_name}/image/p0-1", params={"photo": top["matched_image"]["offset"]})
    assert shown.status_code == 200 and shown.content == photo_bytes
    assert client.get(f"/api/indices/{index_name}/image/p0-1", params={"photo": 9}).status_code == 404


def test_the_photo_that_matched_is_named_with_text_facets_and_collapse_too(es, index_name, tiny_model, tiny_data):
    """Text, facets or diversify send the search through the fused window: each hit the kNN leg
    returned still names its best photo, as the image-only search does (it used to be lost)."""
    prods = products(tiny_data)
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo", "--text-field", "title")
    esm_json("ingest", index_name, write_manifest(tiny_data.parent / f"{index_name}.jsonl", prods))
    query = prods["p2-1"][1]
    alone = esm_json("search", index_name, "--image", query, "-k", "4")
    for extra in (["--text", "product"], ["--facet", "title.keyword"], ["--diversify", "1"]):
        res = esm_json("search", index_name, "--image", query, "-k", "4", *extra)
        top = res["hits"][0]
        assert top["id"] == "p2-1" and top["matched_image"]["ref"] == query, extra
        named = [h for h in res["hits"] if h["matched_image"]]
        assert len(named) == 4, extra
        by_id = {h["id"]: h["matched_image"]["ref"] for h in alone["hits"]}
        assert all(by_id.get(h["id"], h["matched_image"]["ref"]) == h["matched_image"]["ref"] for h in named)


def test_an_existing_multi_photo_index_changes_model_in_place(es, index_name, tiny_model,
                                                               tiny_model_l2, tiny_data):
    """A shop's multi-photo index (no alias): the new model's vector goes into every photo
    beside the old one, search switches, the old vectors go; no photo is lost on the way."""
    prods = dict(list(products(tiny_data).items())[:4])
    shop_gallery(es, index_name, None, prods, tiny_model, tiny_data)
    old = index_info(es, index_name)

    out = esm_json("reindex", index_name, "--model", tiny_model_l2, "--force")  # tiny model: gate
    assert (out["documents"], out["vectors"], out["failed"]) == (4, 4, 0)
    new = index_info(es, index_name)
    assert new.model_id == out["new_model"] != old.model_id and new.migration is None
    assert new.vector_field == out["new_field"] != old.vector_field and new.dims == 24
    new_leaf, old_leaf = new.layout.leaf, old.layout.leaf
    for i, (pid, refs) in enumerate(prods.items()):
        doc = es.get(index=index_name, id=pid)["_source"]
        photos = doc["es_metric"]["photos"]
        assert [p["ref"] for p in photos] == refs, "every photo kept, in its order"
        assert all(len(p[new_leaf]) == 24 and p.get(old_leaf) is None for p in photos)
        assert doc["stock"] == i and doc["gallery"] == refs and doc["es_metric"]["model_id"] == new.model_id
    query = prods["p2-1"][1]  # the second photo of a product
    res = esm_json("search", index_name, "--image", query, "-k", "1")
    assert res["model_id"] == new.model_id and res["hits"][0]["id"] == "p2-1"
    assert res["hits"][0]["matched_image"]["ref"] == query
