"""What collapse, diversify, explain and facets cost a search, in-process through the Python
API's path (run_search), beside the image-only search (one kNN request) as the floor.

Each query is an indexed photo (``like``: its stored vector, query expansion as the index's
card says) with the text of its product's coarse class; settings interleaved query by query so
the machine's load falls on all alike.

Usage: python bench/ranking_latency.py INDEX [--n 60] [--collapse label]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

SETTINGS = {
    "image only": {},
    "image + text (default fusion)": {"text": True},
    "+ collapse": {"text": True, "collapse": True},
    "+ diversify 0.7": {"text": True, "diversify": 0.7},
    "+ explain": {"text": True, "explain": True},
    "+ 2 facets": {"text": True, "facets": ["label", "coarse_class.keyword"]},
    "image only + collapse": {"collapse": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--collapse", default="label")
    args = ap.parse_args()

    from elasticsearch.helpers import scan

    from es_metric.config import Settings
    from es_metric.index.client import make_client
    from es_metric.search.service import SearchRequest, resolve, run_search

    es = make_client(Settings.from_env())
    info, _ = resolve(es, args.index)
    docs = sorted((h["_id"], h["_source"]["coarse_class"]) for h in scan(
        es, index=info.concrete, _source=["coarse_class"], query={"query": {"match_all": {}}}))
    queries = docs[::max(1, len(docs) // args.n)][:args.n]
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for doc_id, coarse in queries:
        for name, s in SETTINGS.items():
            req = SearchRequest(like=[doc_id], text=coarse.replace("-", " ") if s.get("text") else None,
                                collapse=args.collapse if s.get("collapse") else None,
                                diversify=s.get("diversify"), explain=bool(s.get("explain")),
                                facets=s.get("facets", []), k=10)
            t0 = time.perf_counter()
            run_search(es, args.index, req)
            times[name].append(1000 * (time.perf_counter() - t0))
    load = os.getloadavg()[0]
    print(f"{len(queries)} queries on {info.concrete}, load average {load:.1f} on {os.cpu_count()} cores")
    print("| search | client p50 ms | p95 ms | × image only (p50) |\n|---|---|---|---|")
    floor = statistics.median(times["image only"])
    for name, t in times.items():
        t = sorted(t)
        p50, p95 = statistics.median(t), t[int(0.95 * (len(t) - 1))]
        print(f"| {name} | {p50:.0f} | {p95:.0f} | ×{p50 / floor:.1f} |")


if __name__ == "__main__":
    main()
