"""The calibrated cut-off (``esm search --min-similarity auto``) measured on unseen photos.

A model trained with ``esm train`` on a class fold's train part records ``metrics.cutoff``
(precision target P, similarity t) calibrated on its validation images. Here the fold's test
part (products the model never saw) is indexed through the workers (the DBA pass ``esm
ingest`` runs) and every test photo is searched as an upload (itself excluded by a filter,
the card's query expansion on), k = 10, once without a floor and once with ``auto``:

* precision: the share of the hits that survive the cut that are the query's product (pooled
  over queries, as the calibration counts pairs); recall: the share of the query's product's
  hits in the uncut top 10 that survive; empty: queries left with no hit;
* photos of products the index does not hold (``--absent``: e.g. the fold's train part), as a
  shopper's photo of something the shop does not sell: the share of their hits the cut keeps,
  and of them left with no hit (the ceiling: 0 and 1);
* the same at the thresholds the validation images give for other targets (0.9, 0.97, 0.99),
  read from the uncut scores (``--targets-from``: a ``--no-refit`` model of the same run, the
  head the card's calibration measured), and without query expansion (``--qe-k 0``, as a
  multi-photo index searches) at the card's threshold.

Usage: python bench/cutoff.py MODEL --test TEST_DIR [--absent DIR] [--train TRAIN_DIR --targets-from
           MODEL] [--index NAME] [--limit N]
Needs the stack. Writes bench/results/cutoff-<model stem>.json.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


from common import write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, resolve_concrete
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.sources import manifest_source
from es_metric.model.modelfile import read_card
from es_metric.search import service
from es_metric.search.cutoff import score_similarity
from es_metric.search.dba import augment_if_recorded
from es_metric.search.service import SearchRequest, run_search

K = 10


def photo_manifest(folder: Path, out: Path) -> Path:
    """A manifest of every photo of FOLDER/<class>/ (absolute, resolved paths), labelled."""
    with out.open("w") as fh:
        for img in sorted(folder.glob("*/*")):
            fh.write(json.dumps({"id": f"{img.parent.name}/{img.stem}", "image": str(img.resolve()),
                                 "label": img.parent.name}) + "\n")
    return out


def index_photos(es, settings: Settings, index: str, model: str, manifest: Path,
                 roots: tuple[Path, ...]) -> dict:
    """Create INDEX for MODEL and ingest MANIFEST through the workers, then the DBA pass."""
    create_versioned_index(es, index, read_card(model), str(Path(model).resolve()))
    t0 = time.monotonic()
    job = enqueue(settings, es, index, manifest_source(manifest, roots))
    done, failed = wait(settings, job)
    make_searchable(es, job)
    dba = augment_if_recorded(es, index)
    return {"indexed": done, "failed": failed, "ingest_s": round(time.monotonic() - t0, 1), "dba": dba}


def validation_thresholds(model: str, train: Path, targets: tuple[float, ...]) -> dict:
    """The cut-off MODEL's validation images give for each precision target: the calibration
    photos `esm train` drew from TRAIN (same split, same seed), the card's re-ranking."""
    from es_metric.model.modelfile import load_model
    from es_metric.search.rerank import ReRank
    from es_metric.similarity import Metric
    from es_metric.training.calibrate import calibrate_cutoff
    from es_metric.training.catalogue import read_catalogue
    from es_metric.training.evaluate import model_embeddings
    from es_metric.training.protocols import catalogue_split
    from es_metric.training.validate import Validator
    from es_metric.training.verdict import calibration_photos

    m = load_model(model)
    tr = m.card["training"]
    cat = read_catalogue(train, Settings.from_env())
    split = catalogue_split(cat.samples, tr["val_fraction"], tr["seed"])
    photos, labels = calibration_photos(Validator(split, cat.groups, tr["protocol"]))
    emb = model_embeddings(m, photos)
    rr = ReRank.from_dict(m.card.get("rerank"))
    return {p: (calibrate_cutoff(emb.vectors, labels, Metric(m.card["similarity"]), rr, p)
                or {}).get("similarity") for p in targets}


def once_per_image(embed):
    """``service.image_vector`` remembering the last few images: each query is embedded once
    for its several searches."""
    cache: dict[bytes, list[float]] = {}

    def cached(info, data, *args):
        if data not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[data] = embed(info, data, *args)
        return cache[data]
    return cached


def kept(hits: list[dict], t: float, similarity: str) -> list[dict]:
    return [h for h in hits if score_similarity(h["score"], similarity) >= t - 1e-6]


def absent_figures(uncut: list[list[dict]], t: float, similarity: str) -> dict | None:
    """Queries of products the index does not hold: the share of their hits kept at ``t``, and
    of the queries left with none."""
    if not uncut:
        return None
    runs = [kept(u, t, similarity) for u in uncut]
    return {"hits_kept": round(sum(map(len, runs)) / max(sum(map(len, uncut)), 1), 4),
            "empty": round(sum(not k for k in runs) / len(runs), 4)}


def figures(runs: list[tuple[str, list[dict], list[dict]]]) -> dict:
    """Precision, recall and empty answers of (label, uncut hits, surviving hits) per query."""
    relevant_kept = sum(sum(h["source"]["label"] == lab for h in k) for lab, _, k in runs)
    n_kept = sum(len(k) for _, _, k in runs)
    relevant_top = sum(sum(h["source"]["label"] == lab for h in u) for lab, u, _ in runs)
    n_top = sum(len(u) for _, u, _ in runs)
    return {"precision": round(relevant_kept / max(n_kept, 1), 4),
            "recall": round(relevant_kept / max(relevant_top, 1), 4),
            "precision_uncut": round(relevant_top / max(n_top, 1), 4),
            "hits_per_query": round(n_kept / len(runs), 2),
            "empty": round(sum(not k for _, _, k in runs) / len(runs), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--train", type=Path, help="the train part: thresholds for other targets")
    ap.add_argument("--targets-from", help="the model whose validation images give those thresholds")
    ap.add_argument("--absent", type=Path, help="photos of products the index does not hold")
    ap.add_argument("--absent-limit", type=int, default=500)
    ap.add_argument("--index", default="bench-cutoff")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=120)
    card = read_card(args.model)
    cutoff = card["metrics"]["cutoff"]
    ingest = None
    if not resolve_concrete(es, args.index):
        manifest = photo_manifest(args.test, Path(f"/tmp/{args.index}.jsonl"))
        ingest = index_photos(es, settings, args.index, args.model, manifest,
                              (args.test.resolve(), *{p.resolve().parent.parent for p in args.test.glob("*/*")}))
    service.image_vector = once_per_image(service.image_vector)
    photos = sorted(args.test.glob("*/*"))
    if args.limit:
        photos = random.Random(0).sample(photos, args.limit)
    runs, no_qe, checks, t0 = [], [], 0, time.monotonic()
    for p in photos:
        data, not_me = p.read_bytes(), [f"_id!={p.parent.name}/{p.stem}"]
        uncut = run_search(es, args.index, SearchRequest(image=data, filters=not_me, k=K))["hits"]
        auto = run_search(es, args.index, SearchRequest(image=data, filters=not_me, k=K, min_similarity="auto"))
        expected = kept(uncut, cutoff["similarity"], card["similarity"])
        assert [h["id"] for h in auto["hits"]] == [h["id"] for h in expected]
        assert auto["cut"] == len(uncut) - len(auto["hits"])
        checks += 1
        runs.append((p.parent.name, uncut, auto["hits"]))
        plain = run_search(es, args.index, SearchRequest(image=data, filters=not_me, k=K, qe_k=0))["hits"]
        no_qe.append((p.parent.name, plain, kept(plain, cutoff["similarity"], card["similarity"])))
    absent = [run_search(es, args.index, SearchRequest(image=p.read_bytes(), k=K))["hits"]
              for p in (random.Random(1).sample(sorted(args.absent.glob("*/*")), args.absent_limit)
                        if args.absent else [])]
    row = {"model_id": card["model_id"], "cutoff": cutoff, "queries": len(runs), "k": K, "ingest": ingest,
           "auto": figures(runs), "auto_without_qe": figures(no_qe),
           "absent": absent_figures(absent, cutoff["similarity"], card["similarity"]), "absent_queries": len(absent),
           "search_s": round(time.monotonic() - t0, 1), "auto_checked_against_uncut": checks}
    if args.train and args.targets_from:
        row["targets"] = {}
        for p, t in validation_thresholds(args.targets_from, args.train, (0.9, 0.95, 0.97, 0.99)).items():
            if t is not None:
                row["targets"][str(p)] = {"similarity": round(t, 4), **figures(
                    [(lab, u, kept(u, t, card["similarity"])) for lab, u, _ in runs]),
                    "absent": absent_figures(absent, t, card["similarity"])}
    print(json.dumps(row, indent=1))
    write_result(f"cutoff-{Path(args.model).stem}", row)


if __name__ == "__main__":
    main()
