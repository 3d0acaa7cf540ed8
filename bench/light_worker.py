"""Cold start of a worker node, light install (``es-metric[runtime]``, no torch) vs full install:
seconds from launching the stack's worker command line (``worker_command``) with that install's
interpreter until the worker logs "ready", and until its first task, a batch of 32 JPEGs queued
beforehand, is indexed (model loaded, decoded, embedded, written). Each worker has a queue of its
own and 1 process; the two installs alternate within each run. Also the size of each venv.

Usage: python bench/light_worker.py --light /tmp/lv/bin/python [--full PYTHON] [--runs 3]
Needs the stack (`esm stack up`). The light interpreter runs its own installed es_metric (no
PYTHONPATH); the full one runs this checkout's. Writes bench/results/light_worker.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import DATA, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index
from es_metric.ingest.enqueue import enqueue
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.sources import Source, folder_items
from es_metric.model.export import export_model
from es_metric.model.modelfile import read_card
from es_metric.stack.worker import stop_worker, worker_command, worker_pidfile


def venv_size(python: str) -> str:
    """The size on disk of the interpreter's venv (sys.prefix), as `du -sh` prints it."""
    prefix = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    return subprocess.run(["du", "-sh", prefix], capture_output=True, text=True).stdout.split()[0]


def cold_start(settings: Settings, es, alias: str, source: Source, python: str, light: bool,
               timeout: float = 600) -> dict:
    """Queue one batch for a fresh queue, launch a worker on it, time ready and indexed."""
    qs = settings.with_(worker_queue=f"cold{uuid.uuid4().hex[:8]}", worker_concurrency=1)
    job = enqueue(qs, es, alias, source)
    env = {**os.environ, **qs.as_env()}
    if light:
        env.pop("PYTHONPATH", None)  # the light install's own es_metric, nothing of this checkout
    log0 = qs.stack_dir / "logs" / f"{worker_pidfile(qs).stem}-0.log"
    progress, ready, row = JobProgress(qs, job.job_id), None, {"light": light}
    t0 = time.perf_counter()
    try:
        subprocess.run(worker_command(qs, f"{qs.worker_queue}-{os.getpid()}", 1, python), env=env,
                       check=True)
        while time.perf_counter() - t0 < timeout:
            if ready is None and log0.exists() and " ready." in log0.read_text(errors="replace"):
                ready = time.perf_counter() - t0
            total, done, failed = progress.counts()
            if done + failed >= total:
                row.update(ready_s=round(ready or time.perf_counter() - t0, 2),
                           indexed_s=round(time.perf_counter() - t0, 2), indexed=done, failed=failed)
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the worker did not finish the batch in {timeout} s: see {log0}")
    finally:
        stop_worker(qs)
    logs = "".join(p.read_text(errors="replace") for p in log0.parent.glob(f"{worker_pidfile(qs).stem}-*.log"))
    row["onnxruntime"] = "embedding with ONNX Runtime" in logs
    row["load_1min"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--light", required=True, help="python of a venv with es-metric[runtime] installed")
    ap.add_argument("--full", default=sys.executable, help="python of the full install")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings)
    work = Path(tempfile.mkdtemp(prefix="esm-light-bench-"))
    try:
        model = bench_model(args.backbone, 128, work / "model.pt")
        export_model(model)
        images = work / "images"
        images.mkdir()
        for item in [i for i in folder_items(Path(args.data)) if i["ref"].endswith(".jpg")][: args.batch]:
            shutil.copy(item["ref"], images / f"{len(list(images.iterdir())):03d}.jpg")
        alias = f"bench-light-{uuid.uuid4().hex[:6]}"
        create_versioned_index(es, alias, read_card(model), str(model))
        source = Source(list(folder_items(images)), [], (images.resolve(),))
        if len(source.items) != args.batch:
            raise SystemExit(f"found {len(source.items)} of {args.batch} JPEGs under {args.data}")
        rows = []
        for run in range(args.runs):
            for python, light in ((args.light, True), (args.full, False)):
                row = {"run": run + 1, **cold_start(settings, es, alias, source, python, light)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        es.options(ignore_status=404).indices.delete(index=f"{alias}*")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = {"light": venv_size(args.light), "full": venv_size(args.full)}
    print(json.dumps(sizes))
    write_result("light_worker", {"backbone": args.backbone, "batch": args.batch, "sizes": sizes,
                                  "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                                  "rows": rows})


if __name__ == "__main__":
    main()
