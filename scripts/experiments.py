"""Model selection on folds: every configuration on several class folds and seeds, both protocols.

class-disjoint: k class folds (each class held out once; the head trains on the other classes,
  early-stops on held-out classes of its train part, and is scored on the unseen fold) x seeds.
in-domain: image splits (half of every class's photos to train, half to test), one per seed.

Scores are MAP@R and Recall@1 of the test part (every test image queries all the others), each
with the re-ranking settings asked for, and the ratio to pretrained cosine (average pooling, no
re-ranking) of the same backbone on the same test part. Backbone features come from the on-disk
cache (es_metric.training.features), so a sweep of heads costs minutes. Results accumulate in
OUT/results.jsonl (a finished run is not redone) and are summarised in OUT/summary.json and
OUT/summary.md (mean ± standard deviation over folds and seeds).

Usage: nice -n 10 python scripts/experiments.py DATA_DIR --out runs/experiments [--config NAME]...
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from es_metric.model.encoder import create_encoder
from es_metric.training.config import DEFAULT_RERANK
from es_metric.similarity import Metric
from es_metric.training.backbone import train_backbone
from es_metric.training.catalogue import Catalogue
from es_metric.training.data import Sample, class_folds, relabel, scan_folder, split
from es_metric.training.evaluate import Embedded, retrieval_metrics
from es_metric.training.features import backbone_features, descriptors
from es_metric.training.frozen import train_frozen
from es_metric.training.losses import objective
from es_metric.training.partial import early_activations, tail_start, tail_vectors
from es_metric.training.protocols import catalogue_split
from es_metric.training.validate import Validator
from es_metric.training.sampling import seed_everything
from es_metric.training.train import TrainConfig
from es_metric.types import NO_RERANK, ReRank

log = logging.getLogger("experiments")


@dataclass(frozen=True)
class Config:
    """One configuration: features (backbone, pooling, views) and head (None: raw features)."""

    backbone: str = "efficientnet-lite0"
    pool: str = "auto"      # as esm train: stages for a head on the frozen Lite, avg for raw features
    flip: bool = False
    train: dict | None = field(default_factory=dict)  # TrainConfig overrides; None = no head

    def train_config(self, protocol: str, seed: int) -> TrainConfig:
        return TrainConfig(**{"backbone": self.backbone, "pool": self.pool, "protocol": protocol,
                              "seed": seed, **(self.train or {})})  # otherwise esm train's defaults


RAW = None
CONFIGS: dict[str, Config] = {
    # raw pretrained features, cosine (the baseline and its variants)
    "raw": Config(train=RAW),
    "raw-gem": Config(pool="gem", train=RAW),
    "raw-flip": Config(flip=True, train=RAW),
    "raw-lite1": Config(backbone="efficientnet-lite1", train=RAW),
    "raw-lite2": Config(backbone="efficientnet-lite2", train=RAW),
    # esm train's defaults (multi-similarity, linear 1280->256 from the learned whitening, refit), then one change each
    "default": Config(),
    "no-refit": Config(train={"refit": False}),
    "pca-start": Config(train={"init": "pca"}),   # the linear head's start before the learned whitening
    "avg": Config(pool="avg"),                    # the default before stages pooling (last convolution only)
    "mlp": Config(train={"head": "mlp"}),
    "head-reg1": Config(train={"head_reg": 1.0}),
    "head-reg10": Config(train={"head_reg": 10.0}),
    "gem": Config(pool="gem"),
    "lite1": Config(backbone="efficientnet-lite1"),
    "lite2": Config(backbone="efficientnet-lite2"),
    "triplet": Config(train={"loss": "triplet"}),
    "mahalanobis": Config(train={"loss": "mahalanobis"}),
    # fine-tuning the last 2 blocks (+ head convolution) on cached early activations, 2 views
    "ft2": Config(train={"train_blocks": 2, "views": 2, "epochs": 12, "patience": 3}),
}
RERANKS: dict[str, ReRank] = {
    "none": NO_RERANK, "qe5": ReRank(qe_k=5), "qe10": ReRank(qe_k=10),
    "dba10": ReRank(dba_k=10), "dba5+qe5": ReRank(qe_k=5, dba_k=5),
    "dba10+qe10": DEFAULT_RERANK, "dba20+qe10": ReRank(qe_k=10, dba_k=20),
}


def splits(samples: list[Sample], folds: int, seeds: list[int], id_splits: list[int]):
    """(protocol, split name, seed, train, test) of every run."""
    class_splits = class_folds(samples, folds, seed=0)
    for seed in seeds:  # every fold once before the next seed
        for fold, (train_s, test_s) in enumerate(class_splits):
            yield "class-disjoint", f"fold{fold}", seed, train_s, test_s
    for seed in id_splits:
        train_s, test_s = split(samples, "in-domain", 0.5, seed)
        yield "in-domain", f"split{seed}", seed, train_s, test_s


class Features:
    """Descriptors of every image of the data set, per (backbone, pooling, flip); rows by path."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.row = {s.path: i for i, s in enumerate(samples)}
        self._cache: dict[tuple, torch.Tensor] = {}

    def of(self, cfg: Config, part: list[Sample], pool: str) -> torch.Tensor:
        key = (cfg.backbone, pool, cfg.flip)
        if key not in self._cache:
            t0 = time.monotonic()
            if pool == "stages":  # pooled from several stages' maps: the backbone's own forward (cached)
                if cfg.flip:
                    raise SystemExit("stages pooling has no flip-averaged variant here")
                self._cache[key] = backbone_features(cfg.backbone, self.samples, pretrained=True, pool=pool).float()
            else:
                self._cache[key] = descriptors(cfg.backbone, self.samples, pool=pool, flip=cfg.flip).float()
            log.info("features %s ready in %.0f s", key, time.monotonic() - t0)
        return self._cache[key][[self.row[s.path] for s in part]]


def score(vecs: torch.Tensor, test_s: list[Sample], metric: Metric, reranks: dict[str, ReRank]) -> dict:
    labels = torch.tensor([s.label for s in test_s]).numpy()
    emb = Embedded(vecs.numpy(), labels, test_s, metric, "run")
    out = {}
    for name, rr in reranks.items():
        m = retrieval_metrics(emb, rr, full=False)
        out[name] = {"map_at_r": m["map_at_r"], "recall_at_1": m["recall_at_1"]}
    return out


class EarlyActs:
    """Early-block activations of every image (plain view, and augmented views), rows by path."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.row = {s.path: i for i, s in enumerate(samples)}
        self._cache: dict[tuple, torch.Tensor] = {}

    def of(self, encoder, name: str, start: int, part: list[Sample], view: int | None) -> torch.Tensor:
        key = (name, start, view)
        if key not in self._cache:
            self._cache[key] = early_activations(encoder, name, self.samples, start,
                                                 augment=view is not None, seed=view or 0)
        return self._cache[key][[self.row[s.path] for s in part]]


def _catalogue_run(tc: TrainConfig, train_s: list[Sample]):
    """The fold's train part as esm train sees a class folder: (catalogue, validator)."""
    cat = Catalogue("fold", relabel(train_s))
    split_ = catalogue_split(cat.samples, tc.val_fraction, tc.seed)
    return cat, Validator(split_, {}, tc.protocol)


def run_finetune(cfg: Config, acts: EarlyActs, tc: TrainConfig, train_s: list[Sample],
                 test_s: list[Sample], reranks: dict[str, ReRank], out: Path) -> dict:
    """Fine-tune the last blocks as esm train does (training/backbone.py); score the test part."""
    cat, validator = _catalogue_run(tc, train_s)
    obj = objective(tc.loss)
    encoder = create_encoder(tc.backbone, dim=tc.dim, metric=obj.metric, pretrained=True, head=tc.head)
    t0 = time.monotonic()
    history, metrics, _ = train_backbone(encoder, obj, tc, cat, validator, out / "ft.ckpt", None, False)
    seconds = time.monotonic() - t0
    start = tail_start(encoder, tc.train_blocks)
    vecs = tail_vectors(encoder, acts.of(encoder, tc.backbone, start, test_s, None), start)
    return {"scores": score(vecs, test_s, obj.metric, reranks), "train_s": round(seconds, 1),
            "epochs": len(history) - 1, "history": history, "gate": metrics["gate"]["passed"]}


def run_one(cfg: Config, feats: Features, protocol: str, seed: int, train_s: list[Sample],
            test_s: list[Sample], reranks: dict[str, ReRank], acts: EarlyActs | None = None,
            out: Path = Path(".")) -> dict:
    if cfg.train and cfg.train.get("train_blocks"):
        tc = cfg.train_config(protocol, seed).resolved()
        seed_everything(seed)
        return run_finetune(cfg, acts, tc, train_s, test_s, reranks, out)
    if cfg.train is None:
        test = feats.of(cfg, test_s, "avg" if cfg.pool == "auto" else cfg.pool)
        return {"scores": score(F.normalize(test, dim=-1), test_s, Metric.COSINE, reranks)}
    tc = cfg.train_config(protocol, seed).resolved()
    test = feats.of(cfg, test_s, tc.pool)
    seed_everything(seed)
    cat, validator = _catalogue_run(tc, train_s)  # as esm train: the frozen regime, its validation
    obj = objective(tc.loss)
    encoder = create_encoder(tc.backbone, dim=tc.dim, metric=obj.metric, pretrained=True,
                             head=tc.head, feature_norm=obj.name == "mahalanobis", pool=tc.pool)
    started = time.monotonic()
    history, metrics, rerank, refit = train_frozen(encoder, obj, tc, cat, validator)
    seconds = time.monotonic() - started
    with torch.no_grad():
        vecs = encoder.project(test)
    return {"scores": score(vecs, test_s, obj.metric, reranks), "train_s": round(seconds, 1),
            "epochs": len(history) - 1, "refit_epochs": refit, "gate": metrics["gate"]["passed"],
            "validation": metrics["validation"], "rerank_chosen": rerank}


def load_done(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["config"], r["protocol"], r["split"], r["seed"])] = r
    return done


def sd(xs) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± standard deviation over runs of each (protocol, config, re-ranking), with MAP@R
    ratios to raw cosine (no re-ranking) on the same split."""
    base = {(r["protocol"], r["split"], r["seed"], r["backbone"]): r["scores"]["none"]["map_at_r"]
            for r in rows if r["settings"]["train"] is None  # raw features pool "auto" as avg (run_one)
            and r["settings"]["pool"] in ("avg", "auto") and not r["settings"]["flip"]}
    groups: dict[tuple, list] = {}
    for r in rows:
        b = base.get((r["protocol"], r["split"], r["seed"], "efficientnet-lite0"))
        bb = base.get((r["protocol"], r["split"], r["seed"], r["backbone"]), b)
        for rr, sc in r["scores"].items():
            groups.setdefault((r["protocol"], r["config"], rr), []).append(
                (sc["map_at_r"], sc["recall_at_1"], sc["map_at_r"] / bb if bb else float("nan"),
                 r.get("train_s")))
    out = []
    for (protocol, config, rr), vals in sorted(groups.items()):
        maps, r1, ratio, secs = zip(*vals)
        secs = [s for s in secs if s is not None]
        out.append({"protocol": protocol, "config": config, "rerank": rr, "runs": len(vals),
                    "map_at_r": statistics.mean(maps), "map_at_r_sd": sd(maps),
                    "ratio": statistics.mean(ratio), "ratio_sd": sd(ratio),
                    "ratio_min": min(ratio), "ratio_max": max(ratio),
                    "recall_at_1": statistics.mean(r1), "train_s": statistics.mean(secs) if secs else None})
    return out


def markdown(summary: list[dict]) -> str:
    lines = ["| protocol | config | re-ranking | runs | MAP@R | × raw cosine (min–max) | R@1 | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        secs = f"{s['train_s']:.1f}" if s["train_s"] is not None else ""
        lines.append(f"| {s['protocol']} | {s['config']} | {s['rerank']} | {s['runs']} | "
                     f"{s['map_at_r']:.3f} ± {s['map_at_r_sd']:.3f} | ×{s['ratio']:.2f} ± {s['ratio_sd']:.2f} "
                     f"({s['ratio_min']:.2f}–{s['ratio_max']:.2f}) | {s['recall_at_1']:.3f} | {secs} |")
    return "\n".join(lines) + "\n"


def pivot_markdown(summary: list[dict], reranks: tuple[str, ...] = ("none", "dba10+qe10")) -> str:
    """One row per configuration: MAP@R (mean ± sd) and × raw cosine for each protocol, without
    re-ranking and with the default re-ranking (BENCHMARKS.md §12c)."""
    cell = {(s["config"], s["protocol"], s["rerank"]): s for s in summary}
    order = list(CONFIGS)
    configs = sorted({s["config"] for s in summary}, key=lambda c: (order.index(c) if c in order else len(order), c))
    head = "| configuration | runs (cd / id) | " + " | ".join(
        f"{p} {'' if r == 'none' else '+ ' + r} MAP@R (× raw)" for p in ("class-disjoint", "in-domain")
        for r in reranks) + " | head train s (cd / id) |"
    lines = [head, "|" + "---|" * (3 + 2 * len(reranks))]
    for c in configs:
        cells, runs, secs = [], [], []
        for p in ("class-disjoint", "in-domain"):
            first = cell.get((c, p, "none"))
            runs.append(str(first["runs"]) if first else "–")
            secs.append(f"{first['train_s']:.0f}" if first and first["train_s"] else "–")
            for r in reranks:
                x = cell.get((c, p, r))
                cells.append(f"{x['map_at_r']:.3f} ± {x['map_at_r_sd']:.3f} (×{x['ratio']:.2f} ± {x['ratio_sd']:.2f})"
                             if x else "–")
        lines.append(f"| {c} | {' / '.join(runs)} | " + " | ".join(cells) + f" | {' / '.join(secs)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--out", default="runs/experiments")
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS), help="default: all")
    ap.add_argument("--rerank", action="append", choices=sorted(RERANKS), help="default: all")
    ap.add_argument("--protocol", action="append", choices=["in-domain", "class-disjoint"])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--id-splits", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--exclude", action="append", default=["iconic"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 runs best on shared cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = load_done(results)
    samples = scan_folder(args.data, exclude=tuple(args.exclude))
    feats, acts = Features(samples), EarlyActs(samples)
    reranks = {k: RERANKS[k] for k in (args.rerank or RERANKS)}
    names = ["raw"] + [c for c in (args.config or CONFIGS) if c != "raw"]
    started = time.monotonic()
    runs = [r for r in splits(samples, args.folds, args.seeds, args.id_splits)
            if not args.protocol or r[0] in args.protocol]
    for name in names:  # one configuration on every split before the next
        cfg = CONFIGS[name]
        for protocol, split_name, seed, train_s, test_s in runs:
            key = (name, protocol, split_name, seed)
            if key in done and set(reranks) <= set(done[key]["scores"]):
                continue
            row = {"config": name, "protocol": protocol, "split": split_name, "seed": seed,
                   "backbone": cfg.backbone, "settings": asdict(cfg),
                   **run_one(cfg, feats, protocol, seed, train_s, test_s, reranks, acts, out)}
            log.info("%s %s %s seed %d: %s", protocol, name, split_name, seed,
                     {k: round(v["map_at_r"], 4) for k, v in row["scores"].items()})
            done[key] = row
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    summary = summarise(list(done.values()))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary) + "\n" + pivot_markdown(summary))
    print(pivot_markdown(summary))
    log.info("sweep took %.0f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
