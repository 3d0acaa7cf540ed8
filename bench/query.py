"""Query by image end to end (read + decode + embed + kNN) at N documents: p50/p95/p99.

The index is what `esm mapping create` makes (lean: vectors out of `_source`) and holds N
documents as the worker writes them (bench/disk.py) over synthetic clustered vectors of the
model's dims, so the kNN part runs at full size; query images are real JPEGs. The query path
embeds with the runtime it would choose (ONNX Runtime when the model has an export, written here
when missing); the row says which. --disk adds the index's bytes per document on disk in the
steady state (bench/disk.py). The index is kept (--keep) or reused when it exists.

Usage: python bench/query.py [--backbone efficientnet-lite0] [--n 1000000] [--queries 200]
                             [--index-type hnsw] [--keep] [--disk]
Needs the stack. Writes bench/results/query-<n>[-<type>].json.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


from common import DATA, ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.index.mappings import IndexOptions
from es_metric.model.export import export_model
from es_metric.model.modelfile import read_card
from es_metric.model.runtime import export_path, load_embedder
from es_metric.search.service import SearchRequest, image_vector, run_search
from disk import docs, fill, steady_disk
from knn import clustered, pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index-type", default="hnsw")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--disk", action="store_true", help="also bytes per document on disk")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=3600)
    model = ROOT / "results" / f"bench-{args.backbone}.pt"
    if not model.is_file():
        bench_model(args.backbone, 128, model)
    if not export_path(model).is_file():
        export_model(model)
    card = read_card(model)
    alias = f"bench-query-{args.n}-{args.index_type.replace('_', '-')}"
    built_s = None
    if not es.indices.exists_alias(name=alias):
        create_versioned_index(es, alias, card, str(model), options=IndexOptions(args.index_type))
        info = index_info(es, alias)
        es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "-1"})
        built_s = fill(es, info.concrete, docs(clustered(args.n, 128, seed=5), info.concrete,
                                                card["model_id"]))
        es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "1s"})
        print(f"indexed {args.n} documents in {built_s:.0f} s (bulk + force-merge)", flush=True)
    runtime = load_embedder(model, settings.runtime, settings.device).runtime
    files = sorted(Path(DATA).rglob("*.jpg"))[:: 20][: args.queries]
    for f in sorted(Path(DATA).rglob("*.jpg"))[7::97][:20]:  # warm-up (not timed): model, page cache
        run_search(es, alias, SearchRequest(image=f.read_bytes(), k=10))
    info = index_info(es, alias)
    total, took, embed = [], [], []
    for f in files:
        t0 = time.perf_counter()
        res = run_search(es, alias, SearchRequest(image=f.read_bytes(), k=10))
        total.append((time.perf_counter() - t0) * 1000)
        took.append(res["took_ms"])
        t1 = time.perf_counter()  # the decode + embed share (the search path's own), measured apart
        image_vector(info, f.read_bytes())
        embed.append((time.perf_counter() - t1) * 1000)
    row = {"backbone": args.backbone, "runtime": runtime, "n": args.n, "index_type": args.index_type,
           "queries": len(files), "build_s": round(built_s, 1) if built_s else None,
           "end_to_end_ms": pct(total), "es_took_ms": pct(took), "decode_embed_ms": pct(embed),
           "load_avg_1m": round(os.getloadavg()[0], 2)}
    if args.disk:
        row["disk"] = steady_disk(es, index_info(es, alias).concrete, args.n)
    print(row, flush=True)
    write_result(f"query-{args.n}-{args.index_type}", row)
    if not args.keep:
        es.indices.delete(index=f"{alias}*")


if __name__ == "__main__":
    main()
