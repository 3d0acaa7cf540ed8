"""Images/s of the worker's embedding path vs the bare model forward, same backbone, batch, threads.

pipeline = read file + safe decode (JPEG draft) + preprocess + forward + L2 normalise, exactly
what es_metric.pipeline does per batch (decoding overlapped with the previous forward);
bare = forward on already-decoded, already-preprocessed tensors.

Usage: python bench/embed.py [--data DIR] [--n 256] [--batch 32] [--backbones small-cnn,resnet18,...]
Prints a table and writes bench/results/embed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from es_metric.embed import embed_images, embed_tensors, to_tensor
from es_metric.encoder import backbone_spec, create_encoder
from es_metric.images import load_image

ROOT = Path(__file__).resolve().parent


def jpeg_files(data: Path, n: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def bare_forward(encoder, tensors: torch.Tensor, batch: int, seconds: float) -> float:
    embed_tensors(encoder, tensors[:batch], batch)  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(tensors), batch):
            embed_tensors(encoder, tensors[i:i + batch], batch)
            done += len(tensors[i:i + batch])
    return done / (time.perf_counter() - t0)


def pipeline(encoder, files: list[Path], pre, batch: int, seconds: float) -> float:
    """Decode batch i+1 on a thread pool while batch i runs through the model."""
    def decode(chunk):
        return [load_image(f, draft=pre.size)[0] for f in chunk]

    chunks = [files[i:i + batch] for i in range(0, len(files), batch)]
    embed_images(encoder, decode(chunks[0])[:2], pre)  # warm-up
    t0, done = time.perf_counter(), 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        while time.perf_counter() - t0 < seconds:
            pending = pool.submit(decode, chunks[0])
            for nxt in chunks[1:] + [None]:
                images = pending.result()
                if nxt is not None:
                    pending = pool.submit(decode, nxt)
                embed_images(encoder, images, pre, batch_size=batch)
                done += len(images)
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data" / "grocery_store"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--backbones", default="small-cnn,resnet18,mobilenet_v3_large")
    args = ap.parse_args()
    files = jpeg_files(Path(args.data), args.n)
    rows = []
    for name in args.backbones.split(","):
        encoder = create_encoder(name, dim=128, pretrained=False).eval()
        pre = backbone_spec(name).preprocess
        tensors = torch.stack([to_tensor(load_image(f)[0], pre) for f in files])
        bare = bare_forward(encoder, tensors, args.batch, args.seconds)
        pipe = pipeline(encoder, files, pre, args.batch, args.seconds)
        rows.append({"backbone": name, "input": pre.size, "bare_img_s": round(bare, 1),
                     "pipeline_img_s": round(pipe, 1), "ratio": round(pipe / bare, 3)})
        print(f"{name:<20} {pre.size:>4}px  bare {bare:8.1f} img/s  pipeline {pipe:8.1f} img/s  "
              f"ratio {pipe / bare:.2f}", flush=True)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "python": platform.python_version(), "torch": torch.__version__},
           "images": len(files), "batch": args.batch, "rows": rows}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "embed.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
