"""Images/s of each runtime on each device for one model, and each one's parity (min cosine
per image) with torch on the CPU, on real images. Called by bench/gpu_check.sh.

Usage: python bench/gpu_parity.py MODEL DATA_DIR [--n 256] [--batch 64] [--seconds 5]
Exit status 1 when a GPU row is not within PARITY_COSINE of the CPU."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from es_metric.device import resolve_device
from es_metric.images import load_image
from es_metric.model.embed import query_pixels
from es_metric.model.export import cosines
from es_metric.model.modelfile import load_model
from es_metric.model.runtime import PARITY_COSINE, TorchEmbedder, export_path, installed, onnx_embedder


def rate(embedder, pixels: np.ndarray, batch: int, seconds: float) -> float:
    embedder.embed(pixels[:batch])
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(pixels), batch):
            done += len(embedder.embed(pixels[i:i + batch]))
    return done / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    model = load_model(args.model)
    size = model.preprocess.size
    files = sorted(Path(args.data).rglob("*.jpg"))[: args.n]
    pixels = np.concatenate([query_pixels(load_image(f, draft=size)[0], size) for f in files])
    reference = TorchEmbedder(model, "cpu", args.batch).embed(pixels)
    gpu = resolve_device("cuda", "torch")
    rows = [("torch", "cpu", TorchEmbedder(model, "cpu", args.batch))]
    gpu_model = load_model(args.model)
    gpu_model.encoder.to(gpu)
    rows.append(("torch", gpu, TorchEmbedder(gpu_model, gpu, args.batch)))
    if export_path(args.model).is_file() and installed("onnxruntime"):
        rows.append(("onnxruntime", "cpu", onnx_embedder(export_path(args.model), "cpu")))
        import onnxruntime as ort
        if "CUDAExecutionProvider" in ort.get_available_providers():
            rows.append(("onnxruntime", gpu, onnx_embedder(export_path(args.model), gpu)))
    ok = True
    print(f"{len(files)} images, {size}px, batch {args.batch}, load average {os.getloadavg()[0]:.2f}")
    for runtime, device, embedder in rows:
        parity = float(cosines(embedder.embed(pixels), reference).min())
        ok &= parity >= PARITY_COSINE or device == "cpu"
        print(f"{runtime:<12} {device:<7} {rate(embedder, pixels, args.batch, args.seconds):9.1f} "
              f"images/s   min cosine to torch/cpu {parity:.6f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
