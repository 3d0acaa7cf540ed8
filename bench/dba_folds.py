"""Issue 23's quality protocol for incremental DBA: Grocery folds ingested in batches with
incremental DBA, MAP@R against one full pass.

For each fold of RUNS (RUNS/fold<N>/default.pt: a model trained on the other classes;
RUNS/fold<N>/test/<class>/*.jpg: the fold's held-out classes, labels = class folder):

1. a fresh index, `esm mapping create bench-dba-fold<N> --model RUNS/fold<N>/default.pt`. When
   the index runs DBA after ingests (a new model's card records ``dba_k``), nothing else; else
   `esm dba INDEX` after the first batch records k and alpha, so the next ingests augment;
2. the fold's photos, shuffled with ``--seed``, in ``--batches`` batches, each `esm ingest INDEX
   MANIFEST --wait --json` as its own process (bench/dba.py's ``run``: wall time, the index's
   primary indexing counter over the command, the command's JSON summary whose ``dba`` part
   counts what the incremental pass wrote, against the (k + 1) x batch bound), the load average;
3. after the last batch, every document's raw and searched vectors are read:
   MAP@R incremental (bench/dba.py's ``loo_map_at_r``: each photo's raw vector queries the other
   photos' searched vectors, no query expansion, R = same-class count - 1), and per document
   the distance to one exact full pass computed in memory (bench/dba.py's ``augment_block``)
   and whether its kept neighbour list is the exact one;
4. `esm dba INDEX --full`, then the same reading: MAP@R of the full pass;
5. MAP@R of the raw model vectors (no DBA).

Usage: python bench/dba_folds.py RUNS [--folds 0,1,2] [--batches 10] [--seed 0] [--keep]
Needs the stack. Writes bench/results/dba-folds.json. The index of a fold is deleted when its
fold is done (``--keep``: kept until the next run of the fold).
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
from pathlib import Path

import numpy as np
from elasticsearch.helpers import scan

from common import ROOT, write_result
from dba import augment_block, loo_map_at_r, run, top_k
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.dbafields import DbaFields
from es_metric.index.indices import index_info
from es_metric.index.vectors import hit_vector
from es_metric.search.dba import REACH, card_setting, runs_after_ingest

IMAGES = (".jpg", ".jpeg", ".png")


def fold_inputs(runs: Path, fold: int) -> tuple[Path, list[tuple[Path, str]]]:
    """(the fold's model, its photos as (real path, class folder), sorted); SystemExit naming
    what is missing."""
    model, test = runs / f"fold{fold}" / "default.pt", runs / f"fold{fold}" / "test"
    if not model.is_file() or not test.is_dir():
        raise SystemExit(f"{runs}: fold {fold} needs {model} (a model trained on the other classes) "
                         f"and {test}/<class>/*.jpg (its held-out classes); missing")
    photos = sorted((p.resolve(), p.parent.name) for p in test.glob("*/*") if p.suffix.lower() in IMAGES)
    if not photos:
        raise SystemExit(f"{test}: no photos in its class folders")
    return model, photos


def manifest(batch: list[tuple[Path, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"image_path": str(f), "label": label}) + "\n" for f, label in batch))
    return path


def dig(src: dict, dotted: str):
    for key in dotted.split("."):
        src = (src or {}).get(key)
    return src


def fold_state(es, alias: str) -> dict:
    """Every document's id, path, raw and searched vectors, label and kept neighbour list."""
    info = index_info(es, alias)
    fields = DbaFields.of(info.fields)
    ids, raw, stored, labels, lists, runs, paths = [], [], [], [], [], [], []
    for hit in scan(es, index=info.concrete, query={"docvalue_fields": [fields.raw, fields.vector]},
                    _source=["label", "image_path", fields.marker]):
        ids.append(hit["_id"])
        paths.append(hit["_source"]["image_path"])
        raw.append(hit_vector(hit, fields.raw) or hit_vector(hit, fields.vector))
        stored.append(hit_vector(hit, fields.vector))
        labels.append(hit["_source"]["label"])
        mark = dig(hit["_source"], fields.marker) or {}
        lists.append(mark.get("ids"))
        runs.append(mark.get("run"))
    return {"ids": ids, "raw": np.asarray(raw, np.float32), "stored": np.asarray(stored, np.float32),
            "labels": np.asarray(labels), "lists": lists, "runs": runs, "paths": paths}


def against_full(state: dict, k: int, alpha: float) -> dict:
    """MAP@R of the searched vectors, and how they differ from one exact full pass (in memory)."""
    raw, stored, labels, ids = state["raw"], state["stored"], state["labels"], state["ids"]
    full, _, nearest = augment_block(raw, k, alpha)
    diff = np.abs(stored - full).max(1)
    exact = [[ids[j] for j in row] for row in nearest]
    wrong_list = [i for i, (kept, ex) in enumerate(zip(state["lists"], exact)) if kept != ex]
    missing = [len(set(ex) - set(state["lists"][i] or [])) for i, ex in enumerate(exact)]
    over = diff > 1e-3
    return {"documents": len(ids), "map_at_r": round(loo_map_at_r(raw, stored, labels), 5),
            "map_at_r_exact_full_in_memory": round(loo_map_at_r(raw, full, labels), 5),
            "max_abs_diff_to_exact_full": round(float(diff.max()), 6),
            "within_1e-4": int((diff <= 1e-4).sum()), "over_1e-3": int(over.sum()),
            "min_cosine_to_exact_full": round(float(np.min((stored * full).sum(1))), 6),
            "not_augmented": sum(1 for r in state["lists"] if r is None),
            "list_not_exact": len(wrong_list),
            "list_not_exact_and_over_1e-3": int(sum(over[i] for i in wrong_list)),
            "true_neighbours_missing_from_lists": int(sum(missing)),
            "over_1e-3_with_exact_list": int(sum(1 for i in np.flatnonzero(over) if i not in set(wrong_list)))}


def drop(es, alias: str) -> None:
    """Delete the fold's indices (by name: wildcard deletes may be refused)."""
    for name in es.indices.get(index=f"{alias}-*", allow_no_indices=True, ignore_unavailable=True):
        es.indices.delete(index=name)


def why(state: dict, batch_of: dict[str, int], k: int) -> dict:
    """Each true k-nearest neighbour ``m`` missing from a document ``d``'s kept list, by when
    ``m`` came: in an earlier batch than ``d`` or the same one (then ``d``'s own kNN search
    did not return it: HNSW), or later (then ``d`` was an existing document that ``m``
    entered: ``d``'s rank among ``m``'s nearest then present tells whether it lay within the
    REACH x k a new document looks at, or beyond)."""
    raw, ids = state["raw"], state["ids"]
    batch = np.array([batch_of[p] for p in state["paths"]])
    sims = raw @ raw.T
    np.fill_diagonal(sims, -np.inf)
    exact, _ = top_k(raw, k)
    out = {"earlier_batch": 0, "same_batch": 0, "later_within_reach": 0, "later_beyond_reach": 0,
           "ranks_beyond_reach": []}
    for d, kept in enumerate(state["lists"]):
        for m in exact[d]:
            if ids[m] in set(kept or []):
                continue
            if batch[m] < batch[d]:
                out["earlier_batch"] += 1
            elif batch[m] == batch[d]:
                out["same_batch"] += 1
            else:
                rank = int(((batch < batch[m]) & (sims[m] > sims[m, d])).sum())  # of the earlier ones
                within = rank < REACH * k + 1
                out["later_within_reach" if within else "later_beyond_reach"] += 1
                if not within:
                    out["ranks_beyond_reach"].append(rank + 1)
    out["ranks_beyond_reach"].sort()
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fold_run(es, runs: Path, fold: int, batches: int, seed: int, keep: bool, tmp: Path) -> dict:
    model, photos = fold_inputs(runs, fold)
    roots = Path(os.path.commonpath([str(f) for f, _ in photos]))
    roots = roots if roots.is_dir() else roots.parent
    alias = f"bench-dba-fold{fold}"
    drop(es, alias)
    subprocess.run([shutil.which("esm") or "esm", "mapping", "create", alias, "--model", str(model)],
                   check=True, stdout=subprocess.DEVNULL)
    info = index_info(es, alias)
    concrete = info.concrete
    from_card = runs_after_ingest(info)
    k, alpha = card_setting(info)
    order = np.random.default_rng(seed).permutation(len(photos))
    parts = [[photos[i] for i in part] for part in np.array_split(order, batches)]
    result = {"fold": fold, "model": str(model), "model_id": info.model_id, "photos": len(photos),
              "classes": len({c for _, c in photos}), "k": k, "alpha": alpha,
              "dba_after_ingests_from_card": from_card, "load_avg_start": load(), "ingests": []}
    print(f"fold {fold}: {len(photos)} photos, {result['classes']} classes, k={k} alpha={alpha}, "
          f"DBA after ingests from the card: {from_card}", flush=True)
    for b, part in enumerate(parts):
        r = run(es, alias, concrete, ["ingest", alias, str(manifest(part, tmp / f"fold{fold}-{b}.jsonl")), "--wait"],
                tmp, roots)
        d = r["summary"].get("dba") or {}
        row = {"batch": b, "photos": len(part), "wall_s": r["wall_s"], "indexing_ops": r["documents_written"],
               "dba_written": d.get("written"), "bound": (k + 1) * len(part),
               **{key: d.get(key) for key in ("documents", "neighbours", "searched", "deferred", "failed", "total_s")},
               "indexed": r["summary"].get("indexed"), "ingest_failed": r["summary"].get("failed"),
               "load_avg": load()}
        if b == 0 and not from_card:  # record k and alpha: the next ingests augment incrementally
            row["then_esm_dba"] = run(es, alias, concrete, ["dba", alias], tmp, roots)["summary"]
        print(row, flush=True)
        result["ingests"].append(row)
    result["documents"] = int(es.count(index=alias)["count"])
    state = fold_state(es, alias)
    result["incremental"] = against_full(state, k, alpha)
    batch_of = {str(f): b for b, part in enumerate(parts) for f, _ in part}
    result["incremental"]["missing_neighbours_by_arrival"] = why(state, batch_of, k)
    print("incremental", result["incremental"], flush=True)
    full = run(es, alias, concrete, ["dba", alias, "--full"], tmp, roots)
    result["full_pass_run"] = {"wall_s": full["wall_s"], "indexing_ops": full["documents_written"],
                               "summary": full["summary"], "load_avg": load()}
    state = fold_state(es, alias)
    result["full_pass"] = against_full(state, k, alpha)
    result["no_dba"] = {"map_at_r": round(loo_map_at_r(state["raw"], state["raw"], state["labels"]), 5)}
    delta = result["incremental"]["map_at_r"] - result["full_pass"]["map_at_r"]
    result["delta_incremental_minus_full"] = round(delta, 5)
    result["max_dba_written_per_ingest"] = max(r["dba_written"] or 0 for r in result["ingests"])
    result["load_avg_end"] = load()
    print("full pass", result["full_pass"], "no dba", result["no_dba"], flush=True)
    if not keep:
        drop(es, alias)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="folder with fold<N>/default.pt and fold<N>/test/<class>/")
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep each fold's index")
    args = ap.parse_args()
    if not args.runs.is_dir():
        raise SystemExit(f"{args.runs}: no such folder (the runs directory with fold<N>/default.pt "
                         "and fold<N>/test/<class>/ photos: `esm split GROCERY --out RUNS/fold<N> "
                         "--protocol class-disjoint --folds 3 --fold <N> --exclude iconic`, `esm train "
                         "RUNS/fold<N>/train --out RUNS/fold<N>/default.pt --protocol class-disjoint`)")
    folds = [int(f) for f in args.folds.split(",")]
    for fold in folds:  # all inputs present before anything runs
        fold_inputs(args.runs, fold)
    es = make_client(Settings.from_env(), request_timeout=3600)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dba-folds-"))
    t0 = time.perf_counter()
    result = {"runs": str(args.runs), "batches": args.batches, "seed": args.seed, "folds": []}
    for fold in folds:
        result["folds"].append(fold_run(es, args.runs, fold, args.batches, args.seed, args.keep, tmp))
        write_result("dba-folds", result)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    write_result("dba-folds", result)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
