"""Two hybrid configurations on the same queries, paired: per query kind, the mean nDCG@10 of
each and the paired-bootstrap 95 % interval of the difference (B - A), from legs collected by
bench/hybrid.py and ranked offline as a search ranks (bench/hybrid_eval.py's functions).

A configuration is METHOD:W_IMAGE:TEXT as hybrid_eval.py's --also takes it, e.g.
``adaptive:0.8:name3`` (the default text leg) against ``adaptive:0.8:name3-cross``.

Usage: cd bench && python hybrid_paired.py DIR [DIR ...] --a adaptive:0.8:name3 --b adaptive:0.8:name3-cross
       [--every N] [--out RESULTS.json]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from hybrid_eval import Config, Fold, parse_config, query_measures
from hybrid_table import KINDS

from es_metric.training.scoring import paired_bootstrap


def per_query(fold: Fold, c: Config) -> dict[str, list[float]]:
    """nDCG@10 of every query row, by kind (rows in the fold's order)."""
    return {kind: [m["ndcg10"] for m in rows] for kind, rows in query_measures(fold, c).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folds", type=Path, nargs="+")
    ap.add_argument("--a", required=True, help="METHOD:W_IMAGE:TEXT, the reference")
    ap.add_argument("--b", required=True, help="METHOD:W_IMAGE:TEXT, the candidate")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    a, b = parse_config(args.a), parse_config(args.b)
    result: dict[str, dict] = {}
    print(f"| set | kind | queries | {a.name} | {b.name} | B - A [95 %] |\n|---|---|---|---|---|---|")
    pooled: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for path in args.folds:
        fold = Fold(path, args.every)
        qa, qb = per_query(fold, a), per_query(fold, b)
        for kind in KINDS + ("right",):
            xa = qa[kind] if kind != "right" else qa["helpful"] + qa["name"]
            xb = qb[kind] if kind != "right" else qb["helpful"] + qb["name"]
            pooled[kind][0].extend(xa)
            pooled[kind][1].extend(xb)
            result[f"{fold.name}/{kind}"] = row(fold.name, kind, xa, xb)
    for kind in KINDS + ("right",):
        result[f"pooled/{kind}"] = row("pooled", kind, *pooled[kind])
    if args.out:
        args.out.write_text(json.dumps({"a": a.name, "b": b.name, "every": args.every, "results": result}, indent=1))


def row(name: str, kind: str, xa: list[float], xb: list[float]) -> dict:
    ci = paired_bootstrap(np.asarray(xb), np.asarray(xa))
    label = "helpful + name" if kind == "right" else kind
    print(f"| {name} | {label} | {len(xa)} | {np.mean(xa):.3f} | {np.mean(xb):.3f} | "
          f"{ci.difference:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] |", flush=True)
    return {"n": len(xa), "a": float(np.mean(xa)), "b": float(np.mean(xb)),
            "difference": ci.difference, "low": ci.low, "high": ci.high}


if __name__ == "__main__":
    main()
