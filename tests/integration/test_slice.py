"""The first vertical slice on the real stack: model -> mapping -> ingest via Celery -> kNN search."""
from __future__ import annotations

import pytest

from es_metric.images import content_hash
from es_metric.index.indices import count, index_info
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration


def test_folder_ingest_and_filtered_knn_search(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    info = index_info(es, index_name)
    assert info.concrete.startswith(index_name + "-") and info.dims == 32 and info.similarity == "cosine"

    summary = esm_json("ingest", index_name, tiny_data)
    assert summary == {**summary, "queued": 96, "indexed": 96, "failed": 0}
    assert count(es, index_name) == 96

    query = tiny_data / "class_2" / "img_000.jpg"
    result = esm_json("search", index_name, "--image", query, "-k", "5")
    assert result["model_id"] == info.model_id
    assert result["hits"][0]["id"] == content_hash(query.read_bytes())  # the image finds itself first
    assert len(result["hits"]) == 5

    filtered = esm_json("search", index_name, "--image", query, "-k", "7", "--filter", "label=class_4")
    assert len(filtered["hits"]) == 7  # pre-filtered kNN: k results although the filter is selective
    assert {h["source"]["label"] for h in filtered["hits"]} == {"class_4"}
    assert all(h["source"]["model_id"] == info.model_id for h in filtered["hits"])


def test_same_folder_twice_gives_same_count(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    first = esm_json("ingest", index_name, tiny_data)
    second = esm_json("ingest", index_name, tiny_data)
    assert first["indexed"] == second["indexed"] == 96
    assert count(es, index_name) == 96


def test_search_reports_fewer_than_k(es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    esm_json("ingest", index_name, tiny_data / "class_1")
    result = esm_json("search", index_name, "--image", tiny_data / "class_1" / "img_003.jpg",
                      "-k", "30")
    assert len(result["hits"]) == 16
    assert "fewer than k=30" in result["note"]
