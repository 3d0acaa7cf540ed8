"""A damaged ONNX export on the real stack (issue 24, finding 13): its model card unreadable,
not a card, or the file itself cut short. A search that must embed with it answers a clear JSON
error (503, the model is unusable here; never a 500) and `esm search` one line."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from es_metric.model.export import set_props
from es_metric.model.runtime import CARD_KEY, export_path
from tests.integration.helpers import esm, esm_error

pytestmark = [pytest.mark.integration, pytest.mark.security]


def _unreadable_card(onnx):
    set_props(onnx, {CARD_KEY: "{not json"})


def _not_a_card(onnx):
    set_props(onnx, {CARD_KEY: "[1, 2]"})


def _card_without_fields(onnx):
    set_props(onnx, {CARD_KEY: "{}"})


def _cut_short(onnx):
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_unreadable_card, _not_a_card, _card_without_fields, _cut_short])
def test_a_damaged_onnx_export_is_a_clear_error_never_a_500(stack, index_name, exported, tiny_data,
                                                           tmp_path, monkeypatch, damage):
    from es_metric.web.app import create_app

    model = tmp_path / "small.pt"
    shutil.copy(exported, model)
    shutil.copy(export_path(exported), export_path(model))
    esm("mapping", "create", index_name, "--model", model)
    damage(export_path(model))
    query = next((tiny_data / "class_1").iterdir())
    api = TestClient(create_app(stack.with_(runtime="onnxruntime")), raise_server_exceptions=False)
    resp = api.post(f"/api/indices/{index_name}/search", files={"image": ("q.jpg", query.read_bytes())})
    assert resp.status_code == 503 and "ONNX export" in resp.json()["error"], resp.text
    monkeypatch.setenv("ESM_RUNTIME", "onnxruntime")
    assert "ONNX export" in esm_error("search", index_name, "--image", query)
