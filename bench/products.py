"""Product-level retrieval: one vector per product (the mean of its photos) vs one vector per
photo in a nested field (a product scores by its best photo, as Elasticsearch's nested kNN).

The photos of each class are shuffled and grouped into products of 3 to 5 photos (the rest of
a class too small for a product is dropped). Relevant = another product of the same class.
Two kinds of query, both against every other product:

* a product (``esm search --like ID``): the normalised mean of its photos' vectors;
* one photo of a product (``esm search --image``), that product left out of the index.

Scores are cosine similarities on the backbone's (or model's) normalised vectors; the same
vectors the workers write. Reported: MAP@R, Recall@1, Recall@10 (mean over queries).

Usage: python bench/products.py [DATA_DIR] [--backbone NAME | --model MODEL] [--seed S]
       [--per-class N]   (the first N photos of each class, by file name: a cheaper run)
Writes bench/results/products.json.
"""
from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import numpy as np

from common import DATA, write_result
from es_metric.training.data import scan_folder
from es_metric.training.evaluate import baseline_embeddings, model_embeddings


def group_products(labels: np.ndarray, seed: int, low: int = 3, high: int = 5) -> list[list[int]]:
    """Photo indices grouped into products of ``low``..``high`` photos of one class each."""
    rng, by_class, products = random.Random(seed), defaultdict(list), []
    for i, lab in enumerate(labels.tolist()):
        by_class[lab].append(i)
    for lab in sorted(by_class):
        photos = by_class[lab]
        rng.shuffle(photos)
        while len(photos) >= low:
            size = min(rng.randint(low, high), len(photos))
            products.append(photos[:size])
            photos = photos[size:]
    return products


def first_per_class(samples: list, n: int) -> list:
    """The first ``n`` samples of each class, by path."""
    by_class = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.path):
        by_class[sample.label].append(sample)
    return [s for group in by_class.values() for s in group[:n]]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def scores(queries: np.ndarray, vecs: np.ndarray, products: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(single-vector scores, nested scores): queries x products."""
    means = unit(np.stack([vecs[p].mean(axis=0) for p in products]))
    order = np.concatenate(products)
    starts = np.cumsum([0] + [len(p) for p in products[:-1]])
    per_photo = queries @ vecs[order].T
    return queries @ means.T, np.maximum.reduceat(per_photo, starts, axis=1)


def metrics(sim: np.ndarray, qlabels: np.ndarray, plabels: np.ndarray, exclude: np.ndarray) -> dict:
    sim = sim.copy()
    sim[np.arange(len(sim)), exclude] = -np.inf
    ranked = np.argsort(-sim, axis=1)
    rel = plabels[ranked] == qlabels[:, None]
    r = (plabels[None, :] == qlabels[:, None]).sum(axis=1) - 1  # the query's own product excluded
    keep = r > 0
    rel, r = rel[keep][:, :-1], r[keep]
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    map_r = np.mean([(prec[i, :r[i]] * rel[i, :r[i]]).sum() / r[i] for i in range(len(r))])
    return {"map_at_r": round(float(map_r), 4), "recall_at_1": round(float(rel[:, 0].mean()), 4),
            "recall_at_10": round(float(rel[:, :10].any(axis=1).mean()), 4), "n_queries": int(keep.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", nargs="?", default=str(DATA))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    samples = scan_folder(args.data, exclude=("iconic",))  # iconic/: catalogue photos, not a class
    if args.per_class:
        samples = first_per_class(samples, args.per_class)
    if args.model:
        from es_metric.model.modelfile import load_model
        emb = model_embeddings(load_model(args.model), samples)
    else:
        emb = baseline_embeddings(args.backbone, samples)
    vecs, labels = unit(np.asarray(emb.vectors, np.float32)), np.asarray(emb.labels)
    products = group_products(labels, args.seed)
    plabels = np.array([labels[p[0]] for p in products])
    ids = np.arange(len(products))
    single, nested = scores(unit(np.stack([vecs[p].mean(axis=0) for p in products])), vecs, products)
    photo_q = np.array([p[0] for p in products])     # the first photo of each product as a query
    single_p, nested_p = scores(vecs[photo_q], vecs, products)
    result = {"encoder": emb.name, "per_class": args.per_class, "photos": int(sum(map(len, products))),
              "products": len(products),
              "classes": int(len(set(plabels.tolist()))), "seed": args.seed,
              "product_query": {"single_vector_mean": metrics(single, plabels, plabels, ids),
                                "nested_max": metrics(nested, plabels, plabels, ids)},
              "photo_query": {"single_vector_mean": metrics(single_p, plabels, plabels, ids),
                              "nested_max": metrics(nested_p, plabels, plabels, ids)},
              "seconds": round(time.monotonic() - t0, 1)}
    print(result)
    write_result("products", result)


if __name__ == "__main__":
    main()
