"""Hostile model files on the real stack (issue 24, findings 6 and 7): `esm mapping create` and
`esm reindex` refuse a card that lies about its weights, or a zip bomb, in one line and make no
index; a worker whose index's model file was swapped for a liar records one line per image."""
from __future__ import annotations

import shutil

import pytest

from es_metric.index.indices import index_info
from tests.badmodels import bomb_model, lying_model
from tests.integration.helpers import esm, esm_error, esm_json

pytestmark = [pytest.mark.integration, pytest.mark.security]


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize("changes, named", [
    ({"dims": 64}, "the card says 64 dims but the weights make 32-d vectors"),
    ({"backbone": "resnet50"}, "the card says backbone resnet50 but the weights are a small-cnn"),
])
def test_mapping_create_and_reindex_refuse_a_lying_card_in_one_line(es, index_name, tiny_model,
                                                                    tmp_path, changes, named):
    liar = lying_model(tiny_model, tmp_path / "liar.pt", **changes)
    assert named in one_line(esm_error("mapping", "create", index_name, "--model", liar))
    assert not es.indices.get(index=f"{index_name}*", expand_wildcards="all")   # no index made from it
    esm("mapping", "create", index_name, "--model", tiny_model)
    before = index_info(es, index_name).concrete
    assert named in one_line(esm_error("reindex", index_name, "--model", liar))
    assert index_info(es, index_name).concrete == before   # the alias still serves the good model


def test_mapping_create_refuses_a_zip_bomb_in_one_line(es, index_name, tiny_model, tmp_path):
    bomb = bomb_model(tiny_model, tmp_path / "bomb.pt")
    assert "(a zip bomb); refused before inflating" in one_line(
        esm_error("mapping", "create", index_name, "--model", bomb))
    assert not es.indices.get(index=f"{index_name}*", expand_wildcards="all")


def test_the_worker_records_one_line_for_a_model_file_swapped_for_a_liar(es, index_name, tiny_model,
                                                                          tiny_data, tmp_path):
    """An index made from a good file that was later replaced by one whose card lies (as an
    index made before the check would be): the worker used to record torch's multi-line
    load_state_dict error as worker_error; now model_error, one line naming the mismatch."""
    path = tmp_path / "model.pt"
    shutil.copy(tiny_model, path)
    esm("mapping", "create", index_name, "--model", path)
    lying_model(tiny_model, tmp_path / "liar.pt", backbone="resnet18").replace(path)
    folder = tmp_path / "imgs"
    shutil.copytree(tiny_data / "class_1", folder)
    summary = esm_json("ingest", index_name, folder)
    assert (summary["indexed"], summary["failed"]) == (0, 16), summary
    failures = esm_json("failures", index_name)["failures"]
    assert {f["reason"] for f in failures} == {"model_error"}
    for f in failures:
        assert "the card says backbone resnet18 but the weights are a small-cnn" in one_line(f["message"])
