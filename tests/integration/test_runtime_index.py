"""An exported model on the real stack: the CLI exports and benchmarks it, the index records the
runtime, the worker embeds with ONNX Runtime within the parity tolerance of torch, and a
torch query node searches that index."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from es_metric.images import load_image
from es_metric.index.indices import index_info
from es_metric.model.embed import query_pixels
from es_metric.model.export import cosines
from es_metric.model.modelfile import load_model, read_card
from es_metric.model.runtime import PARITY_COSINE, Inference, TorchEmbedder
from es_metric.search.service import SearchRequest, run_search
from tests.integration.helpers import esm, esm_json, stored_docs, worker_log

pytestmark = pytest.mark.integration


def test_worker_embeds_with_the_export_within_parity(es, index_name, tiny_model, tiny_data, tmp_path,
                                                     stack):
    model_path = tmp_path / "small.pt"
    shutil.copy(tiny_model, model_path)
    assert "min cosine to torch" in esm("model", "export", model_path).output
    bench = esm_json("model", "bench", model_path, "--seconds", "0.3")
    assert set(bench["bench"]["images_per_s"]) == {"torch", "onnxruntime"}
    assert read_card(model_path)["runtime"]["chosen"] == bench["chosen"]

    esm("mapping", "create", index_name, "--model", model_path)
    info = index_info(es, index_name)
    assert info.runtime == bench["chosen"] and info.runtime_parity >= PARITY_COSINE
    summary = esm_json("ingest", index_name, tiny_data / "class_2")
    assert (summary["indexed"], summary["failed"]) == (16, 0)

    docs = list(stored_docs(es, info.concrete).values())
    assert len(docs) == 16
    model = load_model(model_path)
    size = model.preprocess.size
    pixels = np.concatenate([query_pixels(load_image(d["image_path"], draft=size)[0], size)
                             for d in docs])
    stored = np.array([d[info.vector_field] for d in docs], np.float32)
    assert cosines(stored, TorchEmbedder(model).embed(pixels)).min() >= PARITY_COSINE
    if bench["chosen"] == "onnxruntime":
        assert "embedding with ONNX Runtime" in worker_log(stack)

    # a query node on torch may search the index of ONNX Runtime vectors (measured parity)
    image = (tiny_data / "class_2" / sorted(p.name for p in (tiny_data / "class_2").iterdir())[0])
    result = run_search(es, index_name, SearchRequest(image=image.read_bytes(), k=3),
                        inference=Inference(runtime="torch"))
    assert result["hits"][0]["source"]["image_path"] == str(image)
