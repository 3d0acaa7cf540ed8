"""A labelled hybrid (photo + text) benchmark on the Grocery Store photos and products.jsonl,
on several folds, to choose the search defaults (fusion, weights, text-leg field weights,
window) and to measure collapse and diversify.

Index (one per fold): the photos of one split's test half (`esm split`), each document carrying
its product's catalogue fields as text (title, description, ingredients, coarse_class, group,
origin_and_size): ``--manifest PHOTOS`` writes the manifest, then `esm mapping create` +
`esm ingest` (commands in BENCHMARKS.md §7).

Queries: every indexed photo as an upload would be (its raw model vector, expanded by the
index's query expansion as a search does, itself excluded), or with ``--iconic`` each product's
iconic image (a clean catalogue packshot against the shoppers' photos of the index: a domain gap
like a shopper's photo against a catalogue), each with four texts a shopper
might type: *helpful* (the coarse class, or it plus a word only a few products' description or
ingredients have), *name* (two words of the product's name, like "wool hoodie"), *vague* (the
group, or a common description word such as "sweet"), *misleading* (the coarse class of another
product in the same index). Relevance: same product 2, same coarse class 1, other 0.

Both legs go through Elasticsearch once per query (windows of 1,000: the kNN leg as
es_metric.search.hybrid asks for it, the text leg once per text and per text-leg configuration);
every fusion, weight, window, collapse and diversify setting is then evaluated offline by
bench/hybrid_eval.py with es_metric.search.fusion and es_metric.search.diversity, as a search
with those settings ranks.

Usage: python bench/hybrid.py INDEX --data GROCERY_DIR --out DIR --manifest PHOTOS
       python bench/hybrid.py INDEX --data GROCERY_DIR --out DIR [--every N] [--iconic]   (needs the stack)
       python bench/hybrid_eval.py DIR [DIR ...]                                 (offline)
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

COLLECT_WINDOW = 1000
KINDS = ("helpful", "name", "vague", "misleading")
VAGUE_WORDS = frozenset("sweet fresh yellow green red white creamy juicy round mild sour "
                        "breakfast drink taste".split())
STOP = frozenset("a an and are as at be but by can for from has have in is it its of on or than "
                 "that the this to with was were which also more very not no class klass".split())
FIELDS = ("title", "description", "ingredients", "coarse_class", "group", "origin_and_size")
# text-leg configurations measured: (name boost, multi_match type, tie_breaker or None). A shopper's
# two words often sit in two fields ("wool" in the description, "hoodie" in the name): best_fields
# scores only the best field, a tie_breaker adds the others' scores at that share, most_fields sums them
TEXT_CONFIGS = {"flat": (1.0, "best_fields", None), "name2": (2.0, "best_fields", None),
                "name3": (3.0, "best_fields", None), "name5": (5.0, "best_fields", None),
                "name3-cross": (3.0, "cross_fields", None), "name3-tie": (3.0, "best_fields", 0.3),
                "name3-most": (3.0, "most_fields", None)}


def words(text: str | None, minimum: int = 4) -> list[str]:
    return [w for w in re.findall(r"[a-zåäöéü]+", (text or "").lower()) if w not in STOP and len(w) >= minimum]


def query_texts(p: dict, catalogue: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """(kind, text) for a photo of product ``p``; ``catalogue``: the products in the index."""
    df = Counter(w for q in catalogue for w in set(words(q["description"])) | set(words(q.get("ingredients"))))
    own = set(words(p["description"])) | set(words(p.get("ingredients")))
    coarse = p["coarse_class"].replace("-", " ").lower()
    rare = sorted(w for w in own if df[w] <= 2 and w not in coarse.split())
    helpful = f"{coarse} {rng.choice(rare)}" if rare and rng.random() < 0.5 else coarse
    name_words = list(dict.fromkeys(words(p["title"], 3)))
    name = " ".join(name_words[:2]) or coarse
    common = sorted(own & VAGUE_WORDS)
    vague = rng.choice(common) if common and rng.random() < 0.5 else p["group"].lower()
    others = sorted({q["coarse_class"] for q in catalogue} - {p["coarse_class"]})
    return [("helpful", helpful), ("name", name), ("vague", vague),
            ("misleading", rng.choice(others).replace("-", " ").lower())]


def write_manifest(photos: Path, data: Path, out: Path) -> Path:
    """OUT/manifest.jsonl: every photo of PHOTOS/<class>/ with its product's catalogue fields."""
    catalogue = {p["class"]: p for p in map(json.loads, (data / "products.jsonl").read_text().splitlines())}
    path = out / "manifest.jsonl"
    with path.open("w") as fh:
        for img in sorted(photos.glob("*/*")):
            p = catalogue[img.parent.name]
            fh.write(json.dumps({"id": f"{img.parent.name}/{img.stem}", "image": str(img.resolve()),
                                 "label": img.parent.name, **{k: p[k] for k in FIELDS if p.get(k)}}) + "\n")
    return path


def read_docs(es, info) -> tuple[list[str], list[dict], np.ndarray, np.ndarray]:
    """Every document: ids, sources (label, coarse class), raw and stored (searched) vectors."""
    from elasticsearch.helpers import scan

    from es_metric.index.vectors import hit_vector, raw_vector_field

    raw = raw_vector_field(info.vector_field)
    hits = sorted(scan(es, index=info.concrete, _source=["label", "coarse_class"],
                       query={"query": {"match_all": {}}, "docvalue_fields": [info.vector_field, raw],
                              "sort": ["_doc"]}), key=lambda h: h["_id"])
    stored = np.asarray([hit_vector(h, info.vector_field) for h in hits], np.float32)
    raws = np.asarray([hit_vector(h, raw) or hit_vector(h, info.vector_field) for h in hits], np.float32)
    return [h["_id"] for h in hits], [h["_source"] for h in hits], raws, stored


def collect(index: str, data: Path, out: Path, limit: int | None, iconic: bool, every: int = 1,
            seed: int = 0) -> None:
    """Both legs of every query through Elasticsearch: OUT/legs.npz and OUT/texts.json.gz.
    Queries: every indexed photo (itself excluded), or with ``iconic`` the catalogue's iconic
    image of every product in the index (a clean packshot against shoppers' photos: a domain gap)."""
    from es_metric.config import Settings
    from es_metric.index.client import make_client
    from es_metric.search.hybrid import Window, image_leg
    from es_metric.search.service import (SearchRequest, expanded_vector, image_vector, query_expansion,
                                          resolve)

    es = make_client(Settings.from_env())
    info, props = resolve(es, index)
    ids, sources, raws, stored = read_docs(es, info)
    pos = {d: i for i, d in enumerate(ids)}
    catalogue = [json.loads(x) for x in (data / "products.jsonl").read_text().splitlines()]
    present = {s["label"] for s in sources}
    in_index = [p for p in catalogue if p["class"] in present]
    by_class = {p["class"]: p for p in catalogue}
    if iconic:
        queries = [{"label": p["class"], "coarse": p["coarse_class"], "doc": None,
                    "vector": image_vector(info, (data / p["iconic_image"]).read_bytes())} for p in in_index]
    else:
        queries = [{"label": sources[i]["label"], "coarse": sources[i]["coarse_class"], "doc": i,
                    "vector": raws[i].tolist()} for i in range(0, len(ids), every)][:limit]
    rr = query_expansion(info, SearchRequest(like=["x"]))
    rng = random.Random(seed)
    img_ids = np.full((len(queries), COLLECT_WINDOW), -1, np.int32)
    img_scores = np.zeros((len(queries), COLLECT_WINDOW), np.float32)
    texts: dict[str, list] = {}
    rows, took = [], []
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        exclude = [ids[q["doc"]]] if q["doc"] is not None else []
        vector = q.pop("vector")
        if rr.qe_k > 0:
            vector = expanded_vector(es, info, vector, rr, {}, exclude, None)
        leg = image_leg(es, info, Window(size=COLLECT_WINDOW, vector=vector, exclude=exclude))
        took.append(time.perf_counter() - t0)
        img_ids[qi, :len(leg.ids)] = [pos[d] for d in leg.ids]
        img_scores[qi, :len(leg.ids)] = leg.scores
        for kind, text in query_texts(by_class[q["label"]], in_index, rng):
            rows.append({"q": qi, "kind": kind, "text": text})
            texts.setdefault(text, [])
    legs = {name: {t: text_window(es, info, t, boost, kind, pos, tie) for t in texts}
            for name, (boost, kind, tie) in TEXT_CONFIGS.items()}
    np.savez_compressed(out / "legs.npz", img_ids=img_ids, img_scores=img_scores, stored=stored)
    blob = {"index": info.concrete, "model_id": info.model_id, "ids": ids, "iconic": iconic,
            "labels": [s["label"] for s in sources], "coarse": [s["coarse_class"] for s in sources],
            "queries": queries, "rows": rows, "text_legs": legs, "qe": rr.as_dict(),
            "knn_ms_p50": round(1000 * sorted(took)[len(took) // 2], 1)}
    with gzip.open(out / "texts.json.gz", "wt") as fh:
        json.dump(blob, fh)


def text_window(es, info, text: str, boost: float, kind: str, pos: dict, tie: float | None = None) -> list[list]:
    """One text leg (window COLLECT_WINDOW) as [doc indices, scores]."""
    from es_metric.search.hybrid import Window, text_leg
    from es_metric.search.textquery import field_weights

    match = {"query": text, "fields": field_weights(list(FIELDS), boost), "type": kind}
    query = {"multi_match": match if tie is None else {**match, "tie_breaker": tie}}
    leg = text_leg(es, info, Window(size=COLLECT_WINDOW, text=text, fields=list(FIELDS), text_query=query))
    return [[pos[d] for d in leg.ids], [round(float(s), 5) for s in leg.scores]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index")
    ap.add_argument("--data", type=Path, required=True, help="the Grocery Store folder (its products.jsonl)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, metavar="PHOTOS",
                    help="only write OUT/manifest.jsonl for PHOTOS/<class>/* (then mapping create + ingest)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos as queries")
    ap.add_argument("--every", type=int, default=1, help="every N-th indexed photo as a query")
    ap.add_argument("--iconic", action="store_true",
                    help="query with each product's iconic (catalogue) image instead of the indexed photos")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.manifest:
        print(write_manifest(args.manifest, args.data, args.out))
        return
    t0 = time.perf_counter()
    collect(args.index, args.data, args.out, args.limit, args.iconic, args.every)
    print(f"legs of {args.index} in {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
