"""Offline probe of the learned-whitening start (training/head.py whiten_init) on cached backbone
features: does a power of the pooled features (signed square root) or another output size help
the catalogue's own Recall@1? No views, no training epochs: the closed-form start alone.

A catalogue of N photos per product (seeded draw; iconic packshots left out), queries up to 5
other photos of each product; products ranked by their best photo. Prints one row per N and
seed: pretrained cosine and the whitening start for each variant.

Usage: python scripts/whiten_probe.py ../shared/data/grocery_store [--per-product 3,5] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from es_metric.training.data import scan_folder
from es_metric.training.features import descriptors
from es_metric.training.head import pca_init, whiten_init

VARIANTS = {  # name: (feature transform, output dims)
    "avg, 256": (lambda f: f, 256),
    "avg, 128": (lambda f: f, 128),
    "avg, 512": (lambda f: f, 512),
    "sqrt(avg), 256": (lambda f: f.clamp(min=0).sqrt(), 256),
}


def recall_at_1(x: torch.Tensor, cat: list[int], cat_lab: list[int], queries: list[int], q_lab: list[int]) -> float:
    x = F.normalize(x, dim=-1)
    sims = x[queries] @ x[cat].T
    best = torch.full((len(queries), max(cat_lab) + 1), -9.0)
    best.scatter_reduce_(1, torch.tensor(cat_lab).expand(len(queries), -1), sims, reduce="amax")
    return float((best.argmax(1) == torch.tensor(q_lab)).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--per-product", default="3,5")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    samples = [s for s in scan_folder(args.data) if "iconic" not in Path(s.path).parts]
    feats = descriptors("efficientnet-lite0", samples, pool="avg")
    by: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by[s.cls].append(i)
    label = {c: j for j, c in enumerate(sorted(by))}
    print("| photos | seed | pretrained | " + " | ".join(VARIANTS) + " |")
    print("|---" * (3 + len(VARIANTS)) + "|")
    for n in (int(v) for v in args.per_product.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            rng, cat, queries = random.Random(seed), [], []
            for c in sorted(by):
                idx = by[c][:]
                rng.shuffle(idx)
                cat += [(i, label[c]) for i in idx[:n]]
                queries += [(i, label[c]) for i in idx[n:n + 5]]
            ci, cl = [i for i, _ in cat], [c for _, c in cat]
            qi, ql = [i for i, _ in queries], [c for _, c in queries]
            row = [recall_at_1(feats, ci, cl, qi, ql)]
            for transform, dims in VARIANTS.values():
                x = F.normalize(transform(feats), dim=-1)
                head = torch.nn.Linear(x.shape[1], dims)
                if not whiten_init(head, x[ci], torch.tensor(cl)):
                    pca_init(head, x[ci])
                with torch.no_grad():
                    row.append(recall_at_1(head(x), ci, cl, qi, ql))
            print(f"| {n} | {seed} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
