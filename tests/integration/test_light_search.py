"""Light search on the real stack: on a model with an ONNX export, `esm search --image` and the
API server of `esm serve` import no torch, on a full install (torch importable, just not needed)
and on a node whose import system refuses torch and torchvision (a ``sitecustomize`` first on
PYTHONPATH); they rank as the torch path does (``ESM_RUNTIME=torch``, in this process)."""
from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.imagegen import make_grainy
from tests.imports import light_node, maps_torch, run_esm
from tests.integration.helpers import esm, esm_json
from tests.integration.server import served

pytestmark = pytest.mark.integration
NODES = ["full install", "no torch"]


@pytest.fixture
def shop(es, index_name, exported, tmp_path, monkeypatch):
    """(index, query photo, the torch path's answer to it) over 16 grainy photos."""
    images = make_grainy(tmp_path / "images")
    esm("mapping", "create", index_name, "--model", exported)
    assert esm_json("ingest", index_name, images)["failed"] == 0
    query = images / "img_003.jpg"
    monkeypatch.setenv("ESM_RUNTIME", "torch")
    reference = esm_json("search", index_name, "--image", query)
    monkeypatch.delenv("ESM_RUNTIME")
    assert reference["hits"][0]["source"]["image_path"] == str(query)  # its own photo first
    return index_name, query, reference


@pytest.fixture
def node(request, tmp_path, monkeypatch):
    """The node of the parameter: ``no torch`` puts a sitecustomize refusing torch on PYTHONPATH
    (for every process started afterwards); returns whether it did."""
    if request.param == "no torch":
        light_node(tmp_path / "light-node", monkeypatch)
    refused = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    assert (refused.returncode != 0) == (request.param == "no torch"), refused.stderr
    return request.param


def same_ranking(got: dict, reference: dict) -> None:
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in reference["hits"]]
    assert len(got["hits"]) == 10
    np.testing.assert_allclose([h["score"] for h in got["hits"]],
                               [h["score"] for h in reference["hits"]], atol=1e-3)


@pytest.mark.parametrize("node", NODES, indirect=True)
def test_esm_search_by_image_imports_no_torch(shop, node):
    index, query, reference = shop
    run = run_esm("search", index, "--image", query, "--json")
    assert run.code == 0, run.output
    assert not {"torch", "torchvision"} & run.modules and "onnxruntime" in run.modules
    assert "embedding with ONNX Runtime" in run.stderr
    same_ranking(run.json(), reference)


@pytest.mark.parametrize("node", NODES, indirect=True)
def test_esm_serve_searches_an_upload_without_torch(shop, node, tmp_path):
    """The real `esm serve` process (uvicorn, the app, its search threads) answers an uploaded
    photo as the torch path does and has never mapped libtorch."""
    index, query, reference = shop
    with served(tmp_path / "serve.log") as (base, pid):
        answer = httpx.post(f"{base}/api/indices/{index}/search", files={"image": query.read_bytes()},
                            timeout=120)
        assert answer.status_code == 200, answer.text
        same_ranking(answer.json(), reference)
        assert not maps_torch(pid)
