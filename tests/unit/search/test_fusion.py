"""Fusion by hand on tiny windows: normalisers, missing documents, weights, ties, RRF;
several examples (Rocchio, best score); facet bodies and answers."""
import numpy as np
import pytest

from es_metric.errors import SearchError
from es_metric.search.examples import best_score, rocchio
from es_metric.search.facets import facet_aggs, facets_of
from es_metric.search.fusion import (AGREE_BOOST, AGREE_HIGH, Leg, adapted, agreement, explain, fuse, keep_only, scaler,
                                     text_share, window)
from es_metric.similarity import Metric


def test_minmax_by_hand_and_the_missing_document_gets_the_floor():
    image = Leg(["a", "b", "c"], [0.9, 0.8, 0.5], 1.0)    # -> 1, 0.75, 0
    text = Leg(["c", "d"], [12.0, 2.0], 1.0)               # -> 1, 0
    fused = dict(fuse("minmax", [image, text]))
    assert fused == pytest.approx({"a": 1.0, "b": 0.75, "c": 1.0, "d": 0.0})
    # a and c tie at 1.0: the better best rank first (both rank 1), then the id
    assert [d for d, _ in fuse("minmax", [image, text])] == ["a", "c", "b", "d"]


def test_text_scores_cannot_drown_a_near_identical_image_when_normalised():
    # BM25 6.45 for a word said three times vs a kNN score of 1.0 for the same picture
    image = Leg(["twin", "other"], [1.0, 0.6], 1.0)
    text = Leg(["wordy", "other"], [6.45, 1.2], 1.0)
    assert fuse("weighted", [image, text])[0][0] == "wordy"      # raw sum: text drowns it
    for method in ("minmax", "zscore", "rrf"):
        top = [d for d, _ in fuse(method, [image, text])]
        assert top.index("twin") < top.index("wordy"), method


def test_zscore_by_hand():
    f, missing = scaler([1.0, 2.0, 3.0], "zscore")   # mean 2, std sqrt(2/3)
    assert f(3.0) == pytest.approx(1 / np.sqrt(2 / 3))
    assert missing == pytest.approx(f(1.0))
    for method in ("zscore", "minmax"):   # a flat (e.g. one-document) window: members 1, others 0
        f, missing = scaler([5.0, 5.0], method)
        assert f(5.0) == 1.0 and missing == 0.0


def test_weighted_rrf_by_hand():
    fused = fuse("rrf", [Leg(["a", "b"], [9, 8], 2.0), Leg(["b", "c"], [3, 1], 1.0)], rrf_k=10)
    assert dict(fused) == pytest.approx({"a": 2 / 11, "b": 2 / 12 + 1 / 11, "c": 1 / 12})
    assert [d for d, _ in fused] == ["b", "a", "c"]


def test_weights_shift_the_order():
    image, text = Leg(["i", "t"], [1.0, 0.0]), Leg(["t", "i"], [1.0, 0.0])
    assert fuse("minmax", [Leg(image.ids, image.scores, 3), Leg(text.ids, text.scores, 1)])[0][0] == "i"
    assert fuse("minmax", [Leg(image.ids, image.scores, 1), Leg(text.ids, text.scores, 3)])[0][0] == "t"


def test_unknown_method_and_floor_and_window():
    with pytest.raises(ValueError, match="adaptive, minmax, zscore, rrf, weighted"):
        fuse("sum", [Leg(["a"], [1.0])])
    assert keep_only([("a", 1.0), ("b", 0.5)], {"b"}) == [("b", 0.5)]
    assert keep_only([("a", 1.0)], None) == [("a", 1.0)]
    assert window(10, 1) == window(10, 2) == 100 and window(60, 2) == 120


def test_rocchio_moves_away_from_the_negative():
    pos = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert rocchio(pos, np.zeros((0, 2)), Metric.COSINE) == pytest.approx(np.array([1, 1]) / np.sqrt(2))
    q = rocchio(pos, np.array([[0.0, 2.0]]), Metric.COSINE, gamma=0.5)   # (0.5, 0.5) - (0, 0.5)
    assert q == pytest.approx([1.0, 0.0])
    assert rocchio(np.array([[2.0, 0.0]]), np.array([[0.0, 0.0]]), Metric.L2, gamma=1.0) == pytest.approx([4.0, 0.0])


def test_best_score_takes_the_closest_positive_minus_the_closest_negative():
    cands = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = best_score(cands, np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros((0, 2)), Metric.COSINE)
    assert s == pytest.approx([1.0, 1.0, np.sqrt(0.5)])
    s = best_score(cands, np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0]]), Metric.COSINE, gamma=1.0)
    assert s == pytest.approx([1.0, 0.0, 0.0])


PROPS = {"brand": {"type": "keyword"}, "price": {"type": "float"}, "stock": {"type": "integer"},
         "title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
         "body": {"type": "text"}, "on_sale": {"type": "boolean"},
         "photos": {"type": "nested", "properties": {"ref": {"type": "keyword"}}}}


def test_facet_bodies_terms_on_keywords_and_ranges_on_numbers():
    aggs = facet_aggs(["brand", "price", "title", "on_sale", "brand"], PROPS)
    assert aggs == {"brand": {"terms": {"field": "brand", "size": 10}},
                    "price": {"variable_width_histogram": {"field": "price", "buckets": 5}},
                    "title": {"terms": {"field": "title.keyword", "size": 10}},
                    "on_sale": {"terms": {"field": "on_sale", "size": 10}}}


@pytest.mark.parametrize("name,message", [("body", "cannot facet on 'body' \\(text\\)"),
                                          ("photos.ref", "cannot facet on 'photos.ref'"),
                                          ("_id", "cannot facet on '_id'"),
                                          ("nope", "unknown field 'nope'")])
def test_facets_refused(name, message):
    with pytest.raises(SearchError, match=message):
        facet_aggs([name], PROPS)


def test_facet_answers_carry_the_filter_that_selects_the_bucket():
    aggs = {"brand": {"buckets": [{"key": "acme", "doc_count": 3}, {"key": "a|b", "doc_count": 1}]},
            "price": {"buckets": [{"key": 2.0, "min": 1.0, "max": 2.5, "doc_count": 4}]},
            "on_sale": {"buckets": [{"key": 1, "key_as_string": "true", "doc_count": 2}]}}
    out = facets_of(aggs, ["brand", "price", "on_sale"])
    assert out["brand"] == [{"value": "acme", "count": 3, "filter": "brand=acme"},
                            {"value": "a|b", "count": 1, "filter": 'brand="a|b"'}]
    assert out["price"] == [{"value": {"from": 1.0, "to": 2.5}, "count": 4, "filter": "price=1..2.5"}]
    assert out["on_sale"] == [{"value": "true", "count": 2, "filter": "on_sale=true"}]


def _shop_legs(text_ids: list[str]) -> list[Leg]:
    """A photo of a yoghurt: its own product's photos lead the kNN window, a look-alike juice
    follows close behind; the text leg returns ``text_ids`` (BM25, one score per product)."""
    image = Leg(["juice1", "yog1", "yog2", "yog3", "juice2", "yog4", "juice3", "milk1", "milk2", "milk3"],
                [0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.89, 0.70, 0.69, 0.68], 0.6, "image")
    scores = [9.0 if d.startswith(text_ids[0][:3]) else 3.0 for d in text_ids]
    return [image, Leg(text_ids, scores, 0.4, "text")]


def test_adaptive_keeps_helpful_text_and_gates_misleading_text_off():
    helpful = _shop_legs(["yog1", "yog2", "yog3", "yog4", "yog5", "milk1"])     # "yoghurt"
    agree, share = agreement(*helpful), text_share(agreement(*helpful))
    assert agree == 0.5 >= AGREE_HIGH and share == 1.0       # 5 of the photo's top 10 are in the text's window
    top = [d for d, _ in fuse("adaptive", helpful)]
    assert top[:4] == ["yog1", "yog2", "yog3", "yog4"]        # the text lifts the yoghurts over the juice
    assert fuse("minmax", helpful[:1])[0][0] == "juice1"                 # the photo alone: juice first
    misleading = _shop_legs(["potato1", "potato2", "potato3", "potato4"])       # "potato"
    assert agreement(*misleading) == 0.0
    gated = fuse("adaptive", misleading)
    image_only = [d for d, _ in fuse("minmax", misleading[:1])]
    assert [d for d, _ in gated][:10] == image_only                         # the photo's ranking, untouched
    fixed = [d for d, _ in fuse("minmax", misleading)][:10]
    assert {"potato1", "potato2"} <= set(fixed)                  # fixed weights: potatoes push milk out


def test_adaptive_text_share_ramps_and_explain_shows_the_weight_used():
    assert [text_share(a, 0.2, 0.4) for a in (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)] == pytest.approx([0, 0, 0, 0.5, 1, 1])
    assert text_share(0.3, 0.3, 0.3) == 1.0 and text_share(0.29, 0.3, 0.3) == 0.0   # a gate
    legs = _shop_legs(["yog1", "milk1", "milk2", "potato1"])    # 3 of the photo's top 10
    out = explain("adaptive", legs)
    decided = out["yog1"]["adaptive"]
    share = text_share(agreement(*legs))
    assert decided == pytest.approx({"agreement": 0.3, "text_weight_asked": 0.4,
                                     "text_weight": 0.4 * AGREE_BOOST * share})
    assert out["yog1"]["legs"]["text"]["weight"] == pytest.approx(decided["text_weight"])
    fused = dict(fuse("adaptive", legs))
    assert all(out[d]["fused"] == pytest.approx(s) for d, s in fused.items())   # explain sums to fuse
    one = [Leg(["a"], [1.0], 1.0, "image")]               # one leg, or unnamed legs: nothing to adapt
    assert adapted(one) == (one, None) and fuse("adaptive", one) == fuse("minmax", one)
