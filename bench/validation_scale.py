"""What `esm train`'s validation costs as the catalogue grows: the early-stopping score (run once
per epoch) and the re-ranking choice (once), on synthetic catalogues of P products.

The backbone and the head are not run: products are clusters of unit vectors (each photo its
product's centre plus noise, 256-d, MAP@R about 0.5, as a head's output), so the figures are the validation's
own work, which grows with queries x photos. Per P, three ways:

* ``now``: the defaults (each protocol at most ``protocols.MAX_QUERIES`` queries; partial top-k;
  score blocks bounded; the re-ranking options on at most ``RERANK_PHOTOS`` photos);
* ``uncapped``: every product with two photos or more queries (the split before the bound),
  with the partial top-k;
* ``before``: uncapped, every query's row fully sorted and both protocols scored per epoch (the
  validation before this change), up to ``--before-up-to`` products.

Also ``evaluate``: what `esm evaluate` ranks on such a catalogue with its default bound
(``--max-queries``: 10,000 query photos, each searching every photo; mAP over every photo
included) and the report's image grids (12 queries, now ranked alone; before, every photo's
neighbours were ranked for them: an N x N matrix, run up to 5,000 products only: at 60,000
photos it alone would be 14 GB).

``--dba``: instead, `esm evaluate` with a DBA card (every photo blended with its 10 nearest,
photos squared): ``now`` searches at most ``RERANK_PHOTOS`` photos (the query products' and
whole others, seeded; ``catalogue_eval.dba_index``), ``before`` every photo, up to
``--before-up-to`` products.

Usage: python bench/validation_scale.py [--products 5000,20000,100000] [--photos 3]
       [--before-up-to 20000] [--out bench/results/validation-scale.json]
       python bench/validation_scale.py --dba [--products ...] [--before-up-to N] [--out ...]
       python bench/validation_scale.py --evaluate-only --products 1000,4000 --photos 60 [--out ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from es_metric.similarity import Metric
from es_metric.training import scoring
from es_metric.training.catalogue import Catalogue
from es_metric.training.catalogue_eval import RERANK_PHOTOS, dba_index, query_rows, ranked
from es_metric.training.data import Sample
from es_metric.training.evaluate import Embedded, neighbours
from es_metric.training.protocols import catalogue_split
from es_metric.training.rerank_choice import choose_rerank
from es_metric.training.validate import Validator
from es_metric.types import ReRank


def catalogue(n_products: int, photos: int, dim: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples = [Sample(f"/c/p{i}/{j}.jpg", i, f"p{i}") for i in range(n_products) for j in range(photos)]
    centres = rng.standard_normal((n_products, dim)).astype(np.float32)
    vecs = np.repeat(centres, photos, axis=0) + 1.8 * rng.standard_normal((len(samples), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    row = {s.path: i for i, s in enumerate(samples)}
    return samples, lambda batch: vecs[[row[s.path] for s in batch]]


def _full_sort(values: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-values, axis=1, kind="stable")[:, :k]


def measure(samples, embed, max_queries: int | None, rerank: bool, both: bool = False) -> dict:
    split = (catalogue_split(samples, 0.2, 0) if max_queries is None
             else catalogue_split(samples, 0.2, 0, max_queries=max_queries))
    v = Validator(split, {}, "in-domain")
    t = time.perf_counter()
    if both:  # before: every measurable protocol was scored, the gate's kept
        value = float(v.scores(embed, Metric.COSINE)["in-domain"].metric("map_at_r").mean())
    else:
        value = v.early_stopping_value(embed, Metric.COSINE)
    out = {"queries": {p: len(x.queries) for p, x in split.validations.items()},
           "index_photos": len(split.index), "epoch_score_s": round(time.perf_counter() - t, 2),
           "map_at_r": round(value or 0.0, 4)}
    if rerank:
        t = time.perf_counter()
        _, measured = choose_rerank(v, embed, Metric.COSINE, 10, 10, 3.0)
        out["rerank_choice_s"] = round(time.perf_counter() - t, 2)
        out["rerank_measured_on"] = measured.get("index_photos", "every photo")
    return out


def evaluate(samples, embed, before: bool) -> dict:
    cat = Catalogue("synthetic", samples)
    emb = Embedded(embed(samples), np.array([s.label for s in samples]), samples, Metric.COSINE, "synthetic")
    t = time.perf_counter()
    queries = query_rows(cat)
    scores, _ = ranked(emb, cat, queries=queries)
    out = {"queries": int(len(queries.rows)), "rank_s": round(time.perf_counter() - t, 2),
           "map_at_r": round(float(scores.metric("map_at_r").mean()), 4),
           "map": round(float(scores.metric("map").mean()), 6)}
    picked = list(range(0, len(samples), max(1, len(samples) // 12)))[:12]
    t = time.perf_counter()
    neighbours(emb.vectors, Metric.COSINE, 8, rows=picked)
    out["report_grid_s"] = round(time.perf_counter() - t, 3)
    if before:
        t = time.perf_counter()
        neighbours(emb.vectors, Metric.COSINE, 8)
        out["report_grid_before_s"] = round(time.perf_counter() - t, 2)
    return out


def evaluate_dba(samples, embed, bound: int | None) -> dict:
    """`esm evaluate` with DBA: the photos searched (``dba_index`` at ``bound``; None: every
    photo), embedded (here: looked up), augmented, and the queries ranked."""
    t = time.perf_counter()
    cat = Catalogue("synthetic", samples)
    queries = query_rows(cat)
    cat, queries, note = dba_index(cat, queries, bound)
    emb = Embedded(embed(cat.samples), np.array([s.label for s in cat.samples]), cat.samples, Metric.COSINE,
                   "synthetic")
    scores, _ = ranked(emb, cat, ReRank(dba_k=10, dba_alpha=3.0), queries)
    return {"queries": int(len(queries.rows)), "photos_searched": len(cat.samples),
            "rank_s": round(time.perf_counter() - t, 1), "map_at_r": round(float(scores.metric("map_at_r").mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", default="5000,20000,100000")
    ap.add_argument("--photos", type=int, default=3)
    ap.add_argument("--before-up-to", type=int, default=20000)
    ap.add_argument("--out", default="bench/results/validation-scale.json")
    ap.add_argument("--dba", action="store_true", help="esm evaluate with a DBA card instead")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="only esm evaluate's ranking (e.g. --photos 60: the mAP of many-photo products)")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.products.split(",")):
        samples, embed = catalogue(n, args.photos)
        if args.dba:
            row = {"products": n, "photos": len(samples), "now": evaluate_dba(samples, embed, RERANK_PHOTOS)}
            if n <= args.before_up_to:
                row["before"] = evaluate_dba(samples, embed, None)
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        if args.evaluate_only:
            row = {"products": n, "photos": len(samples), "evaluate": evaluate(samples, embed, before=False)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        row = {"products": n, "photos": len(samples), "now": measure(samples, embed, None, rerank=True),
               "evaluate": evaluate(samples, embed, before=n <= 5000)}
        if n <= args.before_up_to:
            row["uncapped"] = measure(samples, embed, 10 ** 9, rerank=False)
            fast, cells = scoring.top_stable, scoring.BLOCK_CELLS
            scoring.top_stable, scoring.BLOCK_CELLS = _full_sort, 10 ** 12
            try:
                row["before"] = measure(samples, embed, 10 ** 9, rerank=False, both=True)
            finally:
                scoring.top_stable, scoring.BLOCK_CELLS = fast, cells
        print(json.dumps(row), flush=True)
        rows.append(row)
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                          "photos_per_product": args.photos, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
