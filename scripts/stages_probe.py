"""Offline probe that chose ``stages`` pooling (BENCHMARKS.md §12b): do the pooled outputs of
EfficientNet-Lite0's middle stages, set beside the last convolution's 1280-d average, help the
learned-whitening start? And flip-averaging?

Catalogue draws as scripts/catalogue_experiments.py (fine and style, N photos per product, seeds);
queries up to 8 other photos per product; products ranked by their best photo. The closed-form
whitening (training/head.py whiten_init) on the catalogue photos only (no augmented views, no
epochs), 256-d. ``--holdout K``: the whitening learns from the other products' photos only and
the held-out products' queries are scored (new arrivals). Features are cached in ``--cache``.

Usage: python scripts/stages_probe.py ../shared/data/grocery_store [--holdout 3 --seeds 0,1 --kinds fine]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue_experiments import draw, products  # noqa: E402
from whiten_probe import recall_at_1 as r1  # noqa: E402  products ranked by their best photo

from es_metric.model.encoder import Preprocess, backbone_spec, create_encoder, gem  # noqa: E402
from es_metric.training.data import Sample  # noqa: E402
from es_metric.training.features import run_module  # noqa: E402
from es_metric.training.head import pca_init, whiten_init  # noqa: E402

STAGE_ENDS = (4, 7, 10, 14, 15)   # last block of the stages with 40, 80, 112, 192, 320 channels


class Multi(nn.Module):
    def __init__(self, lite: nn.Module, flip: bool) -> None:
        super().__init__()
        self.lite, self.flip = lite, flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        net = self.lite.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        outs = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in STAGE_ENDS:
                outs += [x.mean(dim=(-2, -1)), gem(x)]
        h = net._swish(net._bn1(net._conv_head(x)))
        outs += [h.mean(dim=(-2, -1)), gem(h)]
        return torch.cat(outs, dim=1)


def extract(paths: list[str], flip: bool, size: int, cache: Path) -> dict[str, torch.Tensor]:
    key = cache / f"multi-{size}-{'flip' if flip else 'id'}.pt"
    if key.exists():
        return torch.load(key)
    lite = create_encoder("efficientnet-lite0", pretrained=True).backbone
    spec = backbone_spec("efficientnet-lite0")
    pre = Preprocess(size, spec.preprocess.mean, spec.preprocess.std)
    out = run_module(Multi(lite, flip), [Sample(p, 0, "x") for p in paths], pre, 32, f"multi {size} flip={flip}")
    chans = [40, 80, 112, 192, 320, 1280]
    names = [f"b{c}" for c in chans]
    parts, at = {}, 0
    for n, c in zip(names, chans):
        parts[f"{n}-avg"] = out[:, at:at + c]
        parts[f"{n}-gem"] = out[:, at + c:at + 2 * c]
        at += 2 * c
    parts["paths"] = paths  # type: ignore[assignment]
    torch.save(parts, key)
    return parts


def draw_rows(data: Path, prods: dict, n: str, seed: int, pos: dict[str, int],
              label: dict[str, int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """One catalogue draw as rows of the cached features: catalogue rows and their product labels,
    query rows (up to 8 other photos a product) and theirs."""
    cata, queries = draw(data, prods, n, seed, 8)
    ci = [pos[p] for pid in sorted(cata) for p in cata[pid]]
    cl = [label[pid] for pid in sorted(cata) for _ in cata[pid]]
    qi = [pos[p] for pid in sorted(queries) for p in queries[pid]]
    ql = [label[pid] for pid in sorted(queries) for _ in queries[pid]]
    return ci, cl, qi, ql


def whitened(x: torch.Tensor, ci: list[int], cl: list[int], dims: int = 256) -> torch.Tensor:
    head = torch.nn.Linear(x.shape[1], dims)
    if not whiten_init(head, x[ci], torch.tensor(cl)):
        pca_init(head, x[ci])
    with torch.no_grad():
        return head(x)


def probe_parser() -> argparse.ArgumentParser:
    """The arguments the offline probes share: the data, the catalogue draws, the feature cache."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--per-product", default="3,2-6")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--kinds", default="fine,style")
    ap.add_argument("--cache", type=Path, default=Path("runs/stages-probe"))
    return ap


def photo_paths(data: Path) -> list[str]:
    """Every shopper's photo of the Grocery folder (the catalogue packshots left out), sorted."""
    return sorted(str(p) for p in data.rglob("*.jpg") if "iconic" not in p.parts)


def main() -> None:
    ap = probe_parser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--holdout", type=int, default=0)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    all_paths = photo_paths(args.data)
    base = extract(all_paths, False, args.size, args.cache)
    flipped = extract(all_paths, True, args.size, args.cache)
    pos = {p: i for i, p in enumerate(base["paths"])}

    def nrm(t: torch.Tensor) -> torch.Tensor:
        return F.normalize(t, dim=-1)

    def cat(*names: str, src=base) -> torch.Tensor:
        return torch.cat([nrm(src[n]) for n in names], dim=1)

    variants = {
        "head": lambda: base["b1280-avg"],
        "head flip": lambda: (nrm(base["b1280-avg"]) + nrm(flipped["b1280-avg"])) / 2,
        "head+320": lambda: cat("b1280-avg", "b320-avg"),
        "head+192+320": lambda: cat("b1280-avg", "b192-avg", "b320-avg"),
        "head+112+192+320": lambda: cat("b1280-avg", "b112-avg", "b192-avg", "b320-avg"),
        "all": lambda: cat("b1280-avg", "b40-avg", "b80-avg", "b112-avg", "b192-avg", "b320-avg"),
        "head+112+192+320 gem": lambda: cat("b1280-avg", "b112-gem", "b192-gem", "b320-gem"),
    }
    feats = {k: f() for k, f in variants.items()}
    print("| kind | photos | seed | pretrained | " + " | ".join(f"raw {k}" for k in ("head+112+192+320",))
          + " | " + " | ".join(f"white {k}" for k in variants) + " |", flush=True)
    for kind in args.kinds.split(","):
        prods = products(args.data, kind)
        label = {pid: j for j, pid in enumerate(sorted(prods))}
        for n in args.per_product.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                ci, cl, qi, ql = draw_rows(args.data, prods, n, seed, pos, label)
                if not args.holdout:
                    row = [r1(feats["head"], ci, cl, qi, ql), r1(feats["head+112+192+320"], ci, cl, qi, ql)]
                    row += [r1(whitened(nrm(f), ci, cl), ci, cl, qi, ql) for f in feats.values()]
                    print(f"| {kind} | {n} | {seed} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
                    continue
                for fold in range(args.holdout):
                    held = {label[p] for p in sorted(prods)[fold::args.holdout]}
                    ti = [i for i, c in zip(ci, cl) if c not in held]
                    tl = [c for c in cl if c not in held]
                    hq = [(i, c) for i, c in zip(qi, ql) if c in held]
                    hqi, hql = [i for i, _ in hq], [c for _, c in hq]
                    row = [r1(feats["head"], ci, cl, hqi, hql), r1(feats["head+112+192+320"], ci, cl, hqi, hql)]
                    row += [r1(whitened(nrm(f), ti, tl), ci, cl, hqi, hql) for f in feats.values()]
                    cells = " | ".join(f"{v:.3f}" for v in row)
                    print(f"| {kind} | {n} | {seed} f{fold} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
