"""Query by image end to end (read + decode + embed + kNN) at N documents: p50/p95/p99.

The index holds N synthetic clustered vectors of the model's dims (plus the real grocery
embeddings' shape of documents), so the kNN part runs at full size; query images are real JPEGs.

Usage: python bench/query.py [--backbone mobilenet_v3_large] [--n 1000000] [--queries 200]
Needs the stack. Writes bench/results/query-<n>.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from elasticsearch.helpers import parallel_bulk

from common import DATA, ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.index.mappings import IndexOptions
from es_metric.model.modelfile import read_card
from es_metric.search.service import SearchRequest, image_vector, run_search
from knn import clustered, pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="mobilenet_v3_large")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index-type", default="int8_hnsw")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=3600)
    model = bench_model(args.backbone, 128, ROOT / "results" / f"bench-{args.backbone}.pt")
    card = read_card(model)
    alias = f"bench-query-{args.n}"
    if not es.indices.exists_alias(name=alias):
        create_versioned_index(es, alias, card, str(model), options=IndexOptions(args.index_type))
        info = index_info(es, alias)
        es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "-1"})
        x = clustered(args.n, 128, seed=5)
        actions = ({"_index": info.concrete, "_id": str(i),
                    "_source": {"image_vector": row.tolist(), "model_id": card["model_id"]}}
                   for i, row in enumerate(x))
        t0 = time.perf_counter()
        for ok, err in parallel_bulk(es, actions, chunk_size=1000, thread_count=2):
            if not ok:
                raise RuntimeError(err)
        es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "1s"})
        es.indices.refresh(index=info.concrete)
        es.indices.forcemerge(index=info.concrete, max_num_segments=1)
        print(f"indexed {args.n} vectors in {time.perf_counter() - t0:.0f} s", flush=True)
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
    row = {"backbone": args.backbone, "n": args.n, "index_type": args.index_type, "queries": len(files),
           "end_to_end_ms": pct(total), "es_took_ms": pct(took), "decode_embed_ms": pct(embed)}
    print(row, flush=True)
    write_result(f"query-{args.n}", row)
    if not args.keep:
        es.indices.delete(index=f"{alias}*")


if __name__ == "__main__":
    main()
