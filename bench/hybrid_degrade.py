"""A weaker image leg for bench/hybrid_eval.py: the same fold, its kNN leg recomputed offline
from the stored vectors with Gaussian noise added (one draw per indexed document: a worse index;
an independent draw per query photo: a worse query embedding), each vector re-normalised, scored
as Elasticsearch scores cosine ((1 + cos) / 2), the query photo itself excluded.

The grocery photo queries' image leg is saturated (nDCG@10 ~0.94); the external catalogue's is
~0.62. Noise makes the photo confuse products at random rather than the look-alikes a weak model
confuses, so read it beside the catalogue-packshot (iconic) queries, not instead of them.

Usage: python bench/hybrid_degrade.py FOLD_DIR OUT_DIR --sigma S [--seed N] [--every N]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

WINDOW = 1000


def noisy(vectors: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``vectors`` (unit rows) plus N(0, sigma^2 / dims) per component, re-normalised: sigma is
    the noise vector's expected length against the unit signal."""
    out = vectors + rng.normal(0.0, sigma / np.sqrt(vectors.shape[1]), vectors.shape)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def degrade(stored: np.ndarray, docs: list[int], sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The kNN window (ids, scores; WINDOW wide) of each query document ``docs`` against the
    noisy index."""
    rng = np.random.default_rng(seed)
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    index, queries = noisy(unit, sigma, rng), noisy(unit[docs], sigma, rng)
    sims = queries @ index.T
    sims[np.arange(len(docs)), docs] = -np.inf            # the query photo itself
    n = min(WINDOW, index.shape[0] - 1)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    scores = (1.0 + np.take_along_axis(sims, ids, axis=1)) / 2.0
    return ids.astype(np.int32), scores.astype(np.float32)


def main() -> None:
    import gzip
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fold", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    z = np.load(args.fold / "legs.npz")
    with gzip.open(args.fold / "texts.json.gz", "rt") as fh:
        blob = json.load(fh)
    if blob["iconic"]:
        raise SystemExit("a packshot fold has no stored query vectors to degrade; use a photo fold")
    docs = [q["doc"] for q in blob["queries"]]
    ids, scores = degrade(z["stored"], docs, args.sigma, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "legs.npz", img_ids=ids, img_scores=scores, stored=z["stored"])
    shutil.copy(args.fold / "texts.json.gz", args.out / "texts.json.gz")
    print(f"{args.out}: {len(docs)} queries, sigma {args.sigma}, seed {args.seed}")


if __name__ == "__main__":
    main()
