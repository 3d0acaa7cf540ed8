"""Images/s of the worker's embedding path vs the bare model forward, same backbone, batch, threads.

pipeline = es_metric.ingest.pipeline.decode_and_embed, the worker's own code: read file + safe decode
(JPEG draft) + crop/resize on the decode thread(s), running ahead of the model; normalise,
forward + L2 normalise in sub-batches; tasks of --task images like the worker (ESM_BATCH_SIZE).
bare = the same forward on already-decoded, already-preprocessed channels_last tensors.
Both use torch's default threads (one per core) and the same sub-batch.

Reported: medians over --rounds interleaved bare/pipeline pairs (the machine is shared).

Usage: python bench/embed.py [--data DIR] [--n 256] [--batch 16] [--task 32] [--decode-threads 2]
                             [--backbones small-cnn,resnet18,...]
Prints a table and writes bench/results/embed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from common import bench_model
from es_metric.images import DecodeLimits, load_image
from es_metric.ingest.pipeline import DECODE_THREADS, OVERLAP, decode_and_embed
from es_metric.model.embed import embed_tensors, normalise, pixel_batch, to_pixels
from es_metric.model.modelfile import load_model

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


def pipeline(model, files: list[Path], batch: int, task: int, threads: int, overlap: bool,
             seconds: float) -> float:
    """The worker's own path: es_metric.ingest.pipeline.decode_and_embed on tasks of file items."""
    items = [{"ref": str(f), "id": None, "fields": {}} for f in files]
    limits = DecodeLimits()
    kw = {"sub_batch": batch, "decode_threads": threads, "overlap": overlap,
          "roots": tuple({f.resolve().parent for f in files})}
    decode_and_embed(items[:batch], model, limits, **kw)  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(items), task):
            good, _, _ = decode_and_embed(items[i:i + task], model, limits, **kw)
            done += len(good)
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data" / "grocery_store"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="sub-batch of the forward pass (worker: 16)")
    ap.add_argument("--task", type=int, default=32, help="images per task (worker: ESM_BATCH_SIZE=32)")
    ap.add_argument("--decode-threads", type=int, default=DECODE_THREADS)
    ap.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=OVERLAP,
                    help="decode ahead during the forward pass, or alternate the two "
                         "(default: the worker's choice, overlap only with 1 torch thread)")
    ap.add_argument("--seconds", type=float, default=5, help="per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="bare/pipeline pairs; medians are reported")
    ap.add_argument("--backbones", default="small-cnn,resnet18,mobilenet_v3_large")
    args = ap.parse_args()
    files = jpeg_files(Path(args.data), args.n)
    rows = []
    for name in args.backbones.split(","):
        model = load_model(bench_model(name, 128, ROOT / "results" / f"bench-{name}.pt"))
        encoder, pre = model.encoder, model.preprocess
        tensors = normalise(pixel_batch([to_pixels(load_image(f, draft=pre.size)[0], pre.size)
                                         for f in files]), pre)
        bares, pipes = [], []
        for _ in range(args.rounds):  # interleaved, so drift of a shared machine hits both alike
            bares.append(bare_forward(encoder, tensors, args.batch, args.seconds))
            pipes.append(pipeline(model, files, args.batch, args.task, args.decode_threads,
                                  args.overlap, args.seconds))
        ratios = [p / b for p, b in zip(pipes, bares)]
        bare, pipe, ratio = (statistics.median(v) for v in (bares, pipes, ratios))
        rows.append({"backbone": name, "input": pre.size, "bare_img_s": round(bare, 1),
                     "pipeline_img_s": round(pipe, 1), "ratio": round(ratio, 3),
                     "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                     "rounds": [{"bare": round(b, 1), "pipeline": round(p, 1)} for b, p in zip(bares, pipes)]})
        print(f"{name:<20} {pre.size:>4}px  bare {bare:8.1f} img/s  pipeline {pipe:8.1f} img/s  "
              f"ratio {ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "python": platform.python_version(), "torch": torch.__version__},
           "images": len(files), "batch": args.batch, "task": args.task, "rounds": args.rounds,
           "decode_threads": args.decode_threads, "overlap": args.overlap, "rows": rows}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "embed.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
