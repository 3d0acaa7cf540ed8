"""What ``esm search --json`` answers on the real stack matches es_metric.types.SearchResult."""
from __future__ import annotations

import pytest

from es_metric import types
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration


def _keys(td) -> tuple[frozenset, frozenset]:
    return td.__required_keys__, td.__required_keys__ | td.__optional_keys__


def test_search_results_are_search_results(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    assert esm_json("ingest", index_name, tiny_data / "class_0")["indexed"] == 16
    by_image = esm_json("search", index_name, "--image", tiny_data / "class_0" / "img_001.jpg", "-k", "3")
    by_doc = esm_json("search", index_name, "--like", by_image["hits"][0]["id"], "-k", "3",
                      "--min-similarity", "-1")  # a floor: the answer says what it cut
    result_required, result_all = _keys(types.SearchResult)
    hit_required, hit_all = _keys(types.SearchHit)
    for result in (by_image, by_doc):
        assert result_required <= set(result) <= result_all, set(result) ^ result_all
        assert len(result["hits"]) == 3
        assert ("cut" in result) == (result is by_doc)
        for hit in result["hits"]:
            assert hit_required <= set(hit) <= hit_all and isinstance(hit["source"], dict)


def test_duplicates_answers_are_duplicates(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    assert esm_json("ingest", index_name, tiny_data / "class_1")["indexed"] == 16
    found = esm_json("duplicates", index_name, "--threshold", "-1")   # every document linked
    assert set(found) == types.Duplicates.__required_keys__
    assert [set(c) for c in found["clusters"]] == [set(types.DuplicateCluster.__required_keys__)]
    assert len(found["clusters"][0]["ids"]) == 16
