"""The Grocery Store set as a shop's catalogue: does `esm train CATALOGUE.jsonl` beat the
pretrained model (`--head none`) when a product has only 1, 3 or 5 photos?

For each photos-per-product count N and seed, a catalogue JSONL is written the way a shop has
one (a line per product: id, N photos, title, description, category = "group > coarse class"),
and `esm train` runs on it through the library, exactly as the command does, with each
configuration asked for. The queries are other photos of the same products (up to --queries per
product, never in the catalogue): each searches the catalogue's photos, products ranked by their
best photo (as a multi-photo index ranks them). Reported per configuration: product Recall@1,
MRR, MAP@R and category precision@10, the pretrained model's on the same queries, and the paired
bootstrap interval of the Recall@1 difference.

``--holdout K`` adds "new arrivals": K class folds; fold i's products are left out of the
training catalogue but stay in the searched one, and only their photos query.

``--kind style`` makes a harder catalogue: a product is a coarse class (Apple: five varieties;
Juice: ten), its photos drawn round-robin from its varieties (like a clothing style in several
colours), and the category is the group (Fruit, Vegetables, Packages).

``--per-product 2-6`` gives each product its own count between 2 and 6 (a shop's mix).

Usage: python scripts/catalogue_experiments.py ../shared/data/grocery_store --out runs/catalogue \\
           --per-product 1,3,5,2-6 --seeds 0,1,2 [--kind fine|style] [--holdout 3] [--config NAME]...
Results accumulate in OUT/results.jsonl (a finished run is not redone); OUT/summary.md sums up.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from es_metric.config import Settings
from es_metric.training.data import Sample
from es_metric.training.evaluate import model_embeddings
from es_metric.training.scoring import paired_bootstrap, score_queries
from es_metric.training.train import TrainConfig, train

CONFIGS: dict[str, dict] = {
    "pretrained": {"head": "none"},
    "default": {},
    "no-group": {"group_weight": 0.0},
    "views-single": {"view_photos": "single"},
    "colour": {"augment": "crop+colour"},
    "no-views": {"augment": "none"},
    "pca-start": {"init": "pca"},      # the default before the learned-whitening start
    "views8": {"views": 8},            # twice the augmented views per photo (the whitening's covariance)
    "avg": {"pool": "avg"},            # the default before stages pooling: the last convolution's average only
    "views-60": {"max_view_photos": 60},    # views of 60 photos only (a quarter to a fifth at 3 or 2-6 a product)
    "views-400": {"max_view_photos": 400},  # a quarter of a 20-photo catalogue (1,620 photos)
    "views-800": {"max_view_photos": 800},  # a half of it
    "views-400w": {"max_view_photos": 400},  # the same bounds, whole products with views or none
    "views-800w": {"max_view_photos": 800},
}
METRICS = ("recall_at_1", "mrr", "map_at_r", "group_precision_at_10")


def products(root: Path, kind: str) -> dict[str, dict]:
    """Product id -> {classes (folders), title, description, category}."""
    rows = [json.loads(line) for line in (root / "products.jsonl").open()]
    out: dict[str, dict] = {}
    for r in rows:
        pid = r["class"] if kind == "fine" else r["coarse_class"]
        cat = f"{r['group']} > {r['coarse_class']}" if kind == "fine" else r["group"]
        p = out.setdefault(pid, {"classes": [], "title": r["title"], "description": r["description"],
                                 "category": cat})
        p["classes"].append(r["class"])
    return out


def draw(root: Path, prods: dict[str, dict], per_product: str, seed: int, n_queries: int) -> tuple[dict, dict]:
    """(catalogue photos, query photos) per product, reproducibly; variants round-robin.
    ``per_product``: a count ("3") or a range ("2-6": each product draws its own count, like a
    shop where some products have two photos and some six)."""
    rng = random.Random(seed)
    low, _, high = per_product.partition("-")
    cata, queries = {}, {}
    for pid in sorted(prods):
        n = rng.randint(int(low), int(high)) if high else int(low)
        pools = [sorted(str(p) for p in (root / c).iterdir() if p.suffix.lower() == ".jpg")
                 for c in prods[pid]["classes"]]
        for pool in pools:
            rng.shuffle(pool)
        order = [x for tup in zip(*pools) for x in tup] if len(pools) > 1 else pools[0]
        rest = [x for pool in pools for x in pool if x not in order[:n]]
        rng.shuffle(rest)
        cata[pid], queries[pid] = order[:n], rest[:n_queries]
    return cata, queries


def write_catalogue(path: Path, prods: dict, photos: dict, keep: set[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for pid in sorted(keep):
            p = prods[pid]
            fh.write(json.dumps({"id": pid, "image": photos[pid], "title": p["title"],
                                 "description": p["description"], "category": p["category"]}) + "\n")
    return path


def score(model_path: Path, prods: dict, cata: dict, queries: dict, asked: set[str]) -> dict:
    """Per-query arrays of the model: queries of ``asked`` products searching every catalogue photo."""
    from es_metric.model.modelfile import load_model
    model = load_model(model_path)
    index = [Sample(p, 0, pid) for pid in sorted(cata) for p in cata[pid]]
    qs = [Sample(p, 0, pid) for pid in sorted(asked) for p in queries[pid]]
    vi = model_embeddings(model, index).vectors
    vq = model_embeddings(model, qs).vectors
    groups = {pid: prods[pid]["category"] for pid in prods}
    s = score_queries(vq, [q.cls for q in qs], vi, [x.cls for x in index], model.metric, groups)
    return {m: s.metric(m).tolist() for m in METRICS}


def run_one(args, prods: dict, n: int | str, seed: int, fold: int | None, config: str) -> dict:
    cata, queries = draw(args.data, prods, str(n), seed, args.queries)
    everyone = set(prods)
    held = set(sorted(everyone)[fold::args.holdout]) if fold is not None else set()
    tag = f"n{n}-s{seed}" + (f"-f{fold}" if fold is not None else "")
    catalogue = write_catalogue(args.out / tag / "catalogue.jsonl", prods, cata, everyone - held)
    model = args.out / tag / f"{config}.pt"
    if not model.exists():
        cfg = TrainConfig(**{"seed": seed, **CONFIGS[config]})
        result = train(catalogue, model, cfg, settings=Settings.from_env())
        card = result.card
    else:
        from es_metric.model.card import read_card
        card = read_card(model)
    per_query = score(model, prods, cata, queries, held or everyone)
    return {"n": n, "seed": seed, "fold": fold, "config": config, "kind": args.kind, "per_query": per_query,
            "gate": card["metrics"].get("gate", {}).get("passed"),
            "validation": card["metrics"].get("validation"), "rerank": card.get("rerank")}


def summary(rows: list[dict]) -> str:
    """Mean ± sd over seeds (and folds) per configuration and N; the pooled R@1 interval vs pretrained."""
    by = defaultdict(list)
    for r in rows:
        by[(r["kind"], r["fold"] is not None, r["n"], r["config"])].append(r)
    lines = ["| kind | queries of | photos/product | config | runs | R@1 | MRR | MAP@R | category P@10 | "
             "R@1 diff vs pretrained [95 %] | gate passed |", "|" + "---|" * 11]
    for (kind, holdout, n, config), runs in sorted(by.items(), key=lambda kv: tuple(map(str, kv[0]))):
        base = {(r["seed"], r["fold"]): r for r in by[(kind, holdout, n, "pretrained")]}
        cells = []
        for m in METRICS:
            means = [float(np.mean(r["per_query"][m])) for r in runs]
            cells.append(f"{statistics.mean(means):.3f} ± {statistics.pstdev(means):.3f}")
        pairs = [(r, base.get((r["seed"], r["fold"]))) for r in runs]
        a = np.concatenate([r["per_query"]["recall_at_1"] for r, b in pairs if b])
        b = np.concatenate([b["per_query"]["recall_at_1"] for r, b in pairs if b])
        iv = paired_bootstrap(a, b, "recall_at_1") if len(a) else None
        diff = f"{iv.difference:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]" if iv and config != "pretrained" else "–"
        passed = sum(1 for r in runs if r["gate"]) if config != "pretrained" else "–"
        lines.append(f"| {kind} | {'new arrivals' if holdout else 'catalogue'} | {n} | {config} | {len(runs)} | "
                     + " | ".join(cells) + f" | {diff} | {passed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/catalogue"))
    ap.add_argument("--per-product", default="1,3,5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--kind", choices=("fine", "style"), default="fine")
    ap.add_argument("--holdout", type=int, default=0, help="K class folds of new arrivals (0: off)")
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS))
    args = ap.parse_args()
    args.out = args.out / args.kind
    args.out.mkdir(parents=True, exist_ok=True)
    prods = products(args.data, args.kind)
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.open()] if results.exists() else []
    seen = {(r["n"], r["seed"], r["fold"], r["config"]) for r in done}
    configs = ["pretrained"] + [c for c in (args.config or ["default"]) if c != "pretrained"]
    folds = list(range(args.holdout)) if args.holdout else [None]
    for n in (int(x) if x.isdigit() else x for x in args.per_product.split(",")):
        for seed in (int(x) for x in args.seeds.split(",")):
            for fold in folds:
                for config in configs:
                    if (n, seed, fold, config) in seen:
                        continue
                    row = run_one(args, prods, n, seed, fold, config)
                    done.append(row)
                    with results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(f"{args.kind} n={n} seed={seed} fold={fold} {config}: R@1 "
                          f"{np.mean(row['per_query']['recall_at_1']):.3f}", flush=True)
    (args.out / "summary.md").write_text(summary(done) + "\n")
    print(summary(done))


if __name__ == "__main__":
    main()
