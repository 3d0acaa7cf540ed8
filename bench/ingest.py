"""End-to-end ingest throughput: enqueue -> searchable (refresh), per inference runtime and
number of worker processes, vs the embedding-only pipeline figure of bench/embed.py.

An A/B in one run: each round runs every runtime (ESM_RUNTIME of the worker: torch, the
reference, and onnxruntime on the model's export, written here when missing) with every worker
count, interleaved so the drift of a shared machine hits all alike; medians over --rounds.

Usage: python bench/ingest.py [--backbone efficientnet-lite0] [--n 1000] [--workers 1,2]
                              [--runtimes torch,onnxruntime] [--rounds 2]
Needs the stack; restarts the esm-managed worker for each run. Writes bench/results/ingest-<backbone>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from common import DATA, ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import count, create_versioned_index
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.sources import Source, folder_items
from es_metric.model.export import export_model
from es_metric.model.modelfile import read_card
from es_metric.model.runtime import export_path
from es_metric.stack import worker as stack


def run(settings: Settings, es, model: Path, items: list[dict], workers: int, root: Path) -> dict:
    stack.stop_worker(settings)
    stack.start_worker(settings, workers)
    alias = f"bench-ingest-{settings.runtime}-w{workers}"
    es.options(ignore_status=404).indices.delete(index=f"{alias}*")
    create_versioned_index(es, alias, read_card(model), str(model))
    t0 = time.perf_counter()
    job = enqueue(settings, es, alias, Source(items, [], (root.resolve(),)))
    done, failed = wait(settings, job, poll=0.1)
    make_searchable(es, job)
    secs = time.perf_counter() - t0
    n = count(es, alias)
    es.indices.delete(index=f"{alias}*")
    return {"runtime": settings.runtime, "workers": workers, "images": len(items), "indexed": n,
            "failed": failed, "seconds": round(secs, 2), "img_s": round(len(items) / secs, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--runtimes", default="torch,onnxruntime")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings)
    model = ROOT / "results" / f"bench-{args.backbone}.pt"
    if not model.is_file():
        bench_model(args.backbone, 128, model)
    if "onnxruntime" in args.runtimes and not export_path(model).is_file():
        export_model(model)
    items = [i for i in folder_items(Path(args.data)) if i["ref"].endswith(".jpg")][: args.n]
    runs = []
    for _ in range(args.rounds):
        for rt in args.runtimes.split(","):
            for w in args.workers.split(","):
                runs.append(run(settings.with_(runtime=rt), es, model, items, int(w), Path(args.data)))
                print(json.dumps(runs[-1]), flush=True)
    embed_json = ROOT / "results" / "embed.json"
    embed = json.loads(embed_json.read_text()) if embed_json.exists() else {}
    rows = []
    for rt in args.runtimes.split(","):
        ref = next((r["pipeline_img_s"] for r in embed.get("rows", [])
                    if r["backbone"] == args.backbone and r.get("runtime", "torch") == rt), None)
        for w in map(int, args.workers.split(",")):
            mine = [r["img_s"] for r in runs if r["runtime"] == rt and r["workers"] == w]
            rows.append({"runtime": rt, "workers": w, "img_s_median": statistics.median(mine),
                         "img_s_runs": mine,
                         "vs_embedding_only": round(statistics.median(mine) / ref, 2) if ref else None})
    base = {r["workers"]: r["img_s_median"] for r in rows if r["runtime"] == "torch"}
    for row in rows:
        if base.get(row["workers"]):
            row["vs_torch_same_workers"] = round(row["img_s_median"] / base[row["workers"]], 2)
        print(json.dumps(row), flush=True)
    stack.stop_worker(settings)
    stack.start_worker(settings)
    write_result(f"ingest-{args.backbone}", {"backbone": args.backbone, "n": len(items),
                                              "runs": runs, "rows": rows})


if __name__ == "__main__":
    main()
