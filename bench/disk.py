"""Bytes per document on disk of the index `esm mapping create` makes, lean (vectors out of
_source, the default) vs --no-lean, same documents.

Documents as the worker writes them (vector rounded to 7 digits, image_path, image_sha256,
model_id, indexed_at) plus a label, over clustered unit vectors (bench/knn.py). Measured in the
steady state: bulk + refresh + force-merge, then a wait for the peer-recovery retention lease
(about 30 s) and one more merge, so the `_recovery_source` copy that a lean index keeps for a
while is pruned; then the store size and `_disk_usage` per field (vector index, _source).

Usage: python bench/disk.py [--n 100000] [--dims 128] [--types hnsw] [--variants lean,full]
Needs the stack (`esm stack up`). Writes bench/results/disk-<n>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
from elasticsearch.helpers import parallel_bulk

from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.mappings import IndexOptions, new_index_body
from knn import clustered

ROOT = Path(__file__).resolve().parent


def docs(x: np.ndarray, name: str, model_id: str = "efficientnet-lite0-multi-similarity-0123456789"):
    stamp = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc).isoformat(timespec="seconds")
    for i, row in enumerate(x):
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        yield {"_index": name, "_id": sha, "_source": {
            "image_vector": row.astype(float).round(7).tolist(),
            "image_path": f"/srv/catalogue/products/class_{i % 1000:04d}/img_{i:07d}.jpg",
            "image_sha256": sha, "model_id": model_id,
            "indexed_at": stamp, "label": f"class_{i % 1000:04d}"}}


def build(es, name: str, x: np.ndarray, kind: str, lean: bool) -> dict:
    card = {"model_id": "bench", "dims": x.shape[1], "similarity": "cosine", "backbone": "bench"}
    body = new_index_body(card, "/bench.pt", options=IndexOptions(kind), lean=lean)
    es.options(ignore_status=404).indices.delete(index=name)
    es.indices.create(index=name, mappings=body["mappings"],
                      settings={**body["settings"], "refresh_interval": "-1"})
    built_s = fill(es, name, docs(x, name))
    return {"type": kind, "lean": lean, "n": len(x), "dims": x.shape[1], "build_s": round(built_s, 1),
            **steady_disk(es, name, len(x))}


def fill(es, name: str, actions) -> float:
    """Bulk, refresh, force-merge to one segment; seconds taken."""
    t0 = time.perf_counter()
    for ok, info in parallel_bulk(es, actions, chunk_size=1000, thread_count=2, queue_size=4):
        if not ok:
            raise RuntimeError(info)
    es.indices.refresh(index=name)
    es.options(request_timeout=3600).indices.forcemerge(index=name, max_num_segments=1)
    return time.perf_counter() - t0


def steady_disk(es, name: str, n: int) -> dict:
    """Store bytes per document and per field (`_disk_usage`) in the steady state: after the
    retention lease has advanced and one more merge pruned `_recovery_source`."""
    es.indices.put_settings(index=name, settings={"refresh_interval": "1s"})
    time.sleep(40)  # the retention lease advances (~30 s); the next merge prunes _recovery_source
    es.index(index=name, id="extra", document={"label": "extra"}, refresh=True)
    es.options(request_timeout=3600).indices.forcemerge(index=name, max_num_segments=1)
    store = es.indices.stats(index=name, metric="store")["indices"][name]["total"]["store"]["size_in_bytes"]
    du = es.options(request_timeout=3600).indices.disk_usage(index=name, run_expensive_tasks=True)[name]
    fields = {f: v["total_in_bytes"] for f, v in du["fields"].items()}
    n += 1
    per = {f: round(b / n, 1) for f, b in fields.items()
           if f in ("image_vector", "_source", "_recovery_source", "_id", "image_sha256")}
    es.delete(index=name, id="extra", refresh=True)
    return {"store_bytes_per_doc": round(store / n, 1), "fields_bytes_per_doc": per,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--types", default="hnsw")
    ap.add_argument("--variants", default="lean,full")
    args = ap.parse_args()
    es = make_client(Settings.from_env(), request_timeout=600)
    x = clustered(args.n, args.dims)
    rows = []
    for kind in args.types.split(","):
        for variant in args.variants.split(","):
            name = f"bench-disk-{kind.replace('_', '-')}-{variant}"
            rows.append(build(es, name, x, kind, variant == "lean"))
            print(json.dumps(rows[-1]), flush=True)
            es.indices.delete(index=name)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"disk-{args.n}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
