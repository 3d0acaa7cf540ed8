"""Ingest sources and bad input on the real stack: exact counts, reasons recorded."""
from __future__ import annotations

import pytest

from es_metric.index.indices import count, index_info
from tests.badimages import make_corpus
from tests.imagegen import make_manifest
from tests.integration.helpers import esm, esm_json, stored_docs

pytestmark = pytest.mark.integration


def test_manifest_ingest_uses_ids_and_text_fields(es, index_name, tiny_model, tiny_data):
    manifest = make_manifest(tiny_data, tiny_data.parent / "manifest.jsonl")
    esm("mapping", "create", index_name, "--model", tiny_model, "--text-field", "title",
        "--keyword-field", "category")
    summary = esm_json("ingest", index_name, manifest)
    assert (summary["indexed"], summary["failed"]) == (96, 0)
    doc = stored_docs(es, index_name, {"ids": {"values": ["class_3-img_005"]}})["class_3-img_005"]
    assert doc["title"] == "circle number 3" and doc["category"] == "cat0" and doc["price"] == 25
    assert len(doc["image_vector"]) == 32 and doc["model_id"] == index_info(es, index_name).model_id
    result = esm_json("search", index_name, "--like", "class_3-img_005", "-k", "4",
                      "--filter", "category=cat0", "--filter", "price>=20")
    assert "class_3-img_005" not in [h["id"] for h in result["hits"]]  # --like excludes itself
    assert {h["source"]["price"] for h in result["hits"]} == {25}      # cat0 and price>=20: class 3


def test_existing_index_gets_vectors_other_fields_untouched(es, index_name, tiny_model, tiny_data):
    files = sorted((tiny_data / "class_0").iterdir())[:5]
    es.indices.create(index=index_name, mappings={"properties": {"title": {"type": "text"},
                                                                  "photo": {"type": "keyword"},
                                                                  "stock": {"type": "integer"}}})
    for i, f in enumerate(files):
        es.index(index=index_name, id=f"sku-{i}", document={"title": f"item {i}", "photo": str(f), "stock": i})
    es.index(index=index_name, id="no-photo", document={"title": "text only", "stock": 9})
    es.indices.refresh(index=index_name)

    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    mapping = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert mapping["title"] == {"type": "text"} and mapping["stock"] == {"type": "integer"}
    assert mapping["es_metric"]["properties"]["image_vector"]["dims"] == 32   # es-metric's own object

    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo",
                       "--base-dir", tiny_data / "class_0")
    assert (summary["indexed"], summary["failed"]) == (5, 0)
    doc = es.get(index=index_name, id="sku-3")["_source"]
    assert doc["title"] == "item 3" and doc["stock"] == 3 and len(doc["es_metric"]["image_vector"]) == 32
    assert "es_metric" not in es.get(index=index_name, id="no-photo")["_source"]
    assert count(es, index_name) == 6


def test_bad_images_exact_successes_and_recorded_failures(es, index_name, tiny_model, tmp_path):
    expected = make_corpus(tmp_path / "corpus")
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = esm_json("ingest", index_name, tmp_path / "corpus")
    n_ok = sum(v == "ok" for v in expected.values())
    assert (summary["indexed"], summary["failed"]) == (n_ok, len(expected) - n_ok)
    # two corpus files hold identical pixels? no: every good file is distinct content
    assert count(es, index_name) == n_ok
    rows = esm_json("failures", index_name)["failures"]
    got = {r["ref"].rsplit("/", 1)[1]: r["reason"] for r in rows}
    assert got == {name: why for name, why in expected.items() if why != "ok"}
    assert all(r["message"] for r in rows)


def test_model_with_other_dims_is_refused_on_existing_vector_field(es, index_name, tiny_model,
                                                                   tiny_model_l2):
    esm("mapping", "create", index_name, "--model", tiny_model)
    concrete = index_info(es, index_name).concrete
    result = esm("mapping", "create", concrete, "--model", tiny_model_l2, "--existing", ok=False)
    assert result.exit_code != 0
    assert "has 32 dims" in result.output and "esm reindex" in result.output


def test_missing_index_is_a_clear_error(stack, tmp_path):
    result = esm("ingest", "no-such-index-xyz", str(tmp_path), ok=False)
    assert result.exit_code == 1
    assert "no index or alias named 'no-such-index-xyz'" in result.output
    assert "Traceback" not in result.output
