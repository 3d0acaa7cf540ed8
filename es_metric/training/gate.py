"""The evaluation gate and the near-duplicate threshold, both from validation data.

The gate compares a freshly trained model with the pretrained-cosine baseline of its own
backbone on the same validation images, and says plainly when the model is not better;
`esm reindex` refuses a model whose gate failed unless forced.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..model.encoder import Encoder, backbone_spec
from ..similarity import Metric
from .calibrate import cutoff_for, duplicates_for
from .config import PROTOCOLS
from .data import Sample, labels_tensor
from .evaluate import Embedded, baseline_embeddings, retrieval_metrics, similarity_matrix
from .features import run_module

log = logging.getLogger(__name__)


def calibrate_near_duplicates(vectors: np.ndarray, labels: np.ndarray, metric: Metric,
                              precision: float = 0.99) -> float | None:
    """Loosest threshold at which pairs this close are same-class with ≥ ``precision``.

    Returned in Elasticsearch's kNN ``similarity`` units: cosine similarity (keep ≥ t) or L2
    distance (keep ≤ t).
    """
    v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    sims = similarity_matrix(v, metric)
    iu = torch.triu_indices(len(v), len(v), 1)
    pair_sims = sims[iu[0], iu[1]].numpy()
    same = (labels[iu[0].numpy()] == labels[iu[1].numpy()])
    if not same.any():
        return None
    order = np.argsort(-pair_sims)
    tp = np.cumsum(same[order])
    prec = tp / np.arange(1, len(order) + 1)
    ok = np.nonzero(prec >= precision)[0]
    if not len(ok):
        return None
    t = float(pair_sims[order][ok[-1]])
    return t if metric is Metric.COSINE else -t


def compare_with_baseline(encoder: Encoder, cfg, val_s: list[Sample], vecs: np.ndarray | None = None,
                          raw_features: torch.Tensor | None = None) -> tuple[dict, dict, np.ndarray]:
    """(model metrics, pretrained-cosine metrics, model vectors) on ``val_s``. The baseline is
    cosine on the raw backbone features (``raw_features`` when the caller has them, else
    computed with the pretrained backbone)."""
    if vecs is None:
        spec = backbone_spec(cfg.backbone)
        vecs = run_module(encoder, val_s, spec.preprocess, desc="validation").float().numpy()
    labels = labels_tensor(val_s).numpy()
    model = retrieval_metrics(Embedded(vecs, labels, val_s, encoder.metric, "model"))
    if raw_features is not None:
        raw = torch.nn.functional.normalize(raw_features.float(), dim=-1).numpy()
        base = retrieval_metrics(Embedded(raw, labels, val_s, Metric.COSINE, "baseline"))
    else:
        base = retrieval_metrics(baseline_embeddings(cfg.backbone, val_s, cfg.weights))
    return model, base, vecs


def gate_and_calibrate(encoder: Encoder, cfg, val_s: list[Sample], vecs: np.ndarray | None = None,
                       raw_features: torch.Tensor | None = None) -> dict:
    """Validation metrics of the model and its baseline, the verdict, and the threshold."""
    model, base, vecs = compare_with_baseline(encoder, cfg, val_s, vecs, raw_features)
    labels = labels_tensor(val_s).numpy()
    passed = model["map_at_r"] > base["map_at_r"]
    verdict = ("better than" if passed else "NOT better than")
    log.info("gate: model MAP@R %.4f is %s the pretrained-cosine baseline %.4f on %d validation images",
             model["map_at_r"], verdict, base["map_at_r"], len(val_s))
    return {
        "val": {k: model[k] for k in ("map_at_r", "map", "recall_at_1", "recall_at_10", "n_queries")},
        "baseline_val": {k: base[k] for k in ("map_at_r", "map", "recall_at_1", "recall_at_10")},
        "gate": {"passed": bool(passed), "protocol": cfg.protocol,
                 "against": f"{'pretrained' if cfg.pretrained else 'untrained'}-cosine {cfg.backbone}",
                 "model_map_at_r": model["map_at_r"], "baseline_map_at_r": base["map_at_r"]},
        "near_duplicate_threshold": calibrate_near_duplicates(vecs, labels, encoder.metric),
        "cutoff": cutoff_for(vecs, labels, encoder.metric, cfg),  # --min-similarity auto (calibrate.py)
        "duplicate_threshold": duplicates_for(encoder, cfg, val_s, vecs, labels),  # esm duplicates
    }


def both_protocols(metrics: dict, cfg, other: dict | None) -> dict:
    """The validation figures of both protocols (the second from the smaller report-only set,
    when the data allowed one) and what the model is for: its own catalogue (in-domain) or
    new products too (class-disjoint), judged by its gain over the baseline on held-out classes."""
    gate = metrics["gate"]
    figures = {cfg.protocol: {"map_at_r": gate["model_map_at_r"], "baseline_map_at_r": gate["baseline_map_at_r"]}}
    if other:
        figures[other["protocol"]] = {k: other[k] for k in ("map_at_r", "baseline_map_at_r", "n_images")}
    for fig in figures.values():
        fig["ratio"] = round(fig["map_at_r"] / fig["baseline_map_at_r"], 3) if fig["baseline_map_at_r"] else None
    unseen = figures.get("class-disjoint")
    transfers = None if unseen is None else bool(unseen["ratio"] and unseen["ratio"] > 1.0)
    intended = ("new products as well as the catalogue it was trained on" if transfers else
                "the catalogue it was trained on (new photos of known products)"
                if transfers is False else "the catalogue it was trained on (not measured on new products)")
    return {"validation": figures, "transfers_to_new_products": transfers, "intended_for": intended}


def other_protocol_figures(encoder: Encoder, cfg, other_s: list[Sample], vecs: np.ndarray | None = None,
                           raw_features: torch.Tensor | None = None) -> dict | None:
    """Model and baseline MAP@R on the report-only validation set of the other protocol."""
    if not other_s:
        return None
    model, base, _ = compare_with_baseline(encoder, cfg, other_s, vecs, raw_features)
    return {"protocol": PROTOCOLS[1 - PROTOCOLS.index(cfg.protocol)], "n_images": len(other_s),
            "map_at_r": model["map_at_r"], "baseline_map_at_r": base["map_at_r"]}
