"""Optional int8: static quantisation of the ONNX export, calibrated on the user's own images,
and the gate that decides whether it is offered.

The gate compares MAP@R of the float export and of the int8 model on a labelled validation
folder (ranked as ``esm evaluate`` ranks, the card's re-ranking included). Only when the
relative loss ``(float - int8) / float`` is under ``max_loss`` is ``MODEL.int8.onnx`` written,
with the card and the gate's figures in its metadata; otherwise nothing is written.

Settings (ONNX Runtime's quantisation guide, measured on a Grocery Store model, docs/runtime.md): QDQ
format, uint8 activations and uint8 weights (U8U8), weights per channel (depthwise convolutions
have very different ranges per channel; per tensor, the worst image's cosine to float fell
from 0.97 to 0.47). On AVX2 CPUs without VNNI, as here, the u8 x s8 kernels (VPMADDUBSW) can
saturate their 16-bit sums: S8S8 and U8S8 lost 3.1-3.2 % MAP@R with 7-bit weights
(reduce_range) and 5.6 % without; U8U8 has no saturation and keeps full 8-bit weights
(1.8-2.0 %). When the whole graph loses too much, the
first convolution and the head stay in float and the gate measures again.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..images import IMAGE_SUFFIXES, DecodeLimits
from ..model.runtime import (CARD_KEY, GATE_KEY, INT8, PARITY_KEY, export_path, int8_path,
                             onnx_embedder)
from ..similarity import Metric
from ..types import ModelCard

log = logging.getLogger(__name__)

QUANT_OPS = ("Conv", "Gemm", "MatMul", "Clip", "Add", "Pad")  # the encoder, not its L2 norm
CALIB_BATCH = 16
ANYWHERE = (Path("/"),)  # folders named on the command line: their symlinks may point anywhere


@dataclass(frozen=True)
class QuantConfig:
    """How ``esm model quantize`` quantises and gates."""

    max_loss: float = 0.01        # relative MAP@R loss the gate accepts (strictly under)
    calib_images: int = 256       # at most this many calibration images (evenly spread)
    per_channel: bool = True
    reduce_range: bool = False    # 7-bit weights: only for u8 x s8 (saturation without VNNI)
    activations: str = "uint8"    # U8U8: no saturation on AVX2 (int8: S8S8 / U8S8)
    weights: str = "uint8"
    calibration: str = "minmax"   # minmax, percentile, entropy (ORT's calibrators)
    bench_seconds: float = 3.0    # per model, images/s of float vs int8


def gate(float_map: float, int8_map: float, max_loss: float) -> dict:
    """The gate's verdict: passed when the relative MAP@R loss is under ``max_loss``. A float
    MAP@R of 0 leaves nothing to measure a loss against: refused."""
    loss = (float_map - int8_map) / float_map if float_map > 0 else None
    return {"float_map_at_r": round(float_map, 6), "int8_map_at_r": round(int8_map, 6),
            "loss": None if loss is None else round(loss, 6), "max_loss": max_loss,
            "passed": loss is not None and loss < max_loss}


def gate_line(record: dict) -> str:
    """One line saying what the gate measured and decided."""
    loss = "undefined" if record["loss"] is None else f"{record['loss']:.2%}"
    verdict = "PASSED" if record["passed"] else "REFUSED"
    return (f"int8 gate {verdict}: MAP@R float {record['float_map_at_r']:.4f}, int8 "
            f"{record['int8_map_at_r']:.4f}, loss {loss} (must be under {record['max_loss']:.2%})")


def decode_images(paths: Sequence[str], size: int, limits: DecodeLimits = DecodeLimits()):
    """(uint8 N x S x S x 3 pixels, indices of the decoded paths, skipped [{ref, reason,
    message}]): decoded exactly as the worker decodes (``prepare_item``), on its decode threads."""
    from ..ingest.pipeline import DECODE_THREADS, decode_pool, prepare_item

    pool = decode_pool(DECODE_THREADS)
    ready = [f.result() for f in [pool.submit(prepare_item, {"ref": p}, limits, size, ANYWHERE)
                                  for p in paths]]
    kept = [i for i, (_, px, _, err) in enumerate(ready) if err is None]
    skipped = [{k: err[k] for k in ("ref", "reason", "message")} for *_, err in ready if err]
    pixels = np.stack([ready[i][1] for i in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    return pixels, kept, skipped


def calibration_pixels(calib_dir: str | Path, size: int, limit: int):
    """(pixels, skipped) of at most ``limit`` images under ``calib_dir`` (any depth, evenly
    spread over the sorted files); ConfigError when none decodes."""
    root = Path(calib_dir)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", hint="--calib names a folder of your images")
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    pixels, _, skipped = decode_images(files, size)
    for s in skipped:
        log.warning("calibration image %s skipped: %s", s["ref"], s["message"])
    if len(pixels) == 0:
        raise ConfigError(f"{root} holds no usable calibration image ({len(files)} image file(s), "
                          f"{len(skipped)} unreadable)", hint="--calib needs photos like the ones you index")
    return pixels, skipped


def _reader(pixels: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixels": pixels[i:i + CALIB_BATCH]}
                                 for i in range(0, len(pixels), CALIB_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    return Batches()


def edge_nodes(onnx_file: Path) -> list[str]:
    """The first convolution and the head (last Gemm/MatMul): kept in float when the whole
    graph loses too much."""
    import onnx

    nodes = onnx.load(str(onnx_file), load_external_data=False).graph.node
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    last = next((n.name for n in reversed(nodes) if n.op_type in ("Gemm", "MatMul")), None)
    return [n for n in (first, last) if n]


def write_int8(float_file: Path, out: Path, pixels: np.ndarray, cfg: QuantConfig,
               keep_float: Sequence[str] = ()) -> None:
    """Static QDQ quantisation of ``float_file`` to ``out`` as ``cfg`` says, calibrated on
    ``pixels``; ``keep_float``: node names left in float."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    ort.set_default_logger_severity(3)  # the calibration graph's unused-initializer warnings
    quantize_static(str(float_file), str(out), _reader(pixels), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANT_OPS), per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range, activation_type=types[cfg.activations],
                    weight_type=types[cfg.weights], nodes_to_exclude=list(keep_float),
                    calibrate_method=methods[cfg.calibration])


@dataclass
class Validation:
    """A labelled folder decoded once, embedded by each candidate."""

    pixels: np.ndarray
    samples: list
    skipped: list[dict]

    @classmethod
    def read(cls, val_dir: str | Path, size: int) -> "Validation":
        from .data import read_folder

        folder = read_folder(val_dir)  # ConfigError unless two classes with two usable images
        pixels, kept, skipped = decode_images([s.path for s in folder.samples], size)
        return cls(pixels, [folder.samples[i] for i in kept],
                   folder.skipped_records() + skipped)

    def map_at_r(self, embedder, card: ModelCard) -> tuple[float, np.ndarray]:
        """(MAP@R, vectors) of ``embedder`` on these images, ranked as search ranks."""
        from ..search.rerank import ReRank
        from .evaluate import Embedded, retrieval_metrics

        vectors = np.concatenate([embedder.embed(self.pixels[i:i + CALIB_BATCH])
                                  for i in range(0, len(self.pixels), CALIB_BATCH)])
        labels = np.array([s.label for s in self.samples])
        emb = Embedded(vectors, labels, self.samples, Metric(card["similarity"]), embedder.runtime)
        rerank = ReRank.from_dict(card.get("rerank"))
        return retrieval_metrics(emb, rerank, full=False)["map_at_r"], vectors


def quantize_model(model_path: str | Path, calib_dir: str | Path, val_dir: str | Path,
                   cfg: QuantConfig = QuantConfig()) -> dict:
    """Quantise MODEL's export (made first when missing), gate it on ``val_dir`` and write
    ``MODEL.int8.onnx`` only when it passes. Returns the record (``passed``, both MAP@R figures,
    loss, images/s of both, what stayed float, skipped images); the card records a passed one."""
    from ..model.export import export_model

    model_path = Path(model_path)
    if not export_path(model_path).is_file():
        export_model(model_path)
    floaty = onnx_embedder(export_path(model_path))
    card, size = floaty.card, int(floaty.card["preprocess"]["size"])
    val = Validation.read(val_dir, size)
    calib, calib_skipped = calibration_pixels(calib_dir, size, cfg.calib_images)
    tmp = int8_path(model_path).with_suffix(".tmp.onnx")
    try:
        record, int8 = _gated(export_path(model_path), floaty, tmp, calib, val, cfg)
        record.update(_settings(cfg, len(calib), len(val.samples)), calib_skipped=calib_skipped,
                      val_skipped=val.skipped, written=None,
                      images_per_s=_speeds(floaty, int8, size, cfg.bench_seconds))
        if record["passed"]:
            _publish(model_path, tmp, card, record)
    finally:
        tmp.unlink(missing_ok=True)
    return record


def _gated(float_file: Path, floaty, tmp: Path, calib: np.ndarray, val: Validation,
           cfg: QuantConfig) -> tuple[dict, object]:
    """Quantise the whole graph into ``tmp`` and gate it; when refused, again with the first
    convolution and the head in float. ``floaty``: the float export's embedder (its card is
    the model's). (The passing record, or the least bad refused one; the last int8 embedder
    tried.)"""
    from ..model.export import cosines

    card = floaty.card
    float_map, float_vecs = val.map_at_r(floaty, card)
    attempts: list[dict] = []
    for keep in ([], edge_nodes(float_file)):
        write_int8(float_file, tmp, calib, cfg, keep)
        int8 = onnx_embedder_of(tmp, card)
        int8_map, int8_vecs = val.map_at_r(int8, card)
        attempts.append({**gate(float_map, int8_map, cfg.max_loss), "kept_float": keep,
                         "min_cosine_to_float": round(float(cosines(int8_vecs, float_vecs).min()), 6)})
        log.info("%s (kept in float: %s)", gate_line(attempts[-1]), keep or "nothing")
        if attempts[-1]["passed"]:
            break
    record = max(attempts, key=lambda a: a["int8_map_at_r"])  # a pass is always the last tried
    record["attempts"] = [{k: a[k] for k in ("kept_float", "int8_map_at_r", "loss")} for a in attempts]
    return record, int8


def onnx_embedder_of(path: Path, card: ModelCard):
    """The int8 graph as an embedder (its metadata gets the card only when published)."""
    from ..model.runtime import OnnxEmbedder, open_session

    return OnnxEmbedder(open_session(path, "cpu"), card, None, INT8)


def _settings(cfg: QuantConfig, n_calib: int, n_val: int) -> dict:
    return {"format": "QDQ", "activations": cfg.activations, "weights": cfg.weights,
            "calibration": cfg.calibration, "per_channel": cfg.per_channel, "reduce_range": cfg.reduce_range,
            "calib_images": n_calib, "val_images": n_val}


def _speeds(floaty, int8, size: int, seconds: float) -> dict:
    from ..model.export import check_pixels, images_per_second

    pixels = check_pixels(size, 16, seed=1)
    return {"float": images_per_second(floaty, pixels, seconds),
            "int8": images_per_second(int8, pixels, seconds)}


def _publish(model_path: Path, tmp: Path, card: ModelCard, record: dict) -> None:
    """Card + gate into the int8 graph's metadata, the file in place, the gate in the card."""
    from ..model.export import record_runtime, set_props

    out = int8_path(model_path)
    record["written"] = out.name
    record["id"] = uuid.uuid4().hex[:12]  # an index records which quantisation made its vectors
    set_props(tmp, {CARD_KEY: json.dumps(card), GATE_KEY: json.dumps(record),
                    PARITY_KEY: f"{record['min_cosine_to_float']:.7f}"})
    tmp.replace(out)
    if model_path.is_file():
        record_runtime(model_path, {"int8": record})
    log.info("wrote %s", out)


__all__ = ["QuantConfig", "gate", "gate_line", "quantize_model", "calibration_pixels",
           "decode_images", "edge_nodes", "write_int8"]
