"""A product gallery on the real stack where some photos are refused: the product keeps its
good photos, each refused photo is a dead letter under its own reference with its own reason,
and `esm status` counts documents by their photos' vectors."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(tmp_path, tiny_data):
    """A folder of four good photos (g0..g3) and one file that is no image (broken.jpg)."""
    base = tmp_path / "shop"
    base.mkdir()
    for i, c in enumerate((0, 1, 2, 3)):
        shutil.copy(sorted((tiny_data / f"class_{c}").iterdir())[1], base / f"g{i}.png")
    (base / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 no jpeg follows")
    (tmp_path / "outside.png").write_bytes((base / "g0.png").read_bytes())  # outside the root
    return base


def photo_refs(es, index: str, doc_id: str) -> list[str] | None:
    doc = es.options(ignore_status=404).get(index=index, id=doc_id)
    if not doc.get("found"):
        return None
    return [p["ref"] for p in doc["_source"]["photos"]]


def dead_letters(index: str) -> dict[tuple[str, str], str]:
    return {(r["doc_id"], r["ref"]): r["reason"] for r in esm_json("failures", index)["failures"]}


def test_a_refused_photo_costs_its_product_only_that_photo(es, index_name, tiny_model, shop):
    manifest = shop / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in [
        {"id": "mixed", "image": ["g0.png", "../outside.png", "g1.png"], "title": "a"},  # refused: reader
        {"id": "broken-first", "image": ["broken.jpg", "g2.png"], "title": "b"},       # refused by the worker
        {"id": "all-bad", "image": ["/etc/passwd", "broken.jpg"], "title": "c"},
        {"id": "good", "image": ["g3.png"], "title": "d"}]))
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    summary = esm_json("ingest", index_name, manifest)

    assert photo_refs(es, index_name, "mixed") == [str(shop / "g0.png"), str(shop / "g1.png")]
    assert photo_refs(es, index_name, "broken-first") == [str(shop / "g2.png")]
    assert photo_refs(es, index_name, "good") == [str(shop / "g3.png")]
    assert photo_refs(es, index_name, "all-bad") is None
    letters = dead_letters(index_name)
    outside, broken = str(shop.parent / "outside.png"), str(shop / "broken.jpg")
    assert set(letters) == {("mixed", outside), ("broken-first", broken),
                            ("all-bad", "/etc/passwd"), ("all-bad", broken)}, letters
    assert letters[("mixed", outside)] == "path_refused"
    assert letters[("all-bad", "/etc/passwd")] == "path_refused"
    assert letters[("broken-first", broken)] == letters[("all-bad", broken)] == "corrupt_image"
    messages = {(r["doc_id"], r["ref"]): r["message"] for r in esm_json("failures", index_name)["failures"]}
    assert "outside.png" in messages[("mixed", outside)]
    assert (summary["indexed"], summary["failed"]) == (3, 1)   # documents: only all-bad failed


def test_from_index_gallery_keeps_its_good_photos(es, index_name, tiny_model, shop):
    es.indices.create(index=index_name, mappings={"properties": {"gallery": {"type": "keyword"}}})
    es.index(index=index_name, id="mixed", document={"gallery": ["g0.png", "/etc/passwd", "g1.png"]})
    es.index(index=index_name, id="good", document={"gallery": ["g2.png"]})
    es.indices.refresh(index=index_name)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing", "--multi-photo")
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "gallery", "--base-dir", shop)
    assert photo_refs_existing(es, index_name, "mixed") == [str(shop / "g0.png"), str(shop / "g1.png")]
    assert dead_letters(index_name) == {("mixed", "/etc/passwd"): "path_refused"}
    assert (summary["indexed"], summary["failed"]) == (2, 0)


def photo_refs_existing(es, index: str, doc_id: str) -> list[str]:
    """The photos es-metric embedded for a document of an --existing index (where the index
    record says they are)."""
    from es_metric.index.indices import index_info

    info = index_info(es, index)
    src = es.get(index=index, id=doc_id)["_source"]
    for part in info.photos_field.split("."):
        src = src.get(part) or {}
    return [p["ref"] for p in src]


def test_status_counts_a_multi_photo_index_by_its_photos_vectors(es, index_name, tiny_model, shop):
    manifest = shop / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": [f"g{i}.png", f"g{i + 1}.png"]}) + "\n"
                                for i in range(3)))
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    esm_json("ingest", index_name, manifest)
    st = esm_json("status", index_name)
    assert (st["documents"], st["without_vector"]) == (3, 0)
