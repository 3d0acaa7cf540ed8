"""Offline probe that chose Lite0's embedding size, 288 px (BENCHMARKS.md §12b): the pretrained
backbone's own features and the stages features through the closed-form whitening, at 224 px (the
size the ImageNet weights were trained at) and at larger sizes.

Catalogue draws as scripts/catalogue_experiments.py (fine and style, N photos per product, seeds);
queries up to 8 other photos per product; products ranked by their best photo. "pretrained" is the
last convolution's 1280-d average (what ``--head none`` indexes); "stages" is the 1,904-d stages
features whitened on the catalogue photos (no views, no epochs), 256-d, as scripts/stages_probe.py.
Features are cached in ``--cache`` (one pass over the photos per size).

Usage: python scripts/size_probe.py ../shared/data/grocery_store [--sizes 256,288,320]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue_experiments import products  # noqa: E402
from stages_probe import draw_rows, extract, photo_paths, probe_parser, whitened  # noqa: E402
from whiten_probe import recall_at_1 as r1  # noqa: E402  products ranked by their best photo

STAGES = ("b1280-avg", "b112-avg", "b192-avg", "b320-avg")


def main() -> None:
    ap = probe_parser()
    ap.add_argument("--sizes", default="256,288,320")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    sizes = [224] + [int(s) for s in args.sizes.split(",")]
    paths = photo_paths(args.data)
    feats = {s: extract(paths, False, s, args.cache) for s in sizes}
    pos = {p: i for i, p in enumerate(feats[224]["paths"])}
    pretrained = {s: f["b1280-avg"] for s, f in feats.items()}
    stages = {s: F.normalize(torch.cat([F.normalize(f[n], dim=-1) for n in STAGES], dim=1), dim=-1)
              for s, f in feats.items()}
    cols = [f"pretrained {s}" for s in sizes] + [f"stages {s}" for s in sizes]
    print("| kind | photos | seed | " + " | ".join(cols) + " |", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        prods = products(args.data, kind)
        label = {pid: j for j, pid in enumerate(sorted(prods))}
        for n in args.per_product.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                ci, cl, qi, ql = draw_rows(args.data, prods, n, seed, pos, label)
                row = [r1(pretrained[s], ci, cl, qi, ql) for s in sizes]
                row += [r1(whitened(stages[s], ci, cl), ci, cl, qi, ql) for s in sizes]
                rows.append(row)
                print(f"| {kind} | {n} | {seed} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
    print("| mean | | | " + " | ".join(f"{statistics.mean(c):.3f}" for c in zip(*rows)) + " |")
    for j, s in enumerate(sizes[1:], start=1):
        for name, at in (("pretrained", 0), ("stages", len(sizes))):
            diff = [r[at + j] - r[at] for r in rows]
            print(f"{name} {s} vs 224: {statistics.mean(diff):+.3f}, above on {sum(d > 0 for d in diff)} "
                  f"of {len(diff)} draws")


if __name__ == "__main__":
    main()
