"""End-to-end ingest throughput: enqueue -> searchable (refresh), with 1 and 2 worker processes,
vs the embedding-only pipeline figure of bench/embed.py for the same backbone.

Usage: python bench/ingest.py [--backbone mobilenet_v3_large] [--n 1000] [--workers 1,2]
Needs the stack; restarts the esm-managed worker with each concurrency. Writes bench/results/ingest.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DATA, ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import count, create_versioned_index
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.sources import Source, folder_items
from es_metric.model.modelfile import read_card
from es_metric.stack import worker as stack


def run(settings: Settings, es, model: Path, items: list[dict], workers: int, root: Path) -> dict:
    stack.stop_worker(settings)
    stack.start_worker(settings, workers)
    alias = f"bench-ingest-w{workers}"
    es.options(ignore_status=404).indices.delete(index=f"{alias}*")
    create_versioned_index(es, alias, read_card(model), str(model))
    t0 = time.perf_counter()
    job = enqueue(settings, es, alias, Source(items, [], (root.resolve(),)))
    done, failed = wait(settings, job, poll=0.1)
    make_searchable(es, job)
    secs = time.perf_counter() - t0
    n = count(es, alias)
    es.indices.delete(index=f"{alias}*")
    return {"workers": workers, "images": len(items), "indexed": n, "failed": failed,
            "seconds": round(secs, 2), "img_s": round(len(items) / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="mobilenet_v3_large")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings)
    model = bench_model(args.backbone, 128, ROOT / "results" / f"bench-{args.backbone}.pt")
    items = [i for i in folder_items(Path(args.data)) if i["ref"].endswith(".jpg")][: args.n]
    rows = [run(settings, es, model, items, int(w), Path(args.data)) for w in args.workers.split(",")]
    embed = json.loads((ROOT / "results" / "embed.json").read_text()) if (ROOT / "results" / "embed.json").exists() else {}
    ref = next((r["pipeline_img_s"] for r in embed.get("rows", []) if r["backbone"] == args.backbone), None)
    for row in rows:
        row["vs_embedding_only"] = round(row["img_s"] / ref, 2) if ref else None
        print(json.dumps(row), flush=True)
    stack.stop_worker(settings)
    stack.start_worker(settings)
    write_result(f"ingest-{args.backbone}", {"backbone": args.backbone, "embedding_only_img_s": ref, "rows": rows})


if __name__ == "__main__":
    main()
