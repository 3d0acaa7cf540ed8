"""kNN search in the local Elasticsearch vs FAISS (flat and HNSW), same vectors, one run.

Synthetic clustered unit vectors (N x D), each document with a ``tag`` keyword (1 % selectivity
for the filtered queries). For each ES index type: index time (bulk + refresh, then force-merge),
disk bytes per vector, query latency p50/p95/p99 seen by the client and ES's own ``took``, QPS,
recall@10 against exact brute force; with and without the filter. FAISS flat and HNSW on the
same vectors as the in-process peer.

Quantised types are built without a mapping-level rescore and measured with each query-time
``rescore_vector.oversample`` of --oversample (0: none; the mapping default of ``esm mapping
create`` is 3, which queries get without asking).

Usage: python bench/knn.py [--n 100000] [--dims 128,512] [--types hnsw,int8_hnsw,bbq_hnsw] [--queries 200]
                           [--num-candidates 100,200,500] [--oversample 0,2,3,5]
Needs the stack (`esm stack up`). Writes bench/results/knn-<n>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from elasticsearch.helpers import parallel_bulk

from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.mappings import RESCORED_TYPES, IndexOptions

ROOT = Path(__file__).resolve().parent
TAGS = 100


def clustered(n: int, d: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    sims = q @ x.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    return np.argsort(-sims, axis=1)[:, :k]


def pct(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2)}


def build_es(es, name: str, x: np.ndarray, kind: str) -> dict:
    es.options(ignore_status=404).indices.delete(index=name)
    options = IndexOptions(kind, oversample=0).as_dict(x.shape[1])
    es.indices.create(index=name, settings={"number_of_shards": 1, "number_of_replicas": 0,
                                            "refresh_interval": "-1"},
                      mappings={"properties": {"v": {"type": "dense_vector", "dims": x.shape[1],
                                                     "index": True, "similarity": "dot_product",
                                                     "index_options": options},
                                               "tag": {"type": "keyword"}}})
    actions = ({"_index": name, "_id": str(i), "_source": {"v": row.tolist(), "tag": f"t{i % TAGS}"}}
               for i, row in enumerate(x))
    t0 = time.perf_counter()
    for ok, info in parallel_bulk(es, actions, chunk_size=1000, thread_count=2, queue_size=4):
        if not ok:
            raise RuntimeError(info)
    es.indices.refresh(index=name)
    indexed = time.perf_counter() - t0
    t1 = time.perf_counter()
    es.options(request_timeout=3600).indices.forcemerge(index=name, max_num_segments=1)
    merged = time.perf_counter() - t1
    es.indices.put_settings(index=name, settings={"refresh_interval": "1s"})
    size = es.indices.stats(index=name, metric="store")["indices"][name]["total"]["store"]["size_in_bytes"]
    return {"index_s": round(indexed, 1), "forcemerge_s": round(merged, 1),
            "bytes_per_vector": round(size / len(x), 1)}


def query_es(es, name: str, q: np.ndarray, truth: np.ndarray, k: int, num_candidates: int,
             filt: dict | None, oversample: float = 0) -> dict:
    lat, took, recalls = [], [], []
    for i, vec in enumerate(q):
        knn = {"field": "v", "query_vector": vec.tolist(), "k": k, "num_candidates": num_candidates}
        if filt:
            knn["filter"] = filt
        if oversample:
            knn["rescore_vector"] = {"oversample": oversample}
        t0 = time.perf_counter()
        resp = es.search(index=name, knn=knn, size=k, source=False, track_total_hits=False)
        lat.append((time.perf_counter() - t0) * 1000)
        took.append(resp["took"])
        got = {int(h["_id"]) for h in resp["hits"]["hits"]}
        recalls.append(len(got & set(truth[i].tolist())) / k)
    return {"client_ms": pct(lat), "es_took_ms": pct(took), "qps": round(len(q) / (sum(lat) / 1000), 1),
            "recall_at_10": round(float(np.mean(recalls)), 4)}


def faiss_peer(x: np.ndarray, q: np.ndarray, truth: np.ndarray, k: int) -> list[dict]:
    import faiss

    rows = []
    for label, index in (("faiss-flat", faiss.IndexFlatIP(x.shape[1])),
                         ("faiss-hnsw", faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT))):
        if label == "faiss-hnsw":
            index.hnsw.efConstruction = 100
            index.hnsw.efSearch = 100
        t0 = time.perf_counter()
        index.add(x)
        build = time.perf_counter() - t0
        lat, recalls = [], []
        for i, vec in enumerate(q):
            t1 = time.perf_counter()
            _, ids = index.search(vec[None, :], k)
            lat.append((time.perf_counter() - t1) * 1000)
            recalls.append(len(set(ids[0].tolist()) & set(truth[i].tolist())) / k)
        rows.append({"engine": label, "build_s": round(build, 2), "client_ms": pct(lat),
                     "recall_at_10": round(float(np.mean(recalls)), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--types", default="hnsw,int8_hnsw,bbq_hnsw")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--num-candidates", default="100",
                    help="comma list: the first is the headline figure, the others a recall sweep")
    ap.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    ap.add_argument("--oversample", default="0,3",
                    help="quantised types: query-time rescore oversample factors (0: none)")
    ap.add_argument("--no-faiss", action="store_true", help="leave out the FAISS peer")
    ap.add_argument("--reuse", action="store_true",
                    help="query an index kept by an earlier --keep run of the same --n and type "
                         "instead of building it again (build figures then left out)")
    args = ap.parse_args()
    es = make_client(Settings.from_env(), request_timeout=600)
    candidates = [int(c) for c in args.num_candidates.split(",")]
    results = []
    for d in map(int, args.dims.split(",")):
        x = clustered(args.n + args.queries, d)
        q, x = x[: args.queries], x[args.queries:]
        truth = exact_top(x, q, 10)
        tag_mask = (np.arange(len(x)) % TAGS) == 7
        truth_f = exact_top(x, q, 10, tag_mask)
        peers = [] if args.no_faiss else faiss_peer(x, q, truth, 10)
        for row in peers:
            row.update(dims=d, n=len(x))
            results.append(row)
            print(json.dumps(row), flush=True)
        for kind in args.types.split(","):
            name = f"bench-knn-{d}-{kind.replace('_', '-')}"
            reused = args.reuse and es.indices.exists(index=name) and \
                es.count(index=name)["count"] == len(x)
            built = {"reused_index": True} if reused else build_es(es, name, x, kind)
            row = {"engine": f"es-{kind}", "dims": d, "n": len(x), **built}
            # warm-up, result discarded: a freshly merged segment is not in the page cache yet
            query_es(es, name, q[:50], truth[:50], 10, candidates[0], None)
            first, *more = candidates
            row["plain"] = query_es(es, name, q, truth, 10, first, None)
            row["filtered_1pct"] = query_es(es, name, q, truth_f, 10, first, {"term": {"tag": "t7"}})
            row["num_candidates"] = first
            if more:  # recall / latency trade-off of the same index
                row["sweep"] = [{"num_candidates": nc, **query_es(es, name, q, truth, 10, nc, None)}
                                for nc in more]
            if kind in RESCORED_TYPES:  # the quantised graph alone, then rescored with full vectors
                row["rescore"] = [{"num_candidates": nc, "oversample": f,
                                   **query_es(es, name, q, truth, 10, nc, None, f)}
                                  for nc in candidates for f in map(float, args.oversample.split(","))]
            row["load_avg_1m"] = round(os.getloadavg()[0], 2)
            hnsw = next((p for p in peers if p["engine"] == "faiss-hnsw"), None)
            if hnsw and not reused:
                build_s = row["index_s"] + row["forcemerge_s"]
                row["build_vs_faiss_hnsw"] = round(build_s / max(hnsw["build_s"], 1e-9), 1)
            results.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                es.indices.delete(index=name)
    save_rows(ROOT / "results" / f"knn-{args.n}.json", results)


def save_rows(path: Path, rows: list[dict]) -> None:
    """Merge into the result file: a row replaces the earlier row of the same engine and dims,
    so runs of different index types at one size accumulate (each row keeps the FAISS ratio of
    its own run)."""
    old = json.loads(path.read_text()) if path.exists() else []
    fresh = {(r["engine"], r["dims"]) for r in rows}
    merged = [r for r in old if (r["engine"], r["dims"]) not in fresh] + rows
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
