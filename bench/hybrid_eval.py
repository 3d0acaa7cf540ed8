"""Offline half of bench/hybrid.py: every fusion, weight, text-leg configuration, window,
collapse and diversify setting ranked from the collected legs as a search ranks, on every fold.

Per fold and query kind: nDCG@10 (graded: same product 2, same coarse class 1), MAP@R and
Recall@1 (same product), and for variety: distinct products in the top 10, the most copies of
one product there, and product nDCG@10 (a product's second and later photos gain nothing; the
ideal is the query's product then every other product of its coarse class).

Defaults are chosen across folds (docs/searching.md says how): the configuration with the best
mean nDCG@10 on the text kinds that describe the product (helpful, name) whose cost on
misleading text stays within 0.01 of image only on every fold and whose vague-text nDCG does not
fall below image only by more than 0.01.

With --defaults only image only (plain, collapsed) and the search's current defaults
(es_metric.search.fusion DEFAULT_*, the library's default text leg) plain, collapsed and
diversified are ranked: no grid, no choice (minutes instead of an hour a fold).

Usage: python bench/hybrid_eval.py DIR [DIR ...] [--out RESULTS.json] [--quick] [--every N] [--defaults]
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from es_metric.search.diversity import collapse, mmr
from es_metric.search.fusion import Leg, fuse, window
from es_metric.similarity import Metric
from hybrid_table import choose

WEIGHTS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class Config:
    method: str = "minmax"          # image, text, or a fusion
    w_image: float = 0.8
    text: str = "name3"             # bench/hybrid.py TEXT_CONFIGS
    window: int = 100
    collapse: bool = False
    diversify: float | None = None

    @property
    def name(self) -> str:
        if self.method in ("image", "text"):
            base = f"{self.method} only" + (f" [{self.text}]" if self.method == "text" else "")
        else:
            base = f"{self.method} {self.w_image:g}:{1 - self.w_image:.2g} [{self.text}]"
        extra = (f" window {self.window}" if self.window != 100 else "") + (" collapse" * self.collapse)
        return base + extra + (f" diversify {self.diversify:g}" if self.diversify is not None else "")


class Fold:
    """One fold's legs, labels and queries (an indexed photo, or an image from outside)."""

    def __init__(self, path: Path, every: int = 1) -> None:
        z = np.load(path / "legs.npz")
        with gzip.open(path / "texts.json.gz", "rt") as fh:
            blob = json.load(fh)
        self.name, self.blob = path.name, blob
        self.img_ids, self.img_scores, self.stored = z["img_ids"], z["img_scores"], z["stored"]
        self.labels, self.coarse, self.queries = blob["labels"], blob["coarse"], blob["queries"]
        self.per_label, self.per_coarse = Counter(self.labels), Counter(self.coarse)
        self.coarse_products = Counter(co for _, co in {(lab, co) for lab, co in zip(self.labels, self.coarse)})
        self.rows = [r for r in blob["rows"] if blob["iconic"] or self.queries[r["q"]]["doc"] % every == 0]

    def image(self, q: int, n: int) -> tuple[list[int], list[float]]:
        ids = self.img_ids[q, :n]
        keep = ids >= 0
        return ids[keep].tolist(), self.img_scores[q, :n][keep].tolist()

    def text(self, config: str, text: str, q: int, n: int) -> tuple[list[int], list[float]]:
        ids, scores = self.blob["text_legs"][config][text]
        own = self.queries[q]["doc"]
        pairs = [(d, s) for d, s in zip(ids, scores) if d != own][:n]   # the query photo itself
        return [d for d, _ in pairs], [s for _, s in pairs]

    def relevant(self, q: int) -> int:
        """R: the other photos of the query's product in the index."""
        query = self.queries[q]
        return self.per_label[query["label"]] - (query["doc"] is not None)


def fused(fold: Fold, q: int, text: str, c: Config, n: int) -> tuple[list[tuple[int, float]], bool]:
    """The fused window of legs cut to ``n``, and whether a leg was full (more exist)."""
    img = fold.image(q, n) if c.method != "text" else ([], [])
    txt = fold.text(c.text, text, q, n) if c.method != "image" else ([], [])
    full = len(img[0]) >= n or len(txt[0]) >= n
    if c.method == "image":
        return list(zip(*img)), full
    if c.method == "text":
        return list(zip(*txt)), full
    legs = [Leg(img[0], img[1], c.w_image, "image"), Leg(txt[0], txt[1], 1 - c.w_image, "text")]
    return fuse(c.method, legs), full


def ranked(fold: Fold, q: int, text: str, c: Config, k: int) -> list[int]:
    """The top ``k`` a search with ``c`` returns (collapse grows the window as the search does)."""
    n = window(k, 1, c.window)
    while True:
        out, full = fused(fold, q, text, c, n)
        if c.collapse:
            out = collapse(out, {d: fold.labels[d] for d, _ in out})
        if not c.collapse or len(out) >= k or not full or n >= fold.img_ids.shape[1]:
            break
        n = min(fold.img_ids.shape[1], n * 4)
    if c.diversify is not None:
        pool = out[:window(k, 1)]
        vectors = {d: fold.stored[d] for d, _ in pool}
        out = mmr(pool, vectors, c.diversify, k, Metric.COSINE)[0]
    return [d for d, _ in out[:k]]


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def measures(fold: Fold, q: int, top: list[int]) -> dict[str, float]:
    lab, co = fold.queries[q]["label"], fold.queries[q]["coarse"]
    grade = [2 if fold.labels[d] == lab else int(fold.coarse[d] == co) for d in top[:10]]
    same, coarse_only = fold.relevant(q), fold.per_coarse[co] - fold.per_label[lab]
    ideal = dcg(([2] * same + [1] * coarse_only + [0] * 10)[:10])
    seen, pgain = set(), []
    for d, g in zip(top[:10], grade):
        pgain.append(0 if fold.labels[d] in seen else g)
        seen.add(fold.labels[d])
    pideal = dcg(([2] + [1] * (fold.coarse_products[co] - 1) + [0] * 10)[:10])
    r, hits, ap = same, 0, 0.0
    for i, d in enumerate(top[:r], 1):
        if fold.labels[d] == lab:
            hits += 1
            ap += hits / i
    counts = Counter(fold.labels[d] for d in top[:10])
    return {"ndcg10": dcg(grade) / ideal, "map_at_r": ap / r if r else 0.0,
            "r1": float(bool(top) and fold.labels[top[0]] == lab), "products10": len(counts),
            "copies10": max(counts.values()) if counts else 0, "product_ndcg10": dcg(pgain) / pideal}


def query_measures(fold: Fold, c: Config) -> dict[str, list[dict]]:
    """The measures of every query row, by kind (rows in the fold's order)."""
    per: dict[str, list[dict]] = defaultdict(list)
    for row in fold.rows:
        r = fold.relevant(row["q"])
        per[row["kind"]].append(measures(fold, row["q"], ranked(fold, row["q"], row["text"], c, max(10, r))))
    return per


def evaluate(fold: Fold, c: Config) -> dict:
    """Mean measures per query kind, and how many queries (image/text-only configs: the same
    ranking for every kind's text)."""
    return {kind: {**{m: round(float(np.mean([x[m] for x in rows])), 4) for m in rows[0]}, "n": len(rows)}
            for kind, rows in query_measures(fold, c).items()}


def parse_config(text: str) -> Config:
    """METHOD:W_IMAGE[:TEXT] (e.g. ``adaptive:0.8:name3-cross``) as a plain configuration."""
    method, w, *leg = text.split(":")
    return Config(method, float(w), *leg)


def grid(quick: bool) -> list[Config]:
    """Image and text alone; every fusion x weight with the flat and the name-weighted text leg
    at the default window; the other text legs and the windows at the weights that matter."""
    configs = [Config("image"), Config("image", collapse=True)]
    configs += [Config("image", diversify=lam) for lam in (0.3, 0.5, 0.7, 0.9)]
    configs += [Config("text", text=t) for t in ("flat", "name3")]
    for method in ("minmax", "zscore", "rrf"):
        configs += [Config(method, w, t) for w in WEIGHTS for t in ("flat", "name3")]
        if quick:
            continue
        configs += [Config(method, w, t) for w in WEIGHTS[3:]
                    for t in ("name2", "name5", "name3-cross", "name3-tie", "name3-most")]
        configs += [Config(method, w, "name3", win) for w in WEIGHTS[3:] for win in (50, 200, 400)]
    configs += [Config("weighted", w, "flat") for w in (0.5, 0.8, 0.9)]
    return configs


def variety(best: Config) -> list[Config]:
    """Collapse and diversify on the chosen default."""
    return [Config(best.method, best.w_image, best.text, best.window, collapse=True)] + \
        [Config(best.method, best.w_image, best.text, best.window, diversify=lam) for lam in (0.3, 0.5, 0.7, 0.9)]


def current_default() -> Config:
    """The configuration a search uses when it is given text and nothing else."""
    from es_metric.search.fusion import DEFAULT_FUSION, DEFAULT_IMAGE_WEIGHT, DEFAULT_WINDOW
    return Config(DEFAULT_FUSION, DEFAULT_IMAGE_WEIGHT, default_text(), DEFAULT_WINDOW)


def default_text() -> str:
    """The bench/hybrid.py text-leg configuration the library's default text leg is."""
    from hybrid import TEXT_CONFIGS

    from es_metric.search.textquery import DEFAULT_MATCH_TYPE, NAME_BOOST
    return next(name for name, (boost, kind, tie) in TEXT_CONFIGS.items()
                if boost == NAME_BOOST and kind == DEFAULT_MATCH_TYPE and tie is None)


def run(configs: list[Config], folds: list[Fold], results: dict, t0: float) -> None:
    for c in configs:
        results[c.name] = {"config": c.__dict__, "folds": {f.name: evaluate(f, c) for f in folds}}
        print(f"{time.perf_counter() - t0:6.0f} s  {c.name}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folds", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer text-leg configurations")
    ap.add_argument("--every", type=int, default=1, help="every N-th indexed photo as a query (iconic: all)")
    ap.add_argument("--defaults", action="store_true",
                    help="only image only and the current search defaults with collapse and diversify")
    ap.add_argument("--also", action="append", default=[], metavar="METHOD:W_IMAGE[:TEXT]",
                    help="with --defaults: rank this plain configuration too (e.g. minmax:0.8, or "
                         "adaptive:0.8:name3-tie with another text leg of bench/hybrid.py TEXT_CONFIGS)")
    ap.add_argument("--plain", action="store_true", help="no collapse or diversify runs")
    args = ap.parse_args()
    folds = [Fold(p, args.every) for p in args.folds]
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    if args.defaults:
        best = current_default()
        also = [parse_config(a) for a in args.also]
        run([Config("image")] + [Config("image", collapse=True)] * (not args.plain) + [best] + also,
            folds, results, t0)
    else:
        run(grid(args.quick), folds, results, t0)
        best = Config(**choose(results))
    run([] if args.plain else variety(best), folds, results, t0)
    out = args.out or args.folds[0].parent / "results.json"
    out.write_text(json.dumps({"results": results, "chosen": best.name, "defaults_only": args.defaults,
                               "every": args.every, "folds": {f.name: {"queries": len({r["q"] for r in f.rows}),
                                                  "index": f.blob["index"], "iconic": f.blob["iconic"],
                                                  "knn_ms_p50": f.blob["knn_ms_p50"]} for f in folds}}, indent=1))
    print(f"{'default' if args.defaults else 'chosen'}: {best.name} -> {out}")


if __name__ == "__main__":
    main()
