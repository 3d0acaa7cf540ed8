"""The choice of defaults and the tables of BENCHMARKS.md §7, from bench/hybrid_eval.py's results.

Two query sets: *photos* (every indexed photo, itself excluded) and *iconic* (each product's
catalogue packshot against the shoppers' photos: the domain gap of a shopper's photo against a
catalogue). Means are pooled over the folds' queries. The default is the fusion configuration
with the best mean gain on right text (helpful, name) over the two sets, among those whose
misleading-text and vague-text costs stay within MAX_COST of image only on both sets.

Usage: python bench/hybrid_table.py RESULTS.json   (of hybrid_eval.py --defaults: the first table only)
       python bench/hybrid_table.py RESULTS.json --per-fold   (each fusion per set and fold, side by side)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KINDS = ("helpful", "name", "vague", "misleading")
RIGHT = ("helpful", "name")
MAX_COST = 0.01
SETS = ("photos", "iconic")


def query_set(fold: str) -> str:
    """photos, iconic (catalogue packshots) or degraded (bench/hybrid_degrade.py's noisy image leg)."""
    return next((s for s in ("iconic", "degraded") if fold.endswith("-" + s)), "photos")


def pooled(folds: dict, kind: str, measure: str, which: str) -> float:
    """A measure's mean over every query of one set's folds."""
    rows = [f[kind] for name, f in folds.items() if query_set(name) == which]
    n = sum(r["n"] for r in rows)
    return sum(r[measure] * r["n"] for r in rows) / n if n else float("nan")


def summary(results: dict, name: str, which: str) -> dict:
    """One set: nDCG@10 per kind, the gain on right text and the costs of vague and misleading
    text against image only, and the other measures averaged over the kinds."""
    folds, image = results[name]["folds"], results["image only"]["folds"]
    out = {k: pooled(folds, k, "ndcg10", which) for k in KINDS}
    base = pooled(image, "helpful", "ndcg10", which)
    out["right_gain"] = sum(out[k] for k in RIGHT) / len(RIGHT) - base
    out["vague_cost"], out["misleading_cost"] = base - out["vague"], base - out["misleading"]
    for m in ("map_at_r", "r1", "products10", "copies10", "product_ndcg10"):
        out[m] = sum(pooled(folds, k, m, which) for k in KINDS) / len(KINDS)
    return out


def eligible(results: dict, name: str) -> bool:
    return all(summary(results, name, s)[cost] <= MAX_COST for s in SETS
               for cost in ("vague_cost", "misleading_cost"))


def objective(results: dict, name: str) -> float:
    return sum(summary(results, name, s)["right_gain"] for s in SETS) / len(SETS)


def plain_fusions(results: dict) -> list[str]:
    return [n for n, e in results.items() if e["config"]["method"] not in ("image", "text")
            and not e["config"]["collapse"] and e["config"]["diversify"] is None]


def choose(results: dict) -> dict:
    """The eligible fusion configuration with the best objective (its ``config`` record)."""
    ok = [n for n in plain_fusions(results) if eligible(results, n)]
    return results[max(ok, key=lambda n: objective(results, n))]["config"]


def row(results: dict, name: str, label: str | None = None) -> str:
    cells = []
    for which in SETS:
        s = summary(results, name, which)
        cells += [f"{s[k]:.3f}" for k in KINDS] + [f"{s['right_gain']:+.3f}", f"{s['misleading_cost']:+.3f}"]
    s = summary(results, name, "photos")
    cells += [f"{s['map_at_r']:.3f}", f"{s['r1']:.3f}", f"{s['products10']:.1f}", f"{s['copies10']:.1f}",
              f"{s['product_ndcg10']:.3f}"]
    return f"| {label or name} | " + " | ".join(cells) + " |"


HEAD = ("| configuration | photos: helpful | name | vague | misleading | gain (right text) | misleading cost "
        "| iconic: helpful | name | vague | misleading | gain (right text) | misleading cost "
        "| photos: MAP@R | R@1 | products in top 10 | most copies of one | product nDCG@10 |\n"
        + "|---" * 18 + "|")


def table(blob: dict) -> str:
    results, chosen = blob["results"], blob["chosen"]
    singles = [n for n in results if results[n]["config"]["method"] in ("image", "text")]
    variety = [n for n in results if n.startswith(chosen + " ")]
    lines = [HEAD] + [row(results, n) for n in singles[:1]]
    lines += [row(results, chosen, f"**{chosen}** (default)")] + [row(results, n) for n in variety]
    lines += [row(results, n) for n in singles[1:]]
    if blob.get("defaults_only"):    # hybrid_eval.py --defaults: no grid to rank
        return "\n".join(lines)
    best = sorted(plain_fusions(results), key=lambda n: -objective(results, n))
    lines += ["", "Fusions by mean gain on right text, eligible (costs within 0.01) first:", "", HEAD]
    lines += [row(results, n) for n in [n for n in best if eligible(results, n)][:10]]
    lines += [row(results, n, n + " (not eligible)") for n in [n for n in best if not eligible(results, n)][:8]]
    return "\n".join(lines)


def per_fold(blob: dict) -> str:
    """Per query set and fold: nDCG@10 per text kind, the gain on right text and the cost of
    misleading text against image only, for each fusion configuration side by side."""
    results = blob["results"]
    names = plain_fusions(results)
    head = "| set | fold | image only | " + " | ".join(
        f"{n}: helpful / name / vague / misleading | gain | misleading cost" for n in names) + " |"
    lines = [head, "|---" * (3 + 3 * len(names)) + "|"]
    folds = results["image only"]["folds"]
    order = sorted(folds, key=lambda f: (SETS_ALL.index(query_set(f)), f))
    for fold in order + [f"all {s}" for s in SETS_ALL if any(query_set(f) == s for f in folds)]:
        which = fold[4:] if fold.startswith("all ") else query_set(fold)
        pick = folds if fold.startswith("all ") else {fold: folds[fold]}
        base = pooled(pick, "helpful", "ndcg10", which)
        cells = [which, "pooled" if fold.startswith("all ") else fold.split("-")[0], f"{base:.3f}"]
        for n in names:
            f = results[n]["folds"] if fold.startswith("all ") else {fold: results[n]["folds"][fold]}
            v = {k: pooled(f, k, "ndcg10", which) for k in KINDS}
            cells += [" / ".join(f"{v[k]:.3f}" for k in KINDS), f"{(v['helpful'] + v['name']) / 2 - base:+.3f}",
                      f"{base - v['misleading']:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SETS_ALL = ("photos", "iconic", "degraded")

if __name__ == "__main__":
    blob = json.loads(Path(sys.argv[1]).read_text())
    print(per_fold(blob) if "--per-fold" in sys.argv[2:] else table(blob))
