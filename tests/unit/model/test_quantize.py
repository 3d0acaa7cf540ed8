"""Optional int8: the gate that decides whether a statically quantised model is offered, the
file it writes, the int8 runtime (opt-in, light nodes too) and an index that never mixes int8
and float vectors."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from es_metric.cli import main
from es_metric.errors import ConfigError, MappingMismatch, ModelError
from es_metric.index.mappings import index_meta
from es_metric.model.export import check_pixels, cosines
from es_metric.model.modelfile import read_card
from es_metric.training.quantize import QuantConfig, calibration_pixels, gate, gate_line, quantize_model
from es_metric.model.runtime import (GATE_KEY, INT8, PARITY_COSINE, TorchEmbedder, card_for_runtime,
                                     check_runtime, choose_runtime, export_path, int8_path,
                                     load_embedder, onnx_embedder)
from es_metric.model.modelfile import load_model

from .test_light_worker import LIGHT_NODE

FAST = QuantConfig(calib_images=48, bench_seconds=0.1)


def _copy(exported, folder):
    """A private copy of the exported model (model file + export)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.pt"
    shutil.copy(exported, path)
    shutil.copy(export_path(exported), export_path(path))
    return path


@pytest.fixture(scope="module")
def quantized(exported, tiny_data, tmp_path_factory):
    """(model path, gate record) of a model whose int8 file passed the default 1 % gate."""
    path = _copy(exported, tmp_path_factory.mktemp("int8"))
    return path, quantize_model(path, tiny_data, tiny_data, FAST)


@pytest.mark.parametrize("float_map,int8_map,max_loss,loss,passed", [
    (0.80, 0.796, 0.01, 0.005, True),
    (0.80, 0.792, 0.01, 0.01, False),     # exactly at the threshold: not under it
    (0.80, 0.70, 0.01, 0.125, False),
    (0.50, 0.51, 0.01, -0.02, True),      # int8 better than float
    (0.80, 0.80, 0.0, 0.0, False),        # a zero threshold nothing can meet
])
def test_gate_decides_on_the_relative_map_at_r_loss(float_map, int8_map, max_loss, loss, passed):
    verdict = gate(float_map, int8_map, max_loss)
    assert verdict["loss"] == pytest.approx(loss) and verdict["passed"] is passed
    line = gate_line(verdict)
    assert ("PASSED" if passed else "REFUSED") in line and f"{float_map:.4f}" in line
    assert f"{int8_map:.4f}" in line and f"{loss:.2%}" in line


def test_gate_refuses_when_float_map_at_r_is_zero():
    verdict = gate(0.0, 0.0, 0.01)
    assert verdict["loss"] is None and not verdict["passed"]
    assert "undefined" in gate_line(verdict)


def test_a_passing_gate_writes_the_int8_model_with_card_and_figures(quantized):
    path, rec = quantized
    assert rec["passed"] and rec["loss"] < 0.01 and rec["written"] == "m.int8.onnx"
    assert rec["float_map_at_r"] > 0.3 and rec["calib_images"] == 48 and rec["val_images"] == 96
    assert rec["per_channel"] and rec["activations"] == rec["weights"] == "uint8"
    assert rec["attempts"][0]["kept_float"] == []                     # the whole graph first
    assert rec["attempts"][-1]["kept_float"] == rec["kept_float"]     # what was written
    assert rec["images_per_s"]["float"] > 0 and rec["images_per_s"]["int8"] > 0
    int8 = onnx_embedder(int8_path(path), runtime=INT8)
    assert int8.card["model_id"] == read_card(path)["model_id"] and int8.runtime == INT8
    meta = int8.session.get_modelmeta().custom_metadata_map
    assert json.loads(meta[GATE_KEY])["int8_map_at_r"] == rec["int8_map_at_r"]
    assert read_card(path)["runtime"]["int8"]["loss"] == rec["loss"]  # the card records it too
    assert load_embedder(path).runtime == "onnxruntime"               # int8 is opt-in only
    assert load_embedder(path, runtime=INT8).runtime == INT8


def test_bench_measures_the_int8_model_but_never_chooses_it(quantized, tmp_path):
    from es_metric.model.export import bench_runtimes

    path = _copy(quantized[0], tmp_path)
    shutil.copy(int8_path(quantized[0]), int8_path(path))
    rec = bench_runtimes(path, seconds=0.1)
    assert set(rec["bench"]["images_per_s"]) == {"torch", "onnxruntime", INT8}
    assert rec["chosen"] in ("torch", "onnxruntime")
    assert read_card(path)["runtime"]["int8"]["passed"]  # the gate record survives the bench


def test_int8_vectors_are_close_to_float_but_not_within_parity(quantized):
    path, rec = quantized
    pixels = check_pixels(int(read_card(path)["preprocess"]["size"]), 8)
    floaty = onnx_embedder(export_path(path)).embed(pixels)
    int8 = load_embedder(path, runtime=INT8).embed(pixels)
    assert int8.shape == floaty.shape and 0.5 < cosines(int8, floaty).min() < 1.0
    assert rec["min_cosine_to_float"] < PARITY_COSINE


def test_cli_prints_both_figures_the_loss_and_the_verdict(exported, tiny_data, tmp_path):
    path = _copy(exported, tmp_path)
    res = CliRunner().invoke(main, ["model", "quantize", str(path), "--calib", str(tiny_data),
                                    "--val", str(tiny_data), "--calib-images", "48",
                                    "--bench-seconds", "0.1"])
    assert res.exit_code == 0, res.output
    assert "int8 gate PASSED: MAP@R float" in res.output and "loss" in res.output
    assert "images/s: float" in res.output and "ESM_RUNTIME=onnxruntime-int8" in res.output
    assert int8_path(path).is_file()


def test_cli_refuses_a_badly_calibrated_model_and_writes_nothing(exported, tiny_data, tmp_path):
    """Calibrated on flat grey images, the activation ranges fit nothing the model sees: the
    measured loss is far over 1 %, so nothing is written and the command exits non-zero."""
    path = _copy(exported, tmp_path / "model")
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (128, 128, 128)).save(flat / f"grey{i}.png")
    res = CliRunner().invoke(main, ["model", "quantize", str(path), "--calib", str(flat),
                                    "--val", str(tiny_data), "--bench-seconds", "0.1"])
    assert res.exit_code == 1, res.output
    line = res.output.strip().splitlines()[-1]
    assert "int8 gate REFUSED: MAP@R float" in line and "must be under 1.00%" in line
    assert "nothing written, the float export stays in use" in line
    loss = float(line.split("loss ")[1].split("%")[0])
    assert loss >= 1.0
    assert not int8_path(path).exists() and not list(path.parent.glob("*.tmp.onnx"))
    assert "int8" not in read_card(path).get("runtime", {})


def test_a_corrupt_calibration_image_is_skipped_with_its_reason(exported, tiny_data, tmp_path):
    calib = tmp_path / "calib"
    shutil.copytree(tiny_data / "class_0", calib)
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    pixels, skipped = calibration_pixels(calib, 32, 100)
    assert len(pixels) == 16 and pixels.dtype == np.uint8 and pixels.shape[1:] == (32, 32, 3)
    assert [s["ref"] for s in skipped] == [str(calib / "broken.jpg")] and skipped[0]["reason"]


def test_a_calibration_folder_without_usable_images_is_refused(exported, tiny_data, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"garbage")
    (calib / "notes.txt").write_text("not an image")
    path = _copy(exported, tmp_path / "model")
    with pytest.raises(ConfigError, match="no usable calibration image"):
        quantize_model(path, calib, tiny_data, FAST)
    assert not int8_path(path).exists()


def test_a_validation_folder_with_one_class_is_refused(exported, tiny_data, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(tiny_data / "class_1", val / "class_1")
    path = _copy(exported, tmp_path / "model")
    res = CliRunner().invoke(main, ["model", "quantize", str(path), "--calib", str(tiny_data),
                                    "--val", str(val)])
    assert res.exit_code != 0 and "at least two classes" in res.output
    assert not int8_path(path).exists()


def test_an_index_never_mixes_int8_and_float_vectors(quantized):
    path, _ = quantized
    int8 = load_embedder(path, runtime=INT8)
    floaty = onnx_embedder(export_path(path))
    torch_ = TorchEmbedder(load_model(path))
    check_runtime(int8, INT8, None)                               # an int8 index
    for embedder, index_runtime in ((int8, "onnxruntime"), (int8, "torch"), (int8, None),
                                    (floaty, INT8), (torch_, INT8)):
        with pytest.raises(MappingMismatch, match="int8 and float vectors never share an index"):
            check_runtime(embedder, index_runtime, 1.0)           # whatever parity is claimed


def test_an_index_never_mixes_int8_vectors_of_two_quantisations(quantized):
    """Quantising again (other calibration images) gives other int8 vectors of the same weights:
    an index made with one quantisation refuses a node running another."""
    path, _ = quantized
    int8 = load_embedder(path, runtime=INT8)
    made_with = read_card(path)["runtime"]["int8"]["id"]
    assert int8.variant == made_with and len(made_with) == 12
    check_runtime(int8, INT8, None, made_with)
    check_runtime(int8, INT8, None, None)  # an int8 index made before quantisations had ids
    with pytest.raises(MappingMismatch, match="quantised again since"):
        check_runtime(int8, INT8, None, "0123456789ab")


def test_an_index_made_under_the_int8_runtime_records_it(quantized, exported):
    path, _ = quantized
    card = read_card(path)
    meta = index_meta(card_for_runtime(card, INT8), str(path), "v")["es_metric"]
    assert meta["runtime_variant"] == card["runtime"]["int8"]["id"]
    assert index_meta(card_for_runtime(card, INT8), str(path), "v")["es_metric"]["runtime"] == INT8
    assert card_for_runtime(card, "auto") is card
    with pytest.raises(ConfigError, match="no passed int8 gate"):
        card_for_runtime(read_card(exported), INT8)               # never quantised


@pytest.mark.parametrize("option,value", [
    ("--bench-seconds", "inf"), ("--bench-seconds", "nan"), ("--max-loss", "nan"), ("--max-loss", "-0.1")])
def test_quantize_refuses_numbers_that_would_hang_or_mean_nothing(exported, tiny_data, option, value):
    """inf seconds of benchmark would never end; a nan threshold refuses every model with a
    message of nan: both are usage errors before anything is read or written."""
    from click.testing import CliRunner

    from es_metric.cli import main

    res = CliRunner().invoke(main, ["model", "quantize", str(exported), "--calib", str(tiny_data),
                                    "--val", str(tiny_data), option, value])
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output
    assert not int8_path(exported).exists()


def test_reindex_under_the_int8_runtime_needs_a_passed_gate(exported, monkeypatch):
    """`esm reindex` builds its target as `esm mapping create` does: under the int8 runtime the
    model must have passed the gate (checked before the cluster is asked anything)."""
    from click.testing import CliRunner

    from es_metric.cli import main

    monkeypatch.setenv("ESM_RUNTIME", INT8)
    monkeypatch.setenv("ESM_ES_URL", "http://127.0.0.1:9")  # nothing listens: never reached
    result = CliRunner().invoke(main, ["reindex", "shop", "--model", str(exported)])
    assert result.exit_code != 0 and "no passed int8 gate" in result.output


@pytest.mark.parametrize("args,expected", [
    (("auto", None, True, True, True, True), "onnxruntime"),      # int8 never chosen by auto
    ((INT8, None, True, True, True, True), INT8),
    ((INT8, None, False, True, False, True), INT8),               # light node, int8 file only
])
def test_choose_runtime_int8_is_opt_in(args, expected):
    assert choose_runtime(*args) == expected


@pytest.mark.parametrize("args,match", [
    ((INT8, None, True, True, True, False), "no int8 file"),
    ((INT8, None, True, False, True, True), "not installed"),
])
def test_choose_runtime_refuses_int8_without_its_file(args, match):
    with pytest.raises(ConfigError, match=match):
        choose_runtime(*args)


def test_stale_int8_model_is_refused(quantized, tmp_path):
    from es_metric.model.modelfile import save_model

    path, _ = quantized
    stale = _copy(path, tmp_path)
    shutil.copy(int8_path(path), int8_path(stale))
    model = load_model(stale)
    save_model(stale, model.encoder, {**model.card, "weights_sha256": "0" * 64})
    with pytest.raises(ModelError, match="quantised from other weights"):
        load_embedder(stale, runtime=INT8)


def test_light_node_runs_the_int8_model_without_torch(quantized, tiny_data):
    path, _ = quantized
    refs = [str(p) for p in sorted((tiny_data / "class_2").iterdir())[:4]]
    script = LIGHT_NODE.replace("load_embedder(model_path)",
                                "load_embedder(model_path, runtime='onnxruntime-int8')")
    out = subprocess.run([sys.executable, "-c", script, str(path), str(tiny_data), *refs],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    light = json.loads(out.stdout.strip().splitlines()[-1])
    assert light["loaded"] == [] and light["runtime"] == INT8 and light["failures"] == []
    assert np.asarray(light["vectors"]).shape == (4, read_card(path)["dims"])
