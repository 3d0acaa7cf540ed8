"""Follow-mode lag: from a document written by "the shop" to its vector being searchable.

The shop writes one product at a time (random gaps) into its own plain index while
`esm ingest --from-index --follow` runs; for each, the time until a search (no forced refresh)
finds it with a vector. Beside it, in the same run, the floor: the same kind of document
queued directly (enqueue -> worker -> searchable, no polling), which the follower can only
approach (it adds on average half a poll interval).

Usage: python bench/follow.py [--n 40] [--poll 1.0] [--backbone efficientnet-lite0] [--data DIR]
Needs the stack. Writes bench/results/follow.json.
"""
from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import add_vectors_to_existing, index_info
from es_metric.ingest.enqueue import enqueue, existing_roots, hit_item
from es_metric.ingest.sources import Source
from es_metric.model.card import read_card


def searchable(es, index: str, doc_id: str, field: str) -> bool:
    q = {"bool": {"filter": [{"ids": {"values": [doc_id]}}, {"exists": {"field": field}}]}}
    return es.count(index=index, query=q)["count"] == 1


def until(es, index, doc_id, field, began: float, timeout: float = 120) -> float:
    while not searchable(es, index, doc_id, field):
        if time.perf_counter() - began > timeout:
            raise SystemExit(f"{doc_id} not searchable after {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - began


def pct(xs: list[float], q: float) -> float:
    return round(statistics.quantiles(xs, n=100)[q - 1], 3) if len(xs) > 1 else round(xs[0], 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--data", type=Path, default=DATA, help="a folder of photos")
    args = ap.parse_args()
    photos = sorted(args.data.resolve().rglob("*.jpg"))
    rng = random.Random(0)
    rng.shuffle(photos)
    s, index = Settings.from_env(), "bench-follow-shop"
    es = make_client(s)
    (ROOT.parent / "runs").mkdir(exist_ok=True)
    model = bench_model(args.backbone, 256, ROOT.parent / "runs" / "follow-model.pt")
    es.options(ignore_status=404).indices.delete(index=index)
    es.indices.create(index=index, mappings={"properties": {"photo": {"type": "keyword"}}})
    add_vectors_to_existing(es, index, read_card(model), str(model))
    es.index(index=index, id="seed", document={"photo": str(photos[0])}, refresh=True)
    field = index_info(es, index).vector_field
    follower = subprocess.Popen([sys.executable, "-m", "es_metric.cli", "ingest", index, "--from-index",
                                 "--image-field", "photo", "--base-dir", str(args.data), "--follow",
                                 "--poll", str(args.poll)], stderr=subprocess.DEVNULL)
    try:
        until(es, index, "seed", field, time.perf_counter())  # the follower is up, the model loaded
        lags = []
        for i in range(args.n):
            time.sleep(rng.uniform(0.2, 2 * args.poll))
            began = time.perf_counter()
            es.index(index=index, id=f"f{i}", document={"photo": str(photos[1 + i])})
            lags.append(until(es, index, f"f{i}", field, began))
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(30)
    floor = []
    roots = existing_roots(s, es, index, str(args.data))
    for i in range(min(args.n, 20)):
        began = time.perf_counter()
        es.index(index=index, id=f"d{i}", document={"photo": str(photos[1 + args.n + i])})
        hit = {"_id": f"d{i}", "_source": {"photo": str(photos[1 + args.n + i])}}
        enqueue(s, es, index, Source([hit_item(hit, "photo", index, roots)[0]], [], roots), mode="update")
        floor.append(until(es, index, f"d{i}", field, began))
    es.indices.delete(index=index)
    result = {"n": args.n, "poll_s": args.poll, "backbone": args.backbone,
              "follow_p50_s": pct(lags, 50), "follow_p95_s": pct(lags, 95), "follow_max_s": round(max(lags), 3),
              "direct_p50_s": pct(floor, 50), "direct_p95_s": pct(floor, 95),
              "note": "searchable = a search without forced refresh finds the document with a vector "
                      "(index.refresh_interval 1 s); direct = queued without polling (the floor)"}
    print(result)
    write_result("follow", result)


if __name__ == "__main__":
    main()
