"""Correctness of the search path on real embeddings.

1. Index an image folder (one sub-folder per class) with a model through the Celery workers.
2. For every document: ES kNN top-10 (its own stored vector, itself excluded, default
   num_candidates) vs exact brute-force top-10 over the same stored vectors -> recall@10.
3. MAP@R of the search path (top-R ES results, R = other images of the class) vs the MAP@R
   `esm evaluate` reports for the same model and folder, both with the re-ranking the model
   card records (the DBA pass `esm ingest` runs, query expansion on every search); the search
   path is also measured without query expansion.
4. Query latency p50/p95 (client-observed, and ES `took`), with and without query expansion.

With --dba-batches N (issue 23): the folder is ingested in N batches, each followed by the
incremental DBA pass `esm ingest` runs; MAP@R is measured, then `esm dba --full` rebuilds every
vector and MAP@R is measured again on the same documents (and how many vectors differ).

Usage: python bench/search_quality.py DATA_DIR MODEL [--index NAME] [--index-type hnsw]
                                      [--dba-batches N] [--name NAME]
Needs the stack. Writes bench/results/search_quality-<index type | name>.json.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from elasticsearch.helpers import scan

from common import write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.index.mappings import IndexOptions
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.index.vectors import hit_vector
from es_metric.ingest.sources import Source, folder_source
from es_metric.model.modelfile import read_card
from es_metric.search.dba import augment_if_recorded
from es_metric.search.dbafull import rebuild
from es_metric.search.service import SearchRequest, run_search
from es_metric.similarity import Metric
from es_metric.training.evaluate import evaluate_folder, map_at_r
from knn import pct


def stored(es, index: str, field: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Ids, searched vectors (from doc values: a lean index keeps them out of _source), labels."""
    ids, vecs, labels = [], [], []
    for hit in scan(es, index=index, _source=["label"], query={"docvalue_fields": [field]}):
        ids.append(hit["_id"])
        vecs.append(hit_vector(hit, field))
        labels.append(hit["_source"]["label"])
    return ids, np.asarray(vecs, np.float32), labels


def ingest(settings, es, index: str, data: str, batches: int) -> list[dict]:
    """The folder through the workers, in ``batches`` shuffled batches, each followed by what
    `esm ingest` runs after its wait (the incremental DBA pass); the passes' summaries."""
    source = folder_source(data)
    items = list(source.items)
    np.random.default_rng(0).shuffle(items)
    passes = []
    for part in np.array_split(np.arange(len(items)), batches):
        job = enqueue(settings, es, index, Source([items[i] for i in part], [], source.roots))
        wait(settings, job)
        make_searchable(es, job)
        passes.append(augment_if_recorded(es, index, job.started_at))
    return passes


def map_at_r_search(es, index: str, ids: list[str], labels: list[str]) -> float:
    """MAP@R of `esm search --like ID` for every document, with the card's query expansion."""
    label_arr, maps = np.asarray(labels), []
    for i, doc_id in enumerate(ids):
        r = int((label_arr == label_arr[i]).sum() - 1)
        res = run_search(es, index, SearchRequest(like=doc_id, k=max(10, r)))
        maps.append(map_at_r([h["source"]["label"] for h in res["hits"]], labels[i], r))
    return round(float(np.mean(maps)), 4)


def incremental_vs_full(settings, es, args) -> dict:
    """MAP@R after N batches with incremental DBA, then after one full pass, same documents."""
    passes = ingest(settings, es, args.index, args.data, args.dba_batches)
    info = index_info(es, args.index)
    ids, inc, labels = stored(es, info.concrete, info.vector_field)
    inc_map = map_at_r_search(es, args.index, ids, labels)
    full = rebuild(es, args.index)
    ids2, rebuilt, _ = stored(es, info.concrete, info.vector_field)
    rebuilt = rebuilt[[ids2.index(i) for i in ids]]
    full_map = map_at_r_search(es, args.index, ids, labels)
    evaluated, _ = evaluate_folder(args.data, model_path=args.model)
    return {"documents": len(ids), "batches": args.dba_batches, "passes": passes,
            "written_by_incremental": sum(p["written"] for p in passes),
            "deferred": sum(p["deferred"] for p in passes),
            "vectors_differing_from_full": int((np.abs(inc - rebuilt).max(1) > 1e-4).sum()),
            "map_at_r_incremental": inc_map, "map_at_r_full_pass": full_map,
            "difference": round(inc_map - full_map, 4), "full_pass": full,
            "map_at_r_esm_evaluate": round(evaluated["map_at_r"], 4),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data")
    ap.add_argument("model")
    ap.add_argument("--index", default="bench-quality")
    ap.add_argument("--index-type", default="hnsw")
    ap.add_argument("--dba-batches", type=int, default=0, help="ingest in N batches: incremental DBA vs full")
    ap.add_argument("--name", default=None, help="result file suffix (default: the index type)")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=120)
    card = read_card(args.model)
    es.options(ignore_status=404).indices.delete(index=f"{args.index}*")
    create_versioned_index(es, args.index, card, args.model, options=IndexOptions(args.index_type))
    if args.dba_batches:
        row = {"model_id": card["model_id"], "rerank": card.get("rerank"), "data": args.data,
               **incremental_vs_full(settings, es, args)}
        print(row)
        write_result(f"search_quality-{args.name or 'dba-batches'}", row)
        return
    job = enqueue(settings, es, args.index, folder_source(args.data))
    wait(settings, job)
    make_searchable(es, job)
    dba = augment_if_recorded(es, args.index)  # what `esm ingest` does after the workers
    info = index_info(es, args.index)
    ids, vecs, labels = stored(es, info.concrete, info.vector_field)
    metric = Metric(info.similarity)
    sims = vecs @ vecs.T if metric is Metric.COSINE else -np.linalg.norm(vecs[:, None] - vecs[None], axis=2)
    np.fill_diagonal(sims, -np.inf)
    exact = np.argsort(-sims, axis=1)[:, :10]
    label_arr = np.asarray(labels)
    recalls, runs = [], {}
    for qe_k in (None, 0):  # the card's query expansion, then none
        maps, lat, took = [], [], []
        for i, doc_id in enumerate(ids):
            r = int((label_arr == label_arr[i]).sum() - 1)
            t0 = time.perf_counter()
            res = run_search(es, args.index, SearchRequest(like=doc_id, k=max(10, r), qe_k=qe_k))
            lat.append((time.perf_counter() - t0) * 1000)
            took.append(res["took_ms"])
            got = [h["id"] for h in res["hits"]]
            if qe_k == 0:
                recalls.append(len(set(got[:10]) & {ids[j] for j in exact[i]}) / 10)
            maps.append(map_at_r([h["source"]["label"] for h in res["hits"]], labels[i], r))
        runs["card" if qe_k is None else "no_qe"] = {"map_at_r": round(float(np.mean(maps)), 4),
                                                     "client_ms": pct(lat), "es_took_ms": pct(took)}
    evaluated, _ = evaluate_folder(args.data, model_path=args.model)
    row = {"index_type": args.index_type, "documents": len(ids), "model_id": card["model_id"],
           "rerank": card.get("rerank"), "dba_pass": dba,
           "recall_at_10_vs_exact": round(float(np.mean(recalls)), 4),
           "map_at_r_search_path": runs["card"]["map_at_r"],
           "map_at_r_esm_evaluate": round(evaluated["map_at_r"], 4),
           "map_at_r_search_path_without_qe": runs["no_qe"]["map_at_r"],
           "client_ms": runs["card"]["client_ms"], "es_took_ms": runs["card"]["es_took_ms"],
           "client_ms_without_qe": runs["no_qe"]["client_ms"]}
    print(row)
    write_result(f"search_quality-{args.index_type}", row)


if __name__ == "__main__":
    main()
