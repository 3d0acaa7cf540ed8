"""The adaptive fusion at several text weights, per fold of the query products, from legs
collected by bench/hybrid.py (one index; its queries split into K folds of products, sorted by
name and dealt in turn), ranked offline as a search ranks (bench/hybrid_eval.py's functions).

Per leg directory and fold: image only's nDCG@10, and for each weight the gain (mean of helpful
and name text minus image only), the misleading-text cost and the vague-text cost.

Usage: cd bench && python hybrid_product_folds.py DIR [DIR ...] [--weights 0.8,0.75,0.7]
       [--text name3-cross] [--folds 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hybrid_eval import Config, Fold, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+")
    ap.add_argument("--weights", default="0.8,0.75,0.7", help="image weights (the text's: 1 - w)")
    ap.add_argument("--text", default="name3-cross", help="bench/hybrid.py TEXT_CONFIGS name")
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()
    configs = [Config("adaptive", float(w), args.text) for w in args.weights.split(",")]
    print("| legs | fold | queries | image only | " + " | ".join(
        f"{c.name}: gain / misleading / vague cost" for c in configs) + " |")
    print("|---" * (4 + len(configs)) + "|")
    for path in args.dirs:
        fold = Fold(path)
        rows = fold.rows
        labels = sorted({fold.queries[r["q"]]["label"] for r in rows})
        part = {label: i % args.folds for i, label in enumerate(labels)}
        for f in range(args.folds):
            fold.rows = [r for r in rows if part[fold.queries[r["q"]]["label"]] == f]
            image = evaluate(fold, Config("image"))["helpful"]["ndcg10"]
            cells = []
            for c in configs:
                e = evaluate(fold, c)
                gain = (e["helpful"]["ndcg10"] + e["name"]["ndcg10"]) / 2 - image
                cells.append(f"{gain:+.3f} / {image - e['misleading']['ndcg10']:+.3f} / "
                             f"{image - e['vague']['ndcg10']:+.3f}")
            print(f"| {path.name} | {f} | {len({r['q'] for r in fold.rows})} | {image:.3f} | "
                  + " | ".join(cells) + " |", flush=True)
        fold.rows = rows


if __name__ == "__main__":
    main()
