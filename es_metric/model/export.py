"""ONNX export of an encoder (backbone + head, normalisation inside the graph), its parity check
against torch, and the runtime benchmark whose verdict the model card records.

The graph takes uint8 pixels N x S x S x 3 (what decoding makes), so a node that runs it needs
no torch. An export is written only when every check image's cosine to torch reaches
``PARITY_COSINE``: an index may then hold vectors of either runtime.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..types import CardRuntime, Runtime
from .modelfile import LoadedModel, load_model, save_model
from .runtime import (CARD_KEY, INT8, PARITY_COSINE, PARITY_KEY, Embedder, TorchEmbedder, export_path,
                      installed, int8_path, onnx_embedder)

log = logging.getLogger(__name__)
OPSET = 17


class PixelFront(nn.Module):
    """uint8 N x S x S x 3 -> normalised float N x 3 x S x S -> encoder (as ``embed.normalise``)."""

    mean: torch.Tensor       # buffers (register_buffer)
    inv_std: torch.Tensor

    def __init__(self, encoder: nn.Module, mean, std) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("inv_std", 1 / (torch.tensor(std).view(1, 3, 1, 1) * 255))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder((pixels.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std)


def check_pixels(size: int, n: int = 16, seed: int = 0) -> np.ndarray:
    """Parity inputs: smooth random images (blurred noise, like photos) plus pure noise."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    smooth = noise.copy()
    for axis in (1, 2):
        smooth = (np.roll(smooth, 1, axis) + smooth + np.roll(smooth, -1, axis)) / 3
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-6) * 255
    return np.concatenate([smooth[: n // 2], noise[n // 2:]]).round().astype(np.uint8)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def set_props(path: Path, props: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, **props})
    onnx.save(graph, str(path))


def _write_graph(model: LoadedModel, out: Path, opset: int) -> None:
    pre = model.preprocess
    front = PixelFront(model.encoder.cpu().eval(), pre.mean, pre.std).eval()
    example = torch.zeros(2, pre.size, pre.size, 3, dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(front, (example,), str(out), input_names=["pixels"],
                          output_names=["embedding"], opset_version=opset, dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
    card = {k: v for k, v in model.card.items() if k != "runtime"}
    set_props(out, {CARD_KEY: json.dumps(card)})


def export_model(model_path: str | Path, out: str | Path | None = None, opset: int = OPSET) -> CardRuntime:
    """Export the model file to ONNX beside it (or ``out``), check parity with torch, and record
    the export in the card (``runtime``). Returns that record. Refuses an export whose vectors
    are not within the parity tolerance."""
    if not (installed("onnx") and installed("onnxruntime")):
        raise ModelError("exporting needs the onnx and onnxruntime packages",
                         hint="pip install 'es-metric[onnx]'")
    model = load_model(model_path)
    out = Path(out) if out else export_path(model_path)
    tmp = out.with_suffix(".tmp.onnx")
    t0 = time.perf_counter()
    _write_graph(model, tmp, opset)
    pixels = check_pixels(model.preprocess.size)
    ours = onnx_embedder(tmp).embed(pixels)
    ref = TorchEmbedder(model).embed(pixels)
    parity = float(cosines(ours, ref).min())
    if not parity >= PARITY_COSINE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"the ONNX export of {model_path} differs from torch (min cosine "
                         f"{parity:.6f} < {PARITY_COSINE})", hint="keep using torch (no export)")
    set_props(tmp, {PARITY_KEY: f"{parity:.7f}"})
    tmp.replace(out)
    record: CardRuntime = {**(model.card.get("runtime") or {}), "export": out.name, "opset": opset,
                           "parity_min_cosine": round(parity, 7), "export_s": round(time.perf_counter() - t0, 2)}
    record.setdefault("chosen", "onnxruntime")
    _save_runtime(model, record)
    log.info("exported %s (parity %.7f)", out, parity)
    return record


def record_runtime(model_path: str | Path, updates: CardRuntime) -> None:
    """Merge ``updates`` into the card's ``runtime`` record (e.g. the int8 gate)."""
    model = load_model(model_path)
    _save_runtime(model, {**(model.card.get("runtime") or {}), **updates})


def _save_runtime(model: LoadedModel, record: CardRuntime) -> None:
    save_model(model.path, model.encoder.cpu(), {**model.card, "runtime": record})


def bench_runtimes(model_path: str | Path, batch: int = 16, seconds: float = 3.0) -> CardRuntime:
    """Images/s of each runtime available here on the same pixels; the card records the
    fastest float one as ``runtime.chosen`` (what workers and search use on
    ``ESM_RUNTIME=auto``; the int8 model, when there is one, is measured but opt-in only)."""
    model = load_model(model_path)
    pixels = check_pixels(model.preprocess.size, batch, seed=1)
    runners: dict[Runtime, Embedder] = {"torch": TorchEmbedder(model, batch_size=batch)}
    if export_path(model_path).is_file() and installed("onnxruntime"):
        runners["onnxruntime"] = onnx_embedder(export_path(model_path))
    if int8_path(model_path).is_file() and installed("onnxruntime"):  # measured, never chosen
        runners[INT8] = onnx_embedder(int8_path(model_path), runtime=INT8)
    rates = {name: images_per_second(r, pixels, seconds) for name, r in runners.items()}
    floats: dict[Runtime, float] = {name: rate for name, rate in rates.items() if name != INT8}
    record: CardRuntime = {**(model.card.get("runtime") or {}), "chosen": max(floats, key=floats.__getitem__),
                           "bench": {"images_per_s": rates, "batch": batch, "threads": torch.get_num_threads(),
                                     "load_avg_1m": round(os.getloadavg()[0], 2)}}
    _save_runtime(model, record)
    return record


def images_per_second(embedder, pixels: np.ndarray, seconds: float) -> float:
    """Images/s of ``embedder`` on ``pixels`` over about ``seconds`` (after one warm-up)."""
    embedder.embed(pixels)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        embedder.embed(pixels)
        n += len(pixels)
    return round(n / (time.perf_counter() - t0), 1)
