"""Fusion, several examples and facets on the real stack, on constructed cases: the tiny shapes
plus a twin of a query photo, a red circle whose title says "triangle" three times, and a
purple square with a title nothing else has."""
from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter

import pytest

from es_metric.search.fusion import AGREE_BOOST, AGREE_HIGH, FUSIONS
from tests.imagegen import make_manifest
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration
NORMALISED = [m for m in FUSIONS if m != "weighted"]
FIXED = [m for m in FUSIONS if m != "adaptive"]   # adaptive may weigh the text at nothing


@pytest.fixture(scope="module")
def shop(stack, tiny_model, tiny_data, tmp_path_factory):
    """One index for the module: 96 shapes + ``twin`` (a copy of the query photo class_2/img_002),
    ``wordy`` (a red circle titled "triangle triangle triangle"), ``exact`` (a purple square
    titled "yellow submarine lunchbox")."""
    from es_metric.index.client import make_client

    root = tmp_path_factory.mktemp("fusion")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    manifest = make_manifest(data, root / "manifest.jsonl")
    extra = [("twin", "class_2/img_002.jpg", "triangle number 2", "cat2"),
             ("wordy", "class_0/img_005.jpg", "triangle triangle triangle", "cat0"),
             ("exact", "class_4/img_007.jpg", "yellow submarine lunchbox", "cat1")]
    with manifest.open("a") as fh:
        for doc_id, image, title, category in extra:
            fh.write(json.dumps({"id": doc_id, "image": f"data/{image}", "title": title,
                                 "category": category, "price": 99}) + "\n")
    name = f"t-{uuid.uuid4().hex[:10]}"
    esm("mapping", "create", name, "--model", tiny_model, "--text-field", "title",
        "--keyword-field", "category")
    esm_json("ingest", name, manifest)
    yield name
    make_client(stack).options(ignore_status=404).indices.delete(index=f"{name}*", expand_wildcards="all")


def ids(result: dict) -> list[str]:
    return [h["id"] for h in result["hits"]]


def search(shop, *args) -> dict:
    return esm_json("search", shop, *args)


SAME_PICTURE = {"twin", "class_2-img_002"}


@pytest.mark.parametrize("fusion", ["minmax", "rrf"])
def test_text_cannot_drown_a_near_identical_image_at_default_weights(shop, tiny_data, fusion):
    q = tiny_data / "class_2" / "img_002.jpg"
    res = search(shop, "--image", q, "--text", "triangle", "--fusion", fusion, "-k", "20")
    top = ids(res)
    # rrf only sees ranks: the twin's title ties with 31 others, and the tie puts it 33rd
    assert set(top[:2] if fusion == "minmax" else top[:5]) >= SAME_PICTURE
    wordy = top.index("wordy") if "wordy" in top else len(top)
    assert wordy > max(top.index(d) for d in SAME_PICTURE)
    assert all("highlight" in h for h in res["hits"] if "triangle" in h["source"]["title"])


def test_zscore_keeps_the_same_picture_above_a_wordy_title(shop, tiny_data):
    """One title says "triangle" three times among 32 that say it once: an outlier of a flat
    text window (z-score ~5.6). At the default 4:1 the same picture still leads, and the wordy
    document ranks higher than on the picture alone (its text leg counts)."""
    q = tiny_data / "class_2" / "img_002.jpg"
    top = ids(search(shop, "--image", q, "--text", "triangle", "--fusion", "zscore", "-k", "99"))
    image_only = ids(search(shop, "--image", q, "-k", "99"))
    assert set(top[:3]) >= SAME_PICTURE
    assert top.index("wordy") < image_only.index("wordy")  # its text leg lifts it (how far: the model's)


def test_raw_scores_let_text_drown_it(shop, tiny_data):
    """The unnormalised sum (the old default) is the problem the normalised methods solve."""
    q = tiny_data / "class_2" / "img_002.jpg"
    res = search(shop, "--image", q, "--text", "triangle", "--fusion", "weighted", "-k", "5")
    assert ids(res)[0] == "wordy"


@pytest.mark.parametrize("fusion", FIXED)
def test_image_cannot_drown_an_exact_text_match_at_text_heavy_weights(shop, tiny_data, fusion):
    q = tiny_data / "class_2" / "img_002.jpg"
    res = search(shop, "--image", q, "--text", "yellow submarine lunchbox", "--fusion", fusion,
                 "--image-weight", "1", "--text-weight", "3", "-k", "5")
    assert ids(res)[0] == "exact"
    assert res["hits"][0]["highlight"]["title"] == ["<em>yellow</em> <em>submarine</em> <em>lunchbox</em>"]


def test_adaptive_drops_text_the_photo_rejects_and_keeps_text_it_agrees_with(shop, tiny_data):
    """The same text-heavy weights, adaptive: "yellow submarine lunchbox" finds only a purple
    square the triangle photo does not return near its top, so the text weighs nothing and the
    photo's own ranking stands; "triangle" is what the photo's best hits say, so it counts."""
    q = tiny_data / "class_2" / "img_002.jpg"
    heavy = ("--image-weight", "1", "--text-weight", "3", "-k", "10")
    rejected = search(shop, "--image", q, "--text", "yellow submarine lunchbox", *heavy)
    assert rejected["fusion"]["method"] == "adaptive" and rejected["fusion"]["text_weight_used"] == 0
    image_only = ids(search(shop, "--image", q, "-k", "99"))
    assert ids(rejected) == image_only[:10]
    agreed = search(shop, "--image", q, "--text", "triangle", *heavy)
    assert agreed["fusion"]["agreement"] >= AGREE_HIGH and agreed["fusion"]["text_weight_used"] == 3 * AGREE_BOOST
    assert ids(agreed).index("wordy") < 3 < image_only.index("wordy")   # "triangle" x3 lifts it


@pytest.mark.parametrize("fusion", FUSIONS)
def test_like_with_text_never_returns_the_example_itself(shop, fusion):
    res = search(shop, "--like", "wordy", "--like", "class_2-img_003", "--text", "triangle",
                 "--fusion", fusion, "-k", "99")
    assert res["hits"] and not {"wordy", "class_2-img_003"} & set(ids(res))


def floor_keeping(shop, q, n: int) -> str:
    """A cosine floor that the image's n-th neighbour just passes (_score = (1 + cos) / 2)."""
    scores = [h["score"] for h in search(shop, "--image", q, "-k", "99", "--qe-k", "0")["hits"]]
    return repr(2 * scores[n - 1] - 1 - 1e-6)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_similarity_floor_holds_for_the_fused_result(shop, tiny_data, fusion):
    q = tiny_data / "class_2" / "img_002.jpg"
    floor = floor_keeping(shop, q, 30)
    allowed = set(ids(search(shop, "--image", q, "--min-similarity", floor, "-k", "99")))
    fused = search(shop, "--image", q, "--text", "circle", "--min-similarity", floor,
                   "--fusion", fusion, "-k", "99")
    assert 10 < len(allowed) < 60
    assert fused["hits"] and set(ids(fused)) <= allowed    # no circle the text leg found below it
    unfloored = search(shop, "--image", q, "--text", "circle", "--fusion", fusion, "-k", "99")
    assert set(ids(unfloored)) - allowed                   # which it would have without the floor


@pytest.mark.parametrize("fusion", FUSIONS)
def test_pages_one_and_two_are_the_top_2k(shop, tiny_data, fusion):
    q = tiny_data / "class_1" / "img_000.jpg"
    common = ("--image", q, "--text", "triangle", "--fusion", fusion)
    p1, p2 = search(shop, *common, "-k", "7"), search(shop, *common, "-k", "7", "--page", "2")
    both = search(shop, *common, "-k", "14")
    assert ids(p1) + ids(p2) == ids(both) and len(set(ids(both))) == 14


def _mean_rank(result: dict, prefix: str) -> float:
    ranks = [i for i, d in enumerate(ids(result)) if d.startswith(prefix)]
    return sum(ranks) / len(ranks)


@pytest.mark.parametrize("strategy", ["mean", "max"])
def test_negatives_push_a_look_alike_class_down(shop, strategy):
    """Blue triangles (class_2) liked; the other class most present in the top 20 is pushed
    down by one negative example of it."""
    likes = ("--like", "class_2-img_000", "--like", "class_2-img_001", "--examples", strategy, "-k", "99")
    plain = search(shop, *likes)
    other = Counter(d.rsplit("-", 1)[0] for d in ids(plain)[:20]
                    if not d.startswith("class_2") and d != "twin").most_common(1)[0][0]
    neg = search(shop, *likes, "--unlike", f"{other}-img_000")
    assert _mean_rank(neg, other) > _mean_rank(plain, other) + 10
    top = [sum(d.startswith(other) for d in ids(r)[:20]) for r in (plain, neg)]
    assert top[1] < top[0], top
    assert f"{other}-img_000" not in ids(neg)


def test_an_example_image_file_counts_like_an_upload(shop, tiny_data):
    q = tiny_data / "class_2" / "img_002.jpg"
    assert set(ids(search(shop, "--like", q, "-k", "2"))) == SAME_PICTURE


def test_facets_count_what_the_knn_returned(shop, tiny_data):
    q = tiny_data / "class_3" / "img_001.jpg"
    floor = floor_keeping(shop, q, 40)
    returned = search(shop, "--image", q, "--min-similarity", floor, "-k", "99")
    res = search(shop, "--image", q, "--min-similarity", floor, "-k", "3", "--facet", "category",
                 "--facet", "price")
    expected = Counter(h["source"]["category"] for h in returned["hits"])
    assert 3 < len(returned["hits"]) < 99
    assert {r["value"]: r["count"] for r in res["facets"]["category"]} == dict(expected)
    assert sum(r["count"] for r in res["facets"]["price"]) == len(returned["hits"])
    assert ids(res) == ids(returned)[:3]


def test_a_facet_filter_selects_its_bucket(shop):
    res = search(shop, "--text", "circle", "--facet", "category", "--facet", "price", "-k", "50")
    bucket = res["facets"]["category"][0]
    filtered = search(shop, "--text", "circle", "--filter", bucket["filter"], "-k", "50")
    assert len(filtered["hits"]) == bucket["count"]
    price = res["facets"]["price"][0]
    assert len(search(shop, "--text", "circle", "--filter", price["filter"], "-k", "50")["hits"]) == price["count"]


def test_the_http_api_mirrors_examples_and_facets(shop, stack, tiny_data):
    from fastapi.testclient import TestClient

    from es_metric.web.app import create_app

    api = TestClient(create_app(stack))
    with (tiny_data / "class_2" / "img_002.jpg").open("rb") as fh:
        posted = api.post(f"/api/indices/{shop}/search", files=[("like_image", ("q.jpg", fh, "image/jpeg"))],
                          data={"like": ["class_2-img_003"], "unlike": ["wordy"], "text": "triangle",
                                "facets": ["category"], "k": "20"})
    assert posted.status_code == 200, posted.text
    body = posted.json()
    assert not {"class_2-img_003", "wordy"} & set(ids(body)) and body["facets"]["category"]
    got = api.get(f"/api/indices/{shop}/search", params=[("like", "class_2-img_000"), ("unlike", "class_5-img_000"),
                                                          ("facet", "price"), ("k", "5")])
    assert got.status_code == 200 and len(got.json()["hits"]) == 5 and got.json()["facets"]["price"]
    for params, reason in [([("like", "x"), ("facet", "_id")], "cannot facet on '_id'"),
                           ([("unlike", "class_5-img_000")], "negative examples alone"),
                           ([("like", "x"), ("examples", "median")], "unknown example strategy")]:
        bad = api.get(f"/api/indices/{shop}/search", params=params)
        assert bad.status_code == 400 and reason in bad.json()["error"], bad.text
