"""A labelled hybrid (photo + text) benchmark on the Grocery Store photos and products.jsonl.

Index: the photos of one image split (e.g. ``esm split``'s test half), each document carrying
its product's catalogue fields as text (title, description, ingredients, coarse_class, group,
origin_and_size): ``--manifest PHOTOS`` writes the manifest, then `esm mapping create` +
`esm ingest` (commands in BENCHMARKS.md).

Queries: every indexed photo as an upload would be (its raw model vector, itself excluded),
each with three texts a shopper might type, none from the title: helpful (the coarse class,
or it plus a word only a few products' description/ingredients have), vague (the group, or a
common description word such as "sweet"), misleading (another product's coarse class).
Relevance: same product 2, same coarse class 1, other 0. nDCG@10 (ideal from the index) and
MAP@R (R = the product's other photos, same-product relevance).

Both legs go through Elasticsearch once (windows of 200, es_metric.search.hybrid); every
method and weight is then fused from those windows by es_metric.search.fusion, exactly as a
search with a leg window of max(100, k) does.

Usage: python bench/hybrid.py INDEX --data GROCERY_DIR --out DIR --manifest PHOTOS
       python bench/hybrid.py INDEX --data GROCERY_DIR --out DIR [--limit N]   (needs the stack)
       python bench/hybrid.py INDEX --out DIR --evaluate     (offline, from DIR/legs.json.gz)
       python bench/hybrid.py INDEX --out DIR --table        (the table from DIR/results.json)
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from es_metric.search.fusion import (DEFAULT_IMAGE_WEIGHT, DEFAULT_TEXT_WEIGHT, DEFAULT_WINDOW, FUSIONS,
                                     Leg, fuse)

COLLECT_WINDOW = 200
KINDS = ("helpful", "vague", "misleading")
VAGUE_WORDS = frozenset("sweet fresh yellow green red white creamy juicy round mild sour "
                        "breakfast drink taste".split())
STOP = frozenset("a an and are as at be but by can for from has have in is it its of on or than "
                 "that the this to with was were which also more very not no".split())


def words(text: str | None) -> set[str]:
    return {w for w in re.findall(r"[a-zåäöéü]+", (text or "").lower()) if w not in STOP and len(w) >= 4}


def query_texts(p: dict, catalogue: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """(kind, text) for a photo of product ``p``: helpful, vague, misleading."""
    df = Counter(w for q in catalogue for w in words(q["description"]) | words(q.get("ingredients")))
    own = words(p["description"]) | words(p.get("ingredients"))
    coarse = p["coarse_class"].replace("-", " ").lower()
    rare = sorted(w for w in own if df[w] <= 2 and w not in coarse.split())
    helpful = f"{coarse} {rng.choice(rare)}" if rare and rng.random() < 0.5 else coarse
    common = sorted(own & VAGUE_WORDS)
    vague = rng.choice(common) if common and rng.random() < 0.5 else p["group"].lower()
    others = sorted({q["coarse_class"] for q in catalogue} - {p["coarse_class"]})
    return [("helpful", helpful), ("vague", vague),
            ("misleading", rng.choice(others).replace("-", " ").lower())]


FIELDS = ("title", "description", "ingredients", "coarse_class", "group", "origin_and_size")


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


def collect(index: str, data: Path, out: Path, limit: int | None, seed: int = 0) -> None:
    """Both legs of every query through Elasticsearch, to OUT/legs.json.gz."""
    from elasticsearch.helpers import scan

    from es_metric.config import Settings
    from es_metric.index.client import make_client
    from es_metric.search.hybrid import Window, image_leg, text_leg
    from es_metric.search.queries import raw_vector_field
    from es_metric.search.service import resolve, text_fields_of

    es = make_client(Settings.from_env())
    info, props = resolve(es, index)
    fields = text_fields_of(props)
    catalogue = [json.loads(x) for x in (data / "products.jsonl").read_text().splitlines()]
    by_class = {p["class"]: p for p in catalogue}
    raw = raw_vector_field(info.vector_field)
    docs = [(h["_id"], h["_source"]) for h in scan(
        es, index=info.concrete, _source=["label", "coarse_class", info.vector_field, raw],
        query={"query": {"match_all": {}}, "sort": ["_doc"]})]
    rng = random.Random(seed)
    queries, image, texts, took = [], {}, {}, []
    for doc_id, src in sorted(docs)[:limit]:
        t0 = time.perf_counter()
        w = Window(size=COLLECT_WINDOW, vector=src.get(raw) or src[info.vector_field], exclude=[doc_id])
        leg = image_leg(es, info, w)
        took.append(time.perf_counter() - t0)
        image[doc_id] = [list(leg.ids), list(leg.scores)]
        for kind, text in query_texts(by_class[src["label"]], catalogue, rng):
            queries.append({"id": doc_id, "kind": kind, "text": text})
            if text not in texts:
                leg = text_leg(es, info, Window(size=COLLECT_WINDOW, text=text, fields=fields))
                texts[text] = [list(leg.ids), list(leg.scores)]
    blob = {"index": info.concrete, "model_id": info.model_id, "fields": fields,
            "labels": {d: s["label"] for d, s in docs}, "coarse": {d: s["coarse_class"] for d, s in docs},
            "queries": queries, "image": image, "text": texts,
            "knn_ms_p50": round(1000 * sorted(took)[len(took) // 2], 1)}
    with gzip.open(out / "legs.json.gz", "wt") as fh:
        json.dump(blob, fh)


class Judge:
    """Graded relevance: same product 2, same coarse class 1, other 0."""

    def __init__(self, labels: dict, coarse: dict) -> None:
        self.label, self.coarse = labels, coarse
        self.per_label, self.per_coarse = Counter(labels.values()), Counter(coarse.values())

    def r(self, q: str) -> int:
        return self.per_label[self.label[q]] - 1

    def ndcg10(self, q: str, ranked: list[str]) -> float:
        gain = [2 if self.label[d] == self.label[q] else int(self.coarse[d] == self.coarse[q])
                for d in ranked[:10]]
        same, coarse_only = self.r(q), self.per_coarse[self.coarse[q]] - self.per_label[self.label[q]]
        ideal = ([2] * same + [1] * coarse_only + [0] * 10)[:10]
        dcg = lambda g: sum(x / math.log2(i + 2) for i, x in enumerate(g))  # noqa: E731
        return dcg(gain) / dcg(ideal)

    def map_at_r(self, q: str, ranked: list[str]) -> float:
        r, hits, total = self.r(q), 0, 0.0
        for i, d in enumerate(ranked[:r], 1):
            if self.label[d] == self.label[q]:
                hits += 1
                total += hits / i
        return total / r if r else 0.0


def ranking(method: str, w_image: float, img: list, txt: list, k: int) -> list[str]:
    """The ids a search for ``k`` results returns: legs cut to the search's window."""
    n = max(DEFAULT_WINDOW, k)
    if method == "image":
        return img[0][:k]
    if method == "text":
        return txt[0][:k]
    legs = [Leg(img[0][:n], img[1][:n], w_image), Leg(txt[0][:n], txt[1][:n], 1.0 - w_image)]
    return [d for d, _ in fuse(method, legs)[:k]]


def run(blob: dict, judge: Judge, method: str, w_image: float = 0.5) -> dict:
    """Mean nDCG@10 and MAP@R per query kind, and over the kinds (each weighs the same)."""
    per = defaultdict(lambda: ([], []))
    for q in blob["queries"]:
        img = blob["image"][q["id"]]
        t_ids, t_sc = blob["text"][q["text"]]
        keep = [i for i, d in enumerate(t_ids) if d != q["id"]]     # the query photo itself
        txt = [[t_ids[i] for i in keep], [t_sc[i] for i in keep]]
        r = judge.r(q["id"])
        top = ranking(method, w_image, img, txt, max(10, r))
        per[q["kind"]][0].append(judge.ndcg10(q["id"], top))
        per[q["kind"]][1].append(judge.map_at_r(q["id"], top))
    out = {k: {"ndcg10": round(sum(v[0]) / len(v[0]), 4), "map_at_r": round(sum(v[1]) / len(v[1]), 4)}
           for k, v in per.items()}
    out["all"] = {m: round(sum(out[k][m] for k in KINDS) / len(KINDS), 4) for m in ("ndcg10", "map_at_r")}
    return out


def evaluate(out: Path) -> dict:
    with gzip.open(out / "legs.json.gz", "rt") as fh:
        blob = json.load(fh)
    judge = Judge(blob["labels"], blob["coarse"])
    results = {"legs": {m: run(blob, judge, m) for m in ("image", "text")}, "sweep": {}}
    for m in FUSIONS:
        for w in sorted({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, default_w_image()}):
            results["sweep"][f"{m} w_image={w:g}"] = run(blob, judge, m, w)
            print(f"{m:9s} w_image={w:.1f} {results['sweep'][f'{m} w_image={w:g}']}", flush=True)
    results["queries"], results["knn_ms_p50"] = len(blob["queries"]), blob["knn_ms_p50"]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def default_w_image() -> float:
    """The library's default weights as the sweep's image share."""
    return round(DEFAULT_IMAGE_WEIGHT / (DEFAULT_IMAGE_WEIGHT + DEFAULT_TEXT_WEIGHT), 4)


def table(results: dict) -> str:
    """Both legs, every method at 1:1 and at the default weights, the sweep's best six."""
    rows = ["| method (image:text weights) | nDCG@10 all | helpful | vague | misleading | MAP@R all | MAP@R misleading |",
            "|---|---|---|---|---|---|---|"]
    sweep, dw = results["sweep"], default_w_image()
    named = [(f"{m} only", v) for m, v in results["legs"].items()]
    named += [(f"{m} (1:1)", sweep[f"{m} w_image=0.5"]) for m in FUSIONS]
    named += [(f"{m} (default {dw:g}:{1 - dw:g})", sweep[f"{m} w_image={dw:g}"]) for m in FUSIONS]
    best = sorted(sweep.items(), key=lambda kv: -kv[1]["all"]["ndcg10"])[:6]
    for name, v in named + [(f"sweep: {n}", v) for n, v in best]:
        rows.append(f"| {name} | {v['all']['ndcg10']:.3f} | {v['helpful']['ndcg10']:.3f} | "
                    f"{v['vague']['ndcg10']:.3f} | {v['misleading']['ndcg10']:.3f} | "
                    f"{v['all']['map_at_r']:.3f} | {v['misleading']['map_at_r']:.3f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index")
    ap.add_argument("--data", type=Path, help="the Grocery Store folder (its products.jsonl)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, metavar="PHOTOS",
                    help="only write OUT/manifest.jsonl for PHOTOS/<class>/* (then mapping create + ingest)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos as queries")
    ap.add_argument("--evaluate", action="store_true", help="only the offline half")
    ap.add_argument("--table", action="store_true", help="only the table, from DIR/results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.manifest:
        print(write_manifest(args.manifest, args.data, args.out))
        return
    if not (args.evaluate or args.table):
        collect(args.index, args.data, args.out, args.limit)
    results = json.loads((args.out / "results.json").read_text()) if args.table else evaluate(args.out)
    md = table(results)
    (args.out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
