"""``esm duplicates`` on the Grocery Store photos with planted copies: precision and recall.

N photos of a photo folder (a class fold's test part: products the model never saw) get one
planted copy each, the kinds in turn: the same bytes (exact), JPEG quality 70, resized to
90 %, cropped by 4 % on every side. The folder's photos and the copies are indexed through the
workers (with the DBA pass ``esm ingest`` runs) and ``find_duplicates`` (what ``esm duplicates``
runs) is timed at the card's threshold (auto) and at others.

* recall: planted (original, copy) pairs that end in one cluster, overall and per kind;
* precision: the share of the pairs inside clusters that are copies (planted, or photos of the
  folder with identical bytes); also the share that are at least the same product;
* ceiling: the same figures from exact all-pairs similarities of the same vectors (no kNN
  limit, numpy in memory), and the pass's speed beside the time to read every vector.

Usage: python bench/duplicates.py MODEL --photos FOLDER --out DIR [--planted 100]
           [--thresholds 0.9,0.95] [--index NAME]
Needs the stack. Writes bench/results/duplicates-<model stem>.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from common import write_result
from cutoff import index_photos
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import index_info, resolve_concrete
from es_metric.model.modelfile import read_card
from es_metric.search.duplicates import Links, Scan, documents, find_duplicates, own_vectors

KINDS = ("exact", "jpeg70", "resize90", "crop4")


def judged_vectors(es, info) -> tuple[list[str], np.ndarray]:
    """Every document's id and the vector its links are judged on (the model's own: the DBA raw
    copy where there is one), read as esm duplicates reads them."""
    ids, vecs = [], []
    for hit in documents(es, info, page=500):
        searched, own = own_vectors(info, hit)
        if searched:
            ids.append(hit["_id"])
            vecs.append(own or searched[0])
    return ids, np.asarray(vecs, dtype=np.float32)


def plant(img_path: Path, kind: str, out: Path) -> None:
    if kind == "exact":
        shutil.copyfile(img_path, out)
        return
    img = Image.open(img_path).convert("RGB")
    w, h = img.size
    if kind == "resize90":
        img = img.resize((round(w * 0.9), round(h * 0.9)), Image.BICUBIC)
    elif kind == "crop4":
        img = img.crop((round(w * 0.04), round(h * 0.04), round(w * 0.96), round(h * 0.96)))
    img.save(out, "JPEG", quality=70 if kind == "jpeg70" else 90)


def write_manifest(photos: Path, out: Path, n: int, seed: int = 0) -> tuple[Path, dict]:
    """OUT/manifest.jsonl of every photo plus N planted copies; {copy id: (original id, kind)}."""
    files = sorted(photos.glob("*/*"))
    chosen = random.Random(seed).sample(files, n)
    (out / "copies").mkdir(parents=True, exist_ok=True)
    planted, lines = {}, []
    for f in files:
        lines.append({"id": f"{f.parent.name}/{f.stem}", "image": str(f.resolve()), "label": f.parent.name})
    for i, f in enumerate(chosen):
        kind = KINDS[i % len(KINDS)]
        dest = out / "copies" / f"{kind}-{f.parent.name}-{f.stem}.jpg"
        plant(f, kind, dest)
        copy_id = f"copy/{kind}/{f.parent.name}/{f.stem}"
        planted[copy_id] = (f"{f.parent.name}/{f.stem}", kind)
        lines.append({"id": copy_id, "image": str(dest.resolve()), "label": f.parent.name})
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, planted


def identical_pairs(manifest: Path) -> set[frozenset]:
    """Pairs of documents whose image files have the same bytes (planted exact copies, and any
    the folder already holds)."""
    by_hash: dict[str, list[str]] = {}
    for line in manifest.read_text().splitlines():
        doc = json.loads(line)
        by_hash.setdefault(hashlib.sha256(Path(doc["image"]).read_bytes()).hexdigest(), []).append(doc["id"])
    return {frozenset(p) for ids in by_hash.values() for p in combinations(ids, 2)}


def score(clusters: list[dict], planted: dict, identical: set, labels: dict) -> dict:
    where = {i: n for n, c in enumerate(clusters) for i in c["ids"]}
    pairs = [frozenset(p) for c in clusters for p in combinations(c["ids"], 2)]
    truth = {frozenset((c, o)) for c, (o, _) in planted.items()} | identical
    found = {c: where.get(c) is not None and where.get(c) == where.get(o) for c, (o, _) in planted.items()}
    per_kind = {k: round(np.mean([found[c] for c, (_, kind) in planted.items() if kind == k]), 4) for k in KINDS}
    sizes = Counter(len(c["ids"]) for c in clusters)
    return {"clusters": len(clusters), "documents_in_clusters": len(where),
            "largest": max(sizes, default=0), "pairs": len(pairs),
            "recall": round(float(np.mean(list(found.values()))), 4), "recall_by_kind": per_kind,
            "precision": round(sum(p in truth for p in pairs) / max(len(pairs), 1), 4),
            "same_product": round(sum(len({labels[i] for i in p}) == 1 for p in pairs) / max(len(pairs), 1), 4)}


def exact_clusters(ids: list[str], vecs: np.ndarray, t: float, similarity: str) -> list[dict]:
    """The ceiling: every pair at least ``t`` similar from all-pairs similarities, union-found."""
    links = Links(similarity)
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True) if similarity != "l2_norm" else vecs
    for lo in range(0, len(v), 1024):
        block = v[lo:lo + 1024] @ v.T if similarity != "l2_norm" else -np.linalg.norm(
            v[lo:lo + 1024, None] - v[None], axis=2)
        for i, j in zip(*np.nonzero(block >= t if similarity != "l2_norm" else -block <= t)):
            if lo + i < j:
                links.link(ids[lo + i], ids[j], float(abs(block[i, j])))
    return links.clusters()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--planted", type=int, default=100)
    ap.add_argument("--thresholds", default="0.9,0.95")
    ap.add_argument("--index", default="bench-duplicates")
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=120)
    card = read_card(args.model)
    manifest, planted = write_manifest(args.photos, args.out, args.planted)
    ingest = None
    if not resolve_concrete(es, args.index):
        roots = (args.out.resolve(), *{Path(json.loads(line)["image"]).parent.parent
                                       for line in manifest.read_text().splitlines()})
        ingest = index_photos(es, settings, args.index, args.model, manifest, roots)
    labels = {json.loads(line)["id"]: json.loads(line)["label"] for line in manifest.read_text().splitlines()}
    identical = identical_pairs(manifest)
    info = index_info(es, args.index)
    t0 = time.monotonic()
    ids, vecs = judged_vectors(es, info)
    read_s = time.monotonic() - t0
    rows = {}
    for threshold in ["auto", *map(float, args.thresholds.split(","))]:
        t0 = time.monotonic()
        result = find_duplicates(es, args.index, Scan(threshold=threshold))
        seconds = time.monotonic() - t0
        t = result["threshold"]
        rows[str(threshold)] = {"threshold": round(t, 4), "seconds": round(seconds, 1),
                                "documents_per_s": round(result["documents"] / seconds, 1),
                                **score(result["clusters"], planted, identical, labels),
                                "ceiling_exact_all_pairs": score(exact_clusters(ids, vecs, t, info.similarity),
                                                                 planted, identical, labels)}
        print(threshold, json.dumps(rows[str(threshold)]))
    row = {"model_id": card["model_id"], "near_duplicate_threshold": card["metrics"].get("near_duplicate_threshold"),
           "documents": len(ids), "planted": len(planted), "identical_pairs_in_folder": len(identical) - sum(
               k == "exact" for _, k in planted.values()), "ingest": ingest,
           "read_all_vectors_s": round(read_s, 2), "runs": rows}
    write_result(f"duplicates-{Path(args.model).stem}", row)


if __name__ == "__main__":
    main()
