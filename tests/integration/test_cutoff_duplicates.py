"""The calibrated cut-off (--min-similarity auto) and esm duplicates on the real stack."""
from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from es_metric.index.indices import index_info
from es_metric.model.card import CARD_ENTRY, read_card
from tests.integration.helpers import esm, esm_error, esm_json

pytestmark = pytest.mark.integration


def with_card(src, dst, **metrics):
    """A copy of model file ``src`` whose card's metrics are updated (None: removed): the same
    weights, so the same vectors and model id."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == CARD_ENTRY:
                card = json.loads(data)
                card["metrics"].update(metrics)
                card["metrics"] = {k: v for k, v in card["metrics"].items() if v is not None}
                data = json.dumps(card).encode()
            zout.writestr(item, data)
    return dst


def vectors(model_path, paths) -> np.ndarray:
    """The model's vectors of image files, embedded here as a query is."""
    from es_metric.images import decode
    from es_metric.model.pixels import square_pixels
    from es_metric.model.runtime import load_embedder

    model = load_embedder(model_path, "torch", "cpu")
    size = int(model.card["preprocess"]["size"])
    return np.stack([model.embed(square_pixels(decode(p.read_bytes()), size)[None])[0] for p in paths])


def manifest(path, docs: dict) -> object:
    """A manifest of ``{id: image path}`` (its folder: the root the images are read from)."""
    path.write_text("".join(json.dumps({"id": i, "image": str(p), "title": f"doc {i}"}) + "\n"
                            for i, p in docs.items()))
    return path


@pytest.fixture
def cut_shop(es, index_name, tiny_model, tiny_data, tmp_path):
    """The tiny images indexed by a model whose card's cut-off falls in the widest gap between
    the similarities of the query's (a red circle) 4th to 16th most similar images: auto keeps
    ``keep`` of them."""
    query = tiny_data / "class_0" / "img_002.jpg"
    paths = sorted(tiny_data.glob("class_*/*.jpg"))
    sims = np.sort(vectors(tiny_model, paths) @ vectors(tiny_model, [query])[0])[::-1]
    keep = max(range(4, 16), key=lambda i: sims[i - 1] - sims[i])
    assert sims[keep - 1] - sims[keep] > 2e-4, "the test needs a gap between two similarities"
    cutoff = float((sims[keep - 1] + sims[keep]) / 2)
    model = with_card(tiny_model, tmp_path / "cut.pt", cutoff={"precision": 0.9, "similarity": cutoff,
                                                               "from": "the test"})
    esm("mapping", "create", index_name, "--model", model, "--text-field", "title")
    esm_json("ingest", index_name, manifest(tiny_data.parent / f"{index_name}.jsonl",
                                            {f"{p.parent.name}-{p.stem}": p for p in paths}))
    return index_name, query, cutoff, keep


def test_auto_cuts_at_the_cards_threshold_and_counts_the_cut(es, cut_shop):
    index, query, cutoff, keep = cut_shop
    assert es.indices.get_mapping(index=index_info(es, index).concrete).popitem()[1]["mappings"][
        "_meta"]["es_metric"]["cutoff"]["similarity"] == cutoff   # recorded at mapping creation
    auto = esm_json("search", index, "--image", query, "-k", "20", "--min-similarity", "auto")
    assert len(auto["hits"]) == keep and auto["cut"] == 20 - keep and auto["min_similarity"] == cutoff
    assert all(2 * h["score"] - 1 >= cutoff - 1e-6 for h in auto["hits"])
    number = esm_json("search", index, "--image", query, "-k", "20", "--min-similarity", str(cutoff))
    assert [h["id"] for h in number["hits"]] == [h["id"] for h in auto["hits"]] and number["cut"] == 20 - keep
    plain = esm_json("search", index, "--image", query, "-k", "20")
    assert "cut" not in plain and [h["id"] for h in plain["hits"]][:keep] == [h["id"] for h in auto["hits"]]
    # page 2 of k=5: the cut counts among the first 10 matches; the page holds kept hits 6-10
    page2 = esm_json("search", index, "--image", query, "-k", "5", "--page", "2", "--min-similarity", "auto")
    assert [h["id"] for h in page2["hits"]] == [h["id"] for h in auto["hits"]][5:10]
    assert page2["cut"] == max(0, 10 - keep)
    # hybrid: the floor holds for the fused result, the cut counts the image matches
    hybrid = esm_json("search", index, "--image", query, "--text", "doc", "-k", "20", "--min-similarity", "auto")
    assert {h["id"] for h in hybrid["hits"]} == {h["id"] for h in auto["hits"]} and hybrid["cut"] == 20 - keep


def test_auto_over_http_and_the_python_api(stack, cut_shop):
    from es_metric.api import EsMetric
    from es_metric.web.app import create_app

    index, query, cutoff, keep = cut_shop
    api = TestClient(create_app(stack))
    r = api.post(f"/api/indices/{index}/search", data={"k": "20", "min_similarity": "auto"},
                 files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["hits"]) == keep and r.json()["cut"] == 20 - keep
    g = api.get(f"/api/indices/{index}/search", params={"like": "class_0-img_002", "k": "20",
                                                          "min_similarity": "auto"})
    assert g.status_code == 200 and g.json()["cut"] + len(g.json()["hits"]) == 20
    assert all(2 * h["score"] - 1 >= cutoff - 1e-6 for h in g.json()["hits"])
    bad = api.get(f"/api/indices/{index}/search", params={"like": "class_0-img_002", "min_similarity": "most"})
    assert bad.status_code == 400 and "min_similarity must be a finite number" in bad.json()["error"]
    with EsMetric(stack) as esm_api:
        res = esm_api.search(index, image=query.read_bytes(), k=20, min_similarity="auto")
    assert len(res["hits"]) == keep and res["cut"] == 20 - keep


def test_auto_without_a_calibrated_cutoff_is_one_clear_line(stack, es, index_name, tiny_model, tmp_path):
    old = with_card(tiny_model, tmp_path / "old.pt", cutoff=None)
    esm("mapping", "create", index_name, "--model", old, "--text-field", "title")
    line = esm_error("search", index_name, "--text", "circle", "--min-similarity", "auto")
    assert "has no calibrated cut-off" in line and "retrain" in line and "--min-similarity S" in line
    from es_metric.web.app import create_app
    r = TestClient(create_app(stack)).get(f"/api/indices/{index_name}/search",
                                          params={"text": "circle", "min_similarity": "auto"})
    assert r.status_code == 400 and "retrain" in r.json()["error"] + r.json().get("hint", "")


def test_the_trained_card_records_its_calibrations(tiny_model):
    metrics = read_card(tiny_model)["metrics"]
    cutoff = metrics["cutoff"]
    if cutoff is not None:  # a tiny model may reach no threshold at the target: then None
        assert cutoff["precision"] == 0.95 and cutoff["keep"] == "at least" and 0 < cutoff["recall"] <= 1
        assert -1 <= cutoff["similarity"] <= 1 and cutoff["rerank"] == {"qe_k": 0, "dba_k": 0}
    dup = metrics["duplicate_threshold"]
    assert min(dup["weakest_copy"].values()) <= dup["similarity"] <= 1 and dup["n_copied"] >= 10
    assert set(dup["weakest_copy"]) == {"jpeg70", "resize90", "crop4", "all"}


# ---- esm duplicates ----

def plant_copies(originals, folder) -> dict:
    """Copies of each original: the same bytes, JPEG quality 70, resized to 90 %."""
    folder.mkdir(parents=True, exist_ok=True)
    planted = {}
    for n, src in enumerate(originals):
        img = Image.open(src).convert("RGB")
        shutil.copy(src, folder / f"exact{n}.jpg")
        img.save(folder / f"q70_{n}.jpg", "JPEG", quality=70)
        img.resize((int(img.width * 0.9), int(img.height * 0.9))).save(folder / f"r90_{n}.jpg", "JPEG", quality=90)
        planted[n] = [folder / f"{kind}{n}.jpg" for kind in ("exact", "q70_", "r90_")]
    return planted


@pytest.fixture
def dup_shop(es, index_name, tiny_model, tiny_data):
    """One image of each tiny class (a tiny model puts a class's images closer than a copy to
    its original) plus planted copies of three of them; the threshold that separates the
    copies from every other pair (from the model's own vectors)."""
    originals = [tiny_data / f"class_{c}" / "img_000.jpg" for c in (0, 2, 4)]
    planted = plant_copies(originals, tiny_data.parent / f"{index_name}-copies")
    docs = {f"class_{c}": tiny_data / f"class_{c}" / "img_000.jpg" for c in range(6)}
    groups = []
    for n, copies in planted.items():
        docs.update({f"copy{n}-{p.stem}": p for p in copies})
        groups.append(sorted([originals[n].parent.name] + [f"copy{n}-{p.stem}" for p in copies]))
    ids = list(docs)
    v = vectors(tiny_model, [docs[i] for i in ids])
    sims = v @ v.T
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    same = np.array([[group_of.get(a, -1 - n) == group_of.get(b, -2 - m) for m, b in enumerate(ids)]
                     for n, a in enumerate(ids)])
    np.fill_diagonal(same, False)
    lowest_copy, highest_other = sims[same].min(), sims[~same & ~np.eye(len(ids), dtype=bool)].max()
    assert lowest_copy > highest_other + 1e-3, (lowest_copy, highest_other)
    esm("mapping", "create", index_name, "--model", tiny_model)
    esm_json("ingest", index_name, manifest(tiny_data.parent / f"{index_name}.jsonl", docs))
    return index_name, groups, float((lowest_copy + highest_other) / 2), float(lowest_copy)


def test_duplicates_finds_the_planted_copies(dup_shop, tmp_path):
    index, groups, threshold, lowest = dup_shop
    result = esm("duplicates", index, "--threshold", threshold, "--page", "4", "--json",
                 "--report", tmp_path / "review.html")
    out = json.loads(result.stdout)
    assert list(out) == ["clusters"] and all(list(c) == ["ids", "similarity"] for c in out["clusters"])
    assert sorted(c["ids"] for c in out["clusters"]) == sorted(groups)
    assert all(lowest - 1e-3 <= c["similarity"] <= 1.0 + 1e-6 for c in out["clusters"])
    assert "3 clusters (12 documents) among 15" in result.stderr
    page = (tmp_path / "review.html").read_text()
    assert page.count("<section>") == 3 and page.count('src="data:image/jpeg;base64,') == 12
    assert all(i in page for g in groups for i in g)


def test_duplicates_auto_uses_the_cards_copy_threshold(dup_shop, tiny_model, tmp_path, es):
    """auto: the card's copy-calibrated threshold; a card from before it: its near-duplicate one."""
    index, groups, _, _ = dup_shop
    card = read_card(tiny_model)["metrics"]
    threshold = card["duplicate_threshold"]["similarity"]
    assert card["duplicate_threshold"]["copies_kept"] == 0.99
    result = esm("duplicates", index, "--json")
    assert f"at threshold {threshold:.4f}" in result.stderr
    clusters = json.loads(result.stdout)["clusters"]
    assert all(c["similarity"] >= threshold - 1e-4 for c in clusters)
    for group in groups:  # each planted group lies inside one cluster
        assert sum(set(group) <= set(c["ids"]) for c in clusters) == 1


def test_duplicates_on_a_multi_photo_index(es, index_name, tiny_model, tiny_data):
    """A product is a near-duplicate of another when one of its photos is a copy of one of theirs."""
    prods = {f"p{c}": [str(tiny_data / f"class_{c}" / f"img_{j:03d}.jpg") for j in range(3)] for c in range(6)}
    original = tiny_data / "class_1" / "img_001.jpg"
    copy = plant_copies([original], tiny_data.parent / f"{index_name}-copies")[0][1]  # JPEG quality 70
    prods["dup"] = [str(copy)]
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    (tiny_data.parent / f"{index_name}.jsonl").write_text(
        "".join(json.dumps({"id": k, "image": v}) + "\n" for k, v in prods.items()))
    esm_json("ingest", index_name, tiny_data.parent / f"{index_name}.jsonl")
    v = vectors(tiny_model, [copy, original])
    others = vectors(tiny_model, [tiny_data / f"class_{c}" / f"img_{j:03d}.jpg" for c in (0, 2, 3, 4, 5)
                                  for j in range(3)])
    assert (others @ v[0]).max() < v[0] @ v[1] - 2e-3
    clusters = esm_json("duplicates", index_name, "--threshold", float(v[0] @ v[1]) - 1e-3)["clusters"]
    assert [c["ids"] for c in clusters] == [["dup", "p1"]]
    assert clusters[0]["similarity"] >= float(v[0] @ v[1]) - 1e-3


def test_duplicates_user_mistakes_are_one_line(stack, es, index_name, tiny_model, tmp_path):
    assert "no index or alias named" in esm_error("duplicates", "no-such-index")
    older = with_card(tiny_model, tmp_path / "o.pt", duplicate_threshold=None)
    esm("mapping", "create", index_name, "--model", older)
    near = read_card(tiny_model)["metrics"]["near_duplicate_threshold"]
    assert f"at threshold {near:.4f}" in esm("duplicates", index_name).stdout  # the older card's
    es.options(ignore_status=404).indices.delete(index=f"{index_name}*")
    esm("mapping", "create", index_name, "--model", with_card(
        tiny_model, tmp_path / "n.pt", duplicate_threshold=None, near_duplicate_threshold=None))
    assert "no calibrated near-duplicate threshold" in esm_error("duplicates", index_name)
    assert "threshold must be a finite number" in esm_error("duplicates", index_name, "--threshold", "nan")


def test_duplicates_on_a_shops_index_with_its_fields_under_one_object(es, index_name, tiny_model, tiny_data,
                                                                      tmp_path):
    """An index the shop owns (`mapping create --existing`: es-metric's fields under one object,
    the shop's own top-level ``model_id`` and ``image_path`` left alone): the pass reads the
    photos and stamps where the index record says, and the review page shows the photos."""
    base = tiny_data.parent
    copy = plant_copies([tiny_data / "class_1" / "img_001.jpg"], base / f"{index_name}-copies")[0][1]
    galleries = {f"p{c}": [str((tiny_data / f"class_{c}" / f"img_{j:03d}.jpg").relative_to(base))
                           for j in range(3)] for c in range(6)}
    galleries["dup"] = [str(copy.relative_to(base))]
    es.indices.create(index=index_name, mappings={"properties": {
        "gallery": {"type": "keyword"}, "model_id": {"type": "keyword"}, "image_path": {"type": "keyword"}}})
    for pid, refs in galleries.items():
        es.index(index=index_name, id=pid, document={"gallery": refs, "model_id": "shop-7",
                                                     "image_path": "/mnt/shop/elsewhere.jpg"})
    es.indices.refresh(index=index_name)
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing", "--multi-photo")
    assert esm_json("ingest", index_name, "--from-index", "--image-field", "gallery",
                    "--base-dir", base)["failed"] == 0
    assert index_info(es, index_name).fields.photos == "es_metric.photos"
    v = vectors(tiny_model, [copy, tiny_data / "class_1" / "img_001.jpg"])
    result = esm("duplicates", index_name, "--threshold", float(v[0] @ v[1]) - 1e-3, "--json",
                 "--report", tmp_path / "review.html")
    assert [c["ids"] for c in json.loads(result.stdout)["clusters"]] == [["dup", "p1"]]
    page = (tmp_path / "review.html").read_text()
    assert page.count('src="data:image/jpeg;base64,') == 2 and "no image recorded" not in page
