"""What an ingest costs with incremental DBA, against the same ingest without it, at N documents.

Build (once; kept and reused): the index `esm mapping create` makes for a model whose card asks
for DBA (k = 10, alpha = 3; EfficientNet-Lite0 with an untrained 128-d head, ONNX Runtime),
holding N documents in the augmented steady state: the Grocery Store photos (all but a held-out
share) ingested through the workers, plus synthetic clustered unit vectors (bench/knn.py's
recipe, ~1,000 per cluster) written directly with the index's mapping. Every document's
augmented vector is exact: the photos' neighbours are computed among the photos, the synthetic
vectors' within their cluster, and the build checks that no photo is a top-k neighbour of a
synthetic vector nor the reverse (the counts are in the result). Markers keep the 10 nearest ids,
as a pass writes them (an index built before the lists were kept has none on its synthetic
documents: no photo enters their neighbourhoods); the build's disk usage is recorded.

Runs: P held-out photos (never the same twice) through the real ingest, `esm ingest INDEX
MANIFEST --json` as its own process: with incremental DBA, and with `--no-dba` (then `esm dba
INDEX`, untimed, brings the index back to the steady state), alternating which goes first.
Measured per run: the command's wall time, its peak RSS, the documents written during
the command (the index's primary indexing counter; the photos themselves are P of them).

After the runs, ``agreement``: the index's photos against one exact full pass over them (vector
agreement, leave-one-out MAP@R), exact for the whole index when no synthetic vector is nearer
to a photo than its k-th photo neighbour (counted).

Usage: python bench/dba.py --n 1000000 [--photos 5,100] [--rounds 2] [--keep] [--build-only]
       [--reset] [--agreement-only]
``--reset`` puts a kept index back to its built state (the runs' photos deleted, the photos'
exact vectors and lists rewritten), so the held-out photos serve again without a rebuild.
Needs the stack. Writes bench/results/dba-<n>.json (``--agreement-only``: dba-<n>-agreement.json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from elasticsearch.helpers import bulk, parallel_bulk, scan

from common import DATA as DEFAULT_DATA, ROOT, bench_model, write_result
from disk import fill
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.dbafields import DbaFields, augmented_doc, marker
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.index.vectors import hit_vector
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.sources import manifest_source
from es_metric.search.rerank import blend_rows
from es_metric.similarity import Metric
from es_metric.training.evaluate import map_at_r

K, ALPHA, DIMS, PER_CLUSTER = 10, 3.0, 128, 1000
SYNTHETIC = "/srv/catalogue/synthetic/"
# the photos (a worktree sits one level deeper than the checkout common.DATA assumes)
DATA = Path(os.environ.get("ESM_BENCH_DATA") or (DEFAULT_DATA if DEFAULT_DATA.is_dir()
                                                 else "/work/shared/data/grocery_store"))
STAMP = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


def dba_model() -> Path:
    """The bench model (untrained head) with a card that asks for DBA 10 and QE 10, exported."""
    from es_metric.model.export import export_model
    from es_metric.model.modelfile import load_model, save_model

    path = ROOT / "results" / "bench-dba-efficientnet-lite0.pt"
    if not path.is_file():
        plain = bench_model("efficientnet-lite0", DIMS, ROOT / "results" / "bench-dba-plain.pt")
        model = load_model(plain)
        card = {**model.card, "rerank": {"qe_k": K, "qe_alpha": ALPHA, "dba_k": K, "dba_alpha": ALPHA}}
        save_model(path, model.encoder, card)
        export_model(path)
    return path


def photos(held_every: int) -> tuple[list[Path], list[Path]]:
    """(photos of the index, held-out photos for the runs), deterministic."""
    files = sorted(p for p in Path(DATA).rglob("*.jpg") if "iconic" not in p.parts)
    held = files[::held_every]
    return [f for f in files if f not in set(held)], held


def manifest(files: list[Path], folder: Path) -> Path:
    path = folder / f"photos-{len(files)}-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps({"image_path": str(f), "label": f.parent.name}) + "\n"
                            for f in files))
    return path


def top_k(x: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (indices, similarities) of every row of ``x`` among the others (cosine)."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argpartition(-sims, k, axis=1)[:, :k]
    s = np.take_along_axis(sims, idx, 1)
    order = np.argsort(-s, axis=1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(s, order, 1)


def augment_block(x: np.ndarray, k: int = K, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(augmented vectors, k-th neighbour similarity, the k nearest's rows, best first) of a
    block whose neighbours lie inside it: one exact full pass over it."""
    idx, s = top_k(x, k)
    return blend_rows(x, x[idx], s, alpha, Metric.COSINE), s[:, -1], idx


def update_actions(index: str, fields: DbaFields, ids, raw, aug, kth, nearest):
    for doc_id, r, a, t, nn in zip(ids, raw, aug, kth, nearest):
        yield {"_op_type": "update", "_index": index, "_id": doc_id,
               "doc": augmented_doc(fields, a.astype(float).round(7).tolist(), r.astype(float).round(7).tolist(),
                                    marker(K, ALPHA, t, "bench-build", STAMP, [ids[j] for j in nn]))}


def synthetic_id(i: int) -> str:
    return hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()


def synthetic_docs(index: str, fields: DbaFields, model_id: str, x: np.ndarray, first: int):
    aug, kth, nearest = augment_block(x)
    for j, (r, a, t, nn) in enumerate(zip(x, aug, kth, nearest)):
        i = first + j
        sha = synthetic_id(i)
        yield {"_index": index, "_id": sha, "_source": {
            **augmented_doc(fields, a.astype(float).round(7).tolist(), r.astype(float).round(7).tolist(),
                            marker(K, ALPHA, t, "bench-build", STAMP, [synthetic_id(first + m) for m in nn])),
            "image_path": f"{SYNTHETIC}{i:07d}.jpg", "image_sha256": sha,
            "model_id": model_id, "indexed_at": STAMP, "label": f"synthetic-{i // PER_CLUSTER}"}}


def cluster(c: int, size: int) -> np.ndarray:
    """Cluster ``c`` of the synthetic part: unit vectors around a random centre (noise 0.35)."""
    rng = np.random.default_rng((5, c))
    x = rng.standard_normal(DIMS).astype(np.float32) + 0.35 * rng.standard_normal((size, DIMS)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def read_raw(es, info) -> tuple[list[str], np.ndarray]:
    ids, vecs = [], []
    for hit in scan(es, index=info.concrete, query={"docvalue_fields": [info.vector_field]}, _source=False):
        ids.append(hit["_id"])
        vecs.append(hit_vector(hit, info.vector_field))
    return ids, np.asarray(vecs, np.float32)


def build(es, settings, alias: str, n: int, held_every: int, model: Path, tmp: Path) -> dict:
    """The index in the augmented steady state; returns what the build did and how long it took."""
    from es_metric.model.modelfile import read_card
    from es_metric.model.runtime import card_for_runtime

    t0 = time.perf_counter()
    create_versioned_index(es, alias, card_for_runtime(read_card(model), settings.runtime), str(model))
    info = index_info(es, alias)
    fields = DbaFields.of(info.fields)
    mine, _ = photos(held_every)
    job = enqueue(settings, es, alias, manifest_source(manifest(mine, tmp), roots=(Path(DATA),)))
    wait(settings, job)
    make_searchable(es, job)
    ids, raw = read_raw(es, info)
    aug, kth, nearest = augment_block(raw)
    for ok, err in parallel_bulk(es, update_actions(info.concrete, fields, ids, raw, aug, kth, nearest),
                                 chunk_size=500):
        if not ok:
            raise RuntimeError(err)
    ingest_s = time.perf_counter() - t0
    es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "-1"})
    crossings = {"synthetic_with_a_photo_in_its_top_k": 0, "photos_with_a_synthetic_in_their_top_k": 0}
    photo_best = np.full(len(ids), -np.inf, np.float32)

    def docs():
        left, c = n - len(ids), 0
        while left > 0:
            x = cluster(c, min(PER_CLUSTER, left))
            cross = x @ raw.T
            crossings["synthetic_with_a_photo_in_its_top_k"] += int((cross.max(1) > augment_block(x)[1]).sum())
            np.maximum(photo_best, cross.max(0), out=photo_best)
            yield from synthetic_docs(info.concrete, fields, info.model_id, x, n - left)
            left, c = left - len(x), c + 1

    fill_s = fill(es, info.concrete, docs())
    crossings["photos_with_a_synthetic_in_their_top_k"] = int((photo_best > kth).sum())
    es.indices.put_settings(index=info.concrete, settings={"refresh_interval": "1s"})
    return {"photos": len(ids), "synthetic": n - len(ids), "photos_ingest_and_augment_s": round(ingest_s, 1),
            "synthetic_bulk_and_merge_s": round(fill_s, 1), **crossings, "disk": disk(es, info.concrete)}


def disk(es, concrete: str) -> dict:
    """The index's bytes on disk: in all, of ``_source`` (where the markers' neighbour lists
    live) and of each vector field (Elasticsearch's disk usage analysis, flushed first)."""
    es.indices.flush(index=concrete)
    usage = es.indices.disk_usage(index=concrete, run_expensive_tasks=True)[concrete]
    fields = usage.get("fields", {})
    return {"store_bytes": usage.get("store_size_in_bytes"),
            **{f"{name}_bytes": fields.get(name, {}).get("total_in_bytes")
               for name in ("_source", "image_vector", "image_vector_raw")}}


def indexing_total(es, index: str) -> int:
    stats = es.indices.stats(index=index, metric="indexing")["indices"][index]["primaries"]
    return int(stats["indexing"]["index_total"])


def run(es, alias: str, concrete: str, args: list[str], tmp: Path, roots: Path = DATA) -> dict:
    """One `esm` command in its own process: wall time, peak RSS (GNU time's, of that process
    alone: a child forked from this one would count this process's pages), documents written,
    its JSON summary. ``roots``: the folder its images may be read from."""
    env = {**os.environ, "ESM_IMAGE_ROOTS": str(roots), "ESM_PROGRESS": "0"}
    out, err, rss = tmp / "out.txt", tmp / "err.txt", tmp / "rss.txt"
    before = indexing_total(es, concrete)
    t0 = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        code = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", str(rss), shutil.which("esm") or "esm",
                                *args, "--json"], stdout=fo, stderr=fe, env=env)
    wall = time.perf_counter() - t0
    if code:
        raise RuntimeError(f"esm {' '.join(args)} failed: {err.read_text()[-2000:]}")
    es.indices.refresh(index=concrete)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(int(rss.read_text().split()[-1]) / 1024, 1),
            "documents_written": indexing_total(es, concrete) - before,
            "summary": json.loads(out.read_text().strip().splitlines()[-1])}


def rounds(es, alias: str, held: list[Path], sizes: list[int], n_rounds: int, tmp: Path,
           first: int = 0) -> list[dict]:
    concrete = index_info(es, alias).concrete
    rows, used = [], first
    for r in range(n_rounds):
        for size in sizes:
            for dba in ((True, False) if r % 2 == 0 else (False, True)):
                files, used = held[used:used + size], used + size
                if len(files) < size:
                    raise SystemExit(f"out of held-out photos after {used - size}: lower --held-every")
                m = manifest(files, tmp)
                row = {"round": r, "photos": size, "dba": dba,
                       **run(es, alias, concrete, ["ingest", alias, str(m)] + ([] if dba else ["--no-dba"]), tmp),
                       "load_avg_1m": round(os.getloadavg()[0], 2)}
                if not dba:  # back to the steady state (not timed as part of the ingest)
                    row["then_esm_dba"] = run(es, alias, concrete, ["dba", alias], tmp)
                print({k: v for k, v in row.items() if k != "summary"}, flush=True)
                rows.append(row)
    return rows


def photo_state(es, alias: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(raw vectors, stored searched vectors, labels, paths) of every photo document of the index."""
    info = index_info(es, alias)
    fields = DbaFields.of(info.fields)
    raw, stored, labels, paths = [], [], [], []
    query = {"bool": {"must_not": {"prefix": {"image_path": SYNTHETIC}}}}
    for hit in scan(es, index=info.concrete, query={"query": query, "docvalue_fields": [fields.raw, fields.vector]},
                    _source=["label", "image_path"]):
        raw.append(hit_vector(hit, fields.raw))
        stored.append(hit_vector(hit, fields.vector))
        labels.append(hit["_source"]["label"])
        paths.append(hit["_source"]["image_path"])
    return np.asarray(raw, np.float32), np.asarray(stored, np.float32), np.asarray(labels), paths


def loo_map_at_r(queries: np.ndarray, db: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out MAP@R: every photo's raw vector queries the others' ``db`` vectors."""
    sims = queries @ db.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)
    same = labels[order] == labels[:, None]
    r = (labels[:, None] == labels[None, :]).sum(1) - 1
    scores = [map_at_r(row, True, int(ri)) for row, ri in zip(same, r) if ri > 0]
    return float(np.mean(scores))


def agreement(es, alias: str, held: list[Path]) -> dict:
    """The photos after the runs (built by an exact pass, then ingested with incremental DBA or
    `--no-dba` + `esm dba`) against one exact full pass over the same photos: vector agreement
    and leave-one-out MAP@R (raw query, no QE). Exact only if no synthetic vector is nearer to a
    photo than its k-th photo neighbour: counted by regenerating the synthetic clusters."""
    raw, stored, labels, paths = photo_state(es, alias)
    full, kth, _ = augment_block(raw)
    diff = np.abs(stored - full).max(1)
    added = np.isin(paths, [str(f) for f in held])  # ingested by the runs (the rest: by the build)
    left = es.count(index=alias, query={"prefix": {"image_path": SYNTHETIC}})["count"]
    syn_best, c = np.full(len(raw), -np.inf, np.float32), 0
    while left > 0:
        x = cluster(c, min(PER_CLUSTER, left))
        np.maximum(syn_best, (raw @ x.T).max(1), out=syn_best)
        left, c = left - len(x), c + 1
    return {"photos": len(raw), "max_abs_diff": float(diff.max()),
            "within_1e-4": int((diff <= 1e-4).sum()), "over_1e-3": int((diff > 1e-3).sum()),
            "added_by_the_runs": int(added.sum()), "added_over_1e-3": int((diff[added] > 1e-3).sum()),
            "built_over_1e-3": int((diff[~added] > 1e-3).sum()),
            "min_cosine_to_full": float(np.min((stored * full).sum(1))),
            "photos_with_a_synthetic_in_their_top_k": int((syn_best > kth).sum()),
            "map_at_r_incremental": round(loo_map_at_r(raw, stored, labels), 5),
            "map_at_r_full_pass": round(loo_map_at_r(raw, full, labels), 5),
            "map_at_r_no_dba": round(loo_map_at_r(raw, raw, labels), 5)}


def reset(es, alias: str, held: list[Path]) -> dict:
    """A kept index back to its built state: the photos the runs added deleted, every photo's
    exact augmented vector written again. Refused when a run touched a synthetic document."""
    info = index_info(es, alias)
    fields = DbaFields.of(info.fields)
    touched = {"bool": {"filter": {"prefix": {"image_path": SYNTHETIC}},
                        "must_not": {"term": {f"{fields.marker}.run": "bench-build"}}}}
    if es.count(index=alias, query=touched)["count"]:
        raise SystemExit("a run augmented synthetic documents: rebuild instead of --reset")
    added = scan(es, index=info.concrete, query={"query": {"terms": {"image_path": [str(f) for f in held]}}},
                 _source=False)  # (no _delete_by_query: the local stack runs without the reindex module)
    gone = bulk(es, ({"_op_type": "delete", "_index": info.concrete, "_id": h["_id"]} for h in added),
                refresh=True)[0]
    ids, raw = [], []
    query = {"bool": {"must_not": {"prefix": {"image_path": SYNTHETIC}}}}
    for hit in scan(es, index=info.concrete, query={"query": query, "docvalue_fields": [fields.raw]}, _source=False):
        ids.append(hit["_id"])
        raw.append(hit_vector(hit, fields.raw))
    raw_a = np.asarray(raw, np.float32)
    aug, kth, nearest = augment_block(raw_a)
    for ok, err in parallel_bulk(es, update_actions(info.concrete, fields, ids, raw_a, aug, kth, nearest),
                                 chunk_size=500):
        if not ok:
            raise RuntimeError(err)
    es.indices.refresh(index=info.concrete)
    return {"deleted": int(gone), "photos_rewritten": len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--photos", default="5,100")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--held-every", type=int, default=12, help="every Nth photo is held out for the runs")
    ap.add_argument("--first", type=int, default=0, help="skip the first N held-out photos (used by a run before)")
    ap.add_argument("--keep", action="store_true", help="keep the index for the next run")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--reset", action="store_true",
                    help="first put a kept index back to its built state (the runs' photos deleted)")
    ap.add_argument("--agreement-only", action="store_true",
                    help="only compare the kept index's photos with a full pass (after a --keep run)")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=3600)
    alias = f"bench-dba-{args.n}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-dba-"))
    result = {"n": args.n, "k": K, "alpha": ALPHA}
    if not es.indices.exists_alias(name=alias):
        result["build"] = build(es, settings, alias, args.n, args.held_every, dba_model(), tmp)
        print(result["build"], flush=True)
    held = photos(args.held_every)[1]
    if args.agreement_only:
        write_result(f"dba-{args.n}-agreement", {"n": args.n, "agreement": agreement(es, alias, held)})
        return
    if args.reset and "build" not in result:
        result["reset"] = reset(es, alias, held)
        print(result["reset"], flush=True)
    if not args.build_only:
        result["runs"] = rounds(es, alias, held, [int(s) for s in args.photos.split(",")], args.rounds, tmp, args.first)
        result["agreement"] = agreement(es, alias, held)
    result["documents"] = int(es.count(index=alias)["count"])
    write_result(f"dba-{args.n}" + ("-build" if args.build_only else ""), result)
    shutil.rmtree(tmp, ignore_errors=True)
    if not args.keep:
        es.indices.delete(index=f"{alias}-*")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
