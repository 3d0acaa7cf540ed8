"""The parameters of the ``adaptive`` fusion (es_metric/search/fusion.py), chosen across folds.

For every parameter set (the image leg's top hits the agreement looks at, the text weight, the
agreement ramp low-high) each query is ranked as a search ranks it: ``agreement`` of the two
windows, ``text_share`` of it, then ``fuse("minmax")`` with the text leg's weight scaled (the
library's own functions), from the legs bench/hybrid.py collected; today's fixed minmax 0.8:0.2
beside. Then a rotation: parameters chosen on two folds, reported on the third, by two rules:
*pooled* (misleading cost <= 0.01 on each query set pooled over the two folds, best mean gain on
right text) and *dominates* (no worse than today's fixed default on any fold x set, gain or
misleading cost, by more than 0.002; best mean gain).

Usage: python bench/hybrid_adaptive.py DIR [DIR ...] [--every N] [--out GRID.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from hybrid_eval import Fold, measures
from hybrid_table import query_set

from es_metric.search.fusion import Leg, agreement, fuse, text_share, window

SETS = ("photos", "iconic", "degraded")
TOLERANCE = 0.002


def rank(fold: Fold, row: dict, params: tuple[int, float, float, float] | None) -> list[int]:
    """The top k of one query: image only (None), today's fixed minmax (top 0), or adaptive."""
    q = row["q"]
    k = max(10, fold.relevant(q))
    n = window(k, 1)
    image = Leg(*fold.image(q, n), name="image")
    if params is None:
        return list(image.ids[:k])
    top, w_text, low, high = params
    text = Leg(*fold.text("name3", row["text"], q, n), name="text")
    share = 1.0 if top == 0 else text_share(agreement(image, text, top), low, high)
    legs = [Leg(image.ids, image.scores, 1 - w_text, "image"), Leg(text.ids, text.scores, w_text * share, "text")]
    return [d for d, _ in fuse("minmax", legs)[:k]]


def evaluate(folds: list[Fold], params: tuple | None) -> dict[str, dict[str, list[float]]]:
    """Per fold and kind: [sum of nDCG@10, queries]."""
    out: dict[str, dict[str, list[float]]] = {}
    for fold in folds:
        per = out.setdefault(fold.name, {})
        for row in fold.rows:
            cell = per.setdefault(row["kind"], [0.0, 0])
            cell[0] += measures(fold, row["q"], rank(fold, row, params))["ndcg10"]
            cell[1] += 1
    return out


def summary(res: dict, name: str, folds: list[str], which: str) -> dict[str, float]:
    """Gain on right text and misleading cost against image only, pooled over ``folds`` of a set."""
    def mean(config: str, kind: str) -> float:
        cells = [res[config][f][kind] for f in res[config] if query_set(f) == which and f[:5] in folds]
        return sum(c[0] for c in cells) / max(1, sum(c[1] for c in cells))
    base = mean("image only", "helpful")
    return {"gain": (mean(name, "helpful") + mean(name, "name")) / 2 - base,
            "misleading": base - mean(name, "misleading"), "vague": base - mean(name, "vague")}


def grid() -> dict[str, tuple | None]:
    configs: dict[str, tuple | None] = {"image only": None, "fixed minmax 0.8:0.2": (0, 0.2, 0.0, 0.0)}
    ramps = ((0.1, 0.3), (0.1, 0.5), (0.2, 0.4), (0.2, 0.6), (0.3, 0.3), (0.2, 0.2))
    for top, w, (low, high) in itertools.product((5, 10, 20), (0.3, 0.35, 0.4), ramps):
        configs[f"adaptive top {top} text {w} ramp {low}-{high}"] = (top, w, low, high)
    return configs


def mean_gain(res: dict, name: str, folds: list[str], sets: list[str]) -> float:
    return float(np.mean([summary(res, name, folds, s)["gain"] for s in sets]))


def cell(res: dict, name: str, fold: str, which: str) -> str:
    s = summary(res, name, [fold], which)
    return f"{s['gain']:+.3f} / {s['misleading']:+.3f}"


def rotation(res: dict, sets: list[str]) -> list[str]:
    names = [n for n in res if n.startswith("adaptive")]
    today = "fixed minmax 0.8:0.2"
    lines = []
    for held in ("fold0", "fold1", "fold2"):
        train = [f for f in ("fold0", "fold1", "fold2") if f != held]
        pooled = [n for n in names if all(summary(res, n, train, s)["misleading"] <= 0.01 for s in sets)]
        dominates = [n for n in names if all(
            summary(res, n, [f], s)["gain"] >= summary(res, today, [f], s)["gain"] - TOLERANCE
            and summary(res, n, [f], s)["misleading"] <= summary(res, today, [f], s)["misleading"] + TOLERANCE
            for f in train for s in sets)]
        for rule, ok in (("pooled", pooled), ("dominates", dominates)):
            chosen = [max(ok, key=lambda n: mean_gain(res, n, train, sets))] if ok else []
            for name in chosen + [today]:
                cells = " | ".join(cell(res, name, held, s) for s in sets)
                lines.append(f"| {held} | {rule} | {name} | {cells} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folds", type=Path, nargs="+")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    folds = [Fold(p, args.every) for p in args.folds]
    res = {name: evaluate(folds, params) for name, params in grid().items()}
    if args.out:
        args.out.write_text(json.dumps(res))
    sets = [s for s in SETS if any(query_set(f.name) == s for f in folds)]
    heads = " | ".join(f"{s}: gain / misleading cost" for s in sets)
    print(f"| held-out fold | rule | chosen on the other two | {heads} |")
    print("|---" * (3 + len(sets)) + "|")
    print("\n".join(rotation(res, sets)))
    allf = ["fold0", "fold1", "fold2"]
    best = sorted(res, key=lambda n: -mean_gain(res, n, allf, sets))
    print("\nall folds pooled, by mean gain: gain / misleading cost / vague cost per set")
    for name in best[:25]:
        print(name, *(" / ".join(f"{v:+.3f}" for v in summary(res, name, allf, s).values()) for s in sets), sep=" | ")


if __name__ == "__main__":
    main()
