"""The query path of a model with an ONNX export (``image_vector``): ONNX Runtime on the pixels of
Pillow's kernel, no torch, equal to the torch path's vector within the parity tolerance; the
choice it makes where the card measured torch faster (a stale export: tests/unit/model/test_runtime.py).
No services (the index is described, not asked)."""
import io
import logging
import shutil

import numpy as np

from es_metric.index.indices import IndexInfo
from es_metric.model.export import cosines, record_runtime
from es_metric.model.modelfile import read_card
from es_metric.model.runtime import PARITY_COSINE, Inference, export_path, load_embedder
from es_metric.search.service import image_vector
from tests.imagegen import make_grainy
from tests.unit.model.test_pixels import grainy


def described(path, runtime: str = "onnxruntime") -> IndexInfo:
    card = read_card(path)
    return IndexInfo(name="shop", concrete="shop-v1", model_id=card["model_id"], model_path=str(path),
                     vector_field="image_vector", dims=card["dims"], similarity=card["similarity"],
                     runtime=runtime, runtime_parity=card["runtime"]["parity_min_cosine"])


def photos(tmp_path) -> list[bytes]:
    """JPEGs larger than the model's input, oblong and square, and a PNG smaller than it."""
    files = sorted(make_grainy(tmp_path / "grainy", n=6).iterdir())
    small = io.BytesIO()
    grainy(50, 30, seed=4).save(small, "PNG")
    return [f.read_bytes() for f in files] + [small.getvalue()]


def test_the_onnx_query_vector_is_the_torch_one_within_tolerance(exported, tmp_path):
    info = described(exported)
    assert load_embedder(exported, query=True).runtime == "onnxruntime"
    light = np.array([image_vector(info, data) for data in photos(tmp_path)], np.float32)
    reference = np.array([image_vector(info, data, inference=Inference(runtime="torch"))
                          for data in photos(tmp_path)], np.float32)
    assert light.shape == reference.shape == (7, info.dims)
    assert cosines(light, reference).min() >= PARITY_COSINE
    assert not np.allclose(light[0], light[1])  # the photos differ: the check above can fail


def test_a_query_takes_the_export_even_where_the_card_measured_torch_faster(exported, tmp_path, caplog):
    """``esm model bench`` measured batches: a worker follows its verdict, a query (one image,
    where importing torch costs seconds) takes the export, within the parity the index allows."""
    path = tmp_path / "bench.pt"
    shutil.copy(exported, path)
    shutil.copy(export_path(exported), export_path(path))
    record_runtime(path, {"chosen": "torch"})
    assert load_embedder(path).runtime == "torch"
    assert load_embedder(path, query=True).runtime == "onnxruntime"
    with caplog.at_level(logging.WARNING):
        vector = image_vector(described(path, runtime="torch"), photos(tmp_path)[0])
    assert len(vector) == read_card(path)["dims"] and "embedding with onnxruntime" in caplog.text
