"""ONNX export and runtime choice: parity with torch on a labelled set (per image and MAP@R),
the runtime each node picks, and an index that refuses vectors of an unmeasured runtime."""
import logging
import shutil

import numpy as np
import pytest
import torch

from es_metric.errors import ConfigError, MappingMismatch, ModelError
from es_metric.images import load_image
from es_metric.model import export as export_mod
from es_metric.model import runtime
from es_metric.model.embed import query_pixels
from es_metric.model.export import cosines, export_model
from es_metric.model.modelfile import load_model, read_card, save_model
from es_metric.model.runtime import (PARITY_COSINE, TorchEmbedder, check_runtime, choose_runtime,
                                     export_path, load_embedder, onnx_embedder)
from es_metric.similarity import Metric
from es_metric.training.data import labels_tensor, read_folder
from es_metric.training.evaluate import Embedded, retrieval_metrics


def _pixels(samples, size):
    return np.concatenate([query_pixels(load_image(s.path, draft=size)[0], size) for s in samples])


def test_onnx_matches_torch_per_image_and_in_map_at_r(exported, tiny_data):
    """The CI parity check: every image of a labelled set within PARITY_COSINE, MAP@R ±0.002."""
    model = load_model(exported)
    samples = read_folder(tiny_data).samples
    pixels = _pixels(samples, model.preprocess.size)
    ref = TorchEmbedder(model).embed(pixels)
    ours = onnx_embedder(export_path(exported)).embed(pixels)
    assert ours.shape == ref.shape == (len(samples), model.card["dims"])
    assert cosines(ours, ref).min() >= PARITY_COSINE
    labels = labels_tensor(samples).numpy()
    maps = [retrieval_metrics(Embedded(v, labels, samples, Metric(model.card["similarity"]), n),
                              full=False)["map_at_r"] for v, n in ((ref, "torch"), (ours, "onnx"))]
    assert maps[0] > 0.3 and abs(maps[0] - maps[1]) <= 0.002


def test_export_records_itself_in_the_card_and_the_graph(exported):
    card = read_card(exported)
    assert card["runtime"]["export"] == "small.onnx" and card["runtime"]["chosen"] == "onnxruntime"
    assert card["runtime"]["parity_min_cosine"] >= PARITY_COSINE
    ours = onnx_embedder(export_path(exported))
    assert ours.card["model_id"] == card["model_id"] and "runtime" not in ours.card
    assert ours.parity == pytest.approx(card["runtime"]["parity_min_cosine"], abs=1e-6)


def test_worker_sessions_do_not_busy_wait_between_runs_queries_do(exported, monkeypatch):
    """Spinning intra-op threads would take the cores from the decode threads that run between
    two batches of a worker (bench/embed.py measured the worker path 3x slower with them); a
    query node keeps ONNX Runtime's default (spinning: 0.8 ms less per image)."""
    from es_metric.ingest import tasks
    from es_metric.model import runtime

    def spinning() -> bool:
        opts = onnx_embedder(export_path(exported)).session.get_session_options()
        try:
            return opts.get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            return True

    monkeypatch.setattr(runtime, "_THREADS", {})
    assert spinning()
    tasks._init_process()  # what each Celery worker process runs first
    assert not spinning()


def test_an_export_beyond_the_tolerance_is_refused(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    shutil.copy(tiny_model, path)
    monkeypatch.setattr(export_mod, "PARITY_COSINE", 1.5)  # nothing can meet it
    with pytest.raises(ModelError, match="differs from torch"):
        export_model(path)
    assert not export_path(path).exists() and "runtime" not in read_card(path)


def test_workers_and_search_run_the_export_and_a_stale_one_falls_back(exported, tmp_path, caplog,
                                                                      monkeypatch):
    """A stale export (other weights): a node with torch embeds with torch, workers and queries
    alike; a node without torch refuses it (its card, read without torch, tells)."""
    assert load_embedder(exported).runtime == "onnxruntime"
    assert load_embedder(exported, runtime="torch").runtime == "torch"
    stale = tmp_path / "stale.pt"
    shutil.copy(exported, stale)
    shutil.copy(export_path(exported), export_path(stale))
    model = load_model(stale)
    with torch.no_grad():
        next(model.encoder.parameters()).add_(0.5)  # other weights, same file names
    save_model(stale, model.encoder, {**model.card, "weights_sha256": "0" * 64})
    with caplog.at_level(logging.WARNING):
        assert load_embedder(stale).runtime == "torch"
    assert "stale" in caplog.text
    with pytest.raises(ModelError, match="other weights"):
        load_embedder(stale, runtime="onnxruntime")
    assert load_embedder(stale, query=True).runtime == "torch"
    monkeypatch.setattr(runtime, "installed", lambda module: module != "torch")  # a light node
    monkeypatch.setattr(runtime, "_CACHE", {})
    with pytest.raises(ModelError, match="exported from other weights"):
        load_embedder(stale, query=True)


@pytest.mark.parametrize("requested,preferred,export,ort,torch_,expected", [
    ("auto", None, True, True, True, "onnxruntime"),
    ("auto", "torch", True, True, True, "torch"),          # the bench measured torch faster here
    ("auto", None, False, True, True, "torch"),            # no export
    ("auto", None, True, False, True, "torch"),            # onnxruntime not installed
    ("auto", "torch", True, True, False, "onnxruntime"),   # light node: no torch
    ("torch", None, True, True, True, "torch"),
    ("onnxruntime", "torch", True, True, True, "onnxruntime"),
])
def test_choose_runtime(requested, preferred, export, ort, torch_, expected):
    assert choose_runtime(requested, preferred, export, ort, torch_) == expected


@pytest.mark.parametrize("args,match", [
    (("onnxruntime", None, False, True, True), "no ONNX export"),
    (("onnxruntime", None, True, False, True), "not installed"),
    (("torch", None, True, True, False), "torch is not installed"),
    (("auto", None, False, True, False), "no torch"),
    (("openvino; rm", None, True, True, True), "not a runtime"),
])
def test_choose_runtime_refuses(args, match):
    with pytest.raises(ConfigError, match=match):
        choose_runtime(*args)


def test_an_index_never_mixes_runtimes_beyond_the_tolerance(exported, caplog):
    ours, theirs = onnx_embedder(export_path(exported)), TorchEmbedder(load_model(exported))
    check_runtime(ours, "onnxruntime", None)   # same runtime
    check_runtime(ours, None, None)            # an index made before runtimes were recorded
    with caplog.at_level(logging.WARNING):
        check_runtime(ours, "torch", None)     # measured parity: accepted, said
        check_runtime(theirs, "onnxruntime", 0.99995)
    assert "parity" in caplog.text
    ours.parity = None                         # an export nobody measured
    with pytest.raises(MappingMismatch, match="unmeasured"):
        check_runtime(ours, "torch", None)
    with pytest.raises(MappingMismatch, match="ESM_RUNTIME=onnxruntime"):
        check_runtime(theirs, "onnxruntime", 0.99)
