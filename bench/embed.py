"""Images/s of the worker's embedding path vs the bare forward, per runtime, in one run.

runtimes: torch eager (the reference), ONNX Runtime on the model's export (written here when
missing), and OpenVINO on the same export when the openvino package is installed (bare only:
the worker does not run it).
pipeline = es_metric.ingest.pipeline.decode_and_embed, the worker's own code: read file + safe decode
(JPEG draft) + crop/resize on the decode thread(s); the runtime embeds uint8 pixels in
sub-batches; tasks of --task images like the worker (ESM_BATCH_SIZE).
bare = the same runtime on already-decoded uint8 pixels. Default threads (one per core).
ceiling: the fastest runtime's bare figure; the worker path's ratio is reported against it.

Reported: medians over --rounds interleaved bare/pipeline pairs (the machine is shared), with
the 1-minute load average at the start and the end.

Usage: python bench/embed.py [--data DIR] [--n 256] [--batch 16] [--task 32] [--decode-threads 2]
                             [--backbones efficientnet-lite0,...] [--runtimes torch,onnxruntime,openvino]
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

import numpy as np
import torch

from common import bench_model
from es_metric.images import DecodeLimits, load_image
from es_metric.ingest.pipeline import DECODE_THREADS, OVERLAP, decode_and_embed
from es_metric.model.embed import query_pixels
from es_metric.model.export import export_model
from es_metric.model.modelfile import load_model
from es_metric.model.runtime import TorchEmbedder, export_path, installed, onnx_embedder, set_threads

ROOT = Path(__file__).resolve().parent


def jpeg_files(data: Path, n: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


class OpenVino:
    """OpenVINO on the ONNX export (bench only): same input and output as the embedders."""

    runtime = "openvino"

    def __init__(self, onnx: Path) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(onnx), "CPU")

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self.compiled(pixels)[0]


def embedders(model_path: Path, wanted: list[str]) -> dict:
    set_threads(None, spin=False)  # the worker's setting: no busy-waiting between runs
    model = load_model(model_path)
    if not export_path(model_path).is_file():
        export_model(model_path)
    found = {"torch": TorchEmbedder(model)}
    if installed("onnxruntime"):
        found["onnxruntime"] = onnx_embedder(export_path(model_path))
    if installed("openvino"):
        found["openvino"] = OpenVino(export_path(model_path))
    return {name: found[name] for name in wanted if name in found}


def bare_forward(embedder, pixels: np.ndarray, batch: int, seconds: float) -> float:
    embedder.embed(pixels[:batch])  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for i in range(0, len(pixels), batch):
            embedder.embed(pixels[i:i + batch])
            done += len(pixels[i:i + batch])
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


def _worker_process(path: str, runtime: str, files: list[Path], args, threads: int, barrier, out) -> None:
    """One worker process of P (spawned, as Celery's prefork children each load their own
    model): the model's threads bounded to cores / P as the worker sets them, then the
    worker's path for --seconds, started together with the others."""
    from es_metric.model.runtime import set_threads

    set_threads(threads, spin=False)  # as the worker process sets them
    embedder = (onnx_embedder(export_path(path)) if runtime == "onnxruntime"
                else TorchEmbedder(load_model(path)))
    pipeline(embedder, files[: args.task], args.batch, args.task, args.decode_threads, None, 0.2)
    barrier.wait()
    out.put(pipeline(embedder, files, args.batch, args.task, args.decode_threads, None, args.seconds))


def processes_pipeline(path: Path, runtime: str, files: list[Path], args, procs: int) -> float:
    """Images/s of the worker's path with ``procs`` worker processes (ESM_WORKER_CONCURRENCY)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // procs)
    children = [ctx.Process(target=_worker_process,
                            args=(str(path), runtime, files, args, threads, barrier, out))
                for _ in range(procs)]
    for c in children:
        c.start()
    rates = [out.get(timeout=600) for _ in children]
    for c in children:
        c.join()
    return sum(rates)


def decode_rate(files: list[Path], size: int, threads: int, seconds: float) -> float:
    """Images/s of the decode step alone (read, safe decode, crop + resize) on ``threads``."""
    from es_metric.ingest.pipeline import decode_pool, prepare_item

    items = [{"ref": str(f), "id": None, "fields": {}} for f in files]
    roots, pool = tuple({f.resolve().parent for f in files}), decode_pool(threads)
    limits, t0, done = DecodeLimits(), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        done += len(list(pool.map(lambda it: prepare_item(it, limits, size, roots), items)))
    return done / (time.perf_counter() - t0)


def measure(args, name: str, size: int, runtime: str, embedder, pixels, files) -> dict:
    """Interleaved bare/pipeline rounds of one runtime (pipeline: the worker's runtimes only)."""
    bares, pipes = [], []
    for _ in range(args.rounds):  # interleaved, so drift of a shared machine hits both alike
        bares.append(bare_forward(embedder, pixels, args.batch, args.seconds))
        if runtime != "openvino":
            pipes.append(pipeline(embedder, files, args.batch, args.task, args.decode_threads,
                                  args.overlap, args.seconds))
    bare = statistics.median(bares)
    pipe = statistics.median(pipes) if pipes else None
    ratios = [p / b for p, b in zip(pipes, bares)]
    print(f"{name:<18} {size:>4}px {runtime:<12} bare {bare:8.1f} img/s  pipeline "
          f"{(pipe or 0):8.1f} img/s  ratio {statistics.median(ratios) if ratios else 0:.2f}  "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return {"backbone": name, "input": size, "runtime": runtime, "bare_img_s": round(bare, 1),
            "pipeline_img_s": round(pipe, 1) if pipe else None,
            "ratio": round(statistics.median(ratios), 3) if ratios else None,
            "rounds": [{"bare": round(b, 1), "pipeline": round(p, 1) if p else None}
                       for b, p in zip(bares, pipes or [None] * len(bares))],
            "load_avg_1m": round(os.getloadavg()[0], 2)}


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
    ap.add_argument("--backbones", default="efficientnet-lite0")
    ap.add_argument("--runtimes", default="torch,onnxruntime,openvino")
    ap.add_argument("--processes", default="2",
                    help="also the worker path with these numbers of worker processes "
                         "(ESM_WORKER_CONCURRENCY), each with cores / P model threads; '' for none")
    args = ap.parse_args()
    files = jpeg_files(Path(args.data), args.n)
    rows, load_start = [], os.getloadavg()[0]
    for name in args.backbones.split(","):
        path = bench_model(name, 128, ROOT / "results" / f"bench-{name}.pt")
        runners = embedders(path, args.runtimes.split(","))
        size = load_model(path).preprocess.size
        pixels = np.concatenate([query_pixels(load_image(f, draft=size)[0], size) for f in files])
        decode = decode_rate(files, size, args.decode_threads, args.seconds)
        print(f"decode alone ({args.decode_threads} threads): {decode:.1f} img/s", flush=True)
        for runtime, embedder in runners.items():
            rows.append(measure(args, name, size, runtime, embedder, pixels, files))
            rows[-1]["decode_img_s"] = round(decode, 1)
            for procs in (int(p) for p in args.processes.split(",") if p):
                if runtime != "openvino":
                    rate = processes_pipeline(path, runtime, files, args, procs)
                    rows[-1][f"pipeline_{procs}proc_img_s"] = round(rate, 1)
                    print(f"{name:<18} {runtime:<12} worker path, {procs} processes: {rate:8.1f} img/s",
                          flush=True)
        ceiling = max(r["bare_img_s"] for r in rows if r["backbone"] == name)
        for r in rows:
            if r["backbone"] == name and r["pipeline_img_s"] is not None:
                r["pipeline_vs_fastest_bare"] = round(r["pipeline_img_s"] / ceiling, 3)
                for key in [k for k in r if k.startswith("pipeline_") and k.endswith("proc_img_s")]:
                    r[key.replace("_img_s", "_vs_fastest_bare")] = round(r[key] / ceiling, 3)
        print(f"{name}: fastest bare {ceiling:.1f} img/s; worker path / fastest bare: " + ", ".join(
            f"{r['runtime']} {r['pipeline_vs_fastest_bare']}" for r in rows
            if r["backbone"] == name and "pipeline_vs_fastest_bare" in r), flush=True)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "python": platform.python_version(), "torch": torch.__version__,
                       "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
           "images": len(files), "batch": args.batch, "task": args.task, "rounds": args.rounds,
           "decode_threads": args.decode_threads, "overlap": args.overlap, "rows": rows}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "embed.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
