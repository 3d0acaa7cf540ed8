"""Retrieval evaluation: every test image queries all the others.

MAP@R, mAP and Precision@1 come from pytorch-metric-learning's AccuracyCalculator; the
Recall@K curve (a hit in the top K) is computed from the same neighbour ranking.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.encoder import backbone_spec
from ..progressbar import progress_iter
from ..search.rerank import NO_RERANK, ReRank, ReRankedKNN, augment_database, ranked_neighbours, similarities
from ..similarity import Metric
from .data import Sample, labels_tensor, read_folder
from .features import backbone_features, run_module

__all__ = ["baseline_embeddings", "BASELINES", "color_histogram", "Embedded", "evaluate_folder",
           "map_at_r", "model_embeddings", "neighbours", "recall_at_k", "RECALL_KS",
           "retrieval_metrics", "similarity_matrix"]

log = logging.getLogger(__name__)
RECALL_KS = (1, 2, 4, 8, 10, 16, 32)


@dataclass
class Embedded:
    vectors: np.ndarray
    labels: np.ndarray
    samples: list[Sample]
    metric: Metric
    name: str


def color_histogram(samples: Sequence[Sample], bins: int = 8) -> torch.Tensor:
    """A weights-free baseline: joint RGB histogram (bins³), square-rooted (Hellinger)."""
    from ..images import load_image

    rows = []
    for s in progress_iter(samples, "colour histograms"):
        img, _ = load_image(s.path, draft=128)
        arr = np.asarray(img.resize((128, 128))).reshape(-1, 3) // (256 // bins)
        idx = arr[:, 0] * bins * bins + arr[:, 1] * bins + arr[:, 2]
        hist = np.bincount(idx, minlength=bins ** 3).astype(np.float32)
        rows.append(np.sqrt(hist / hist.sum()))
    return torch.from_numpy(np.stack(rows))


BASELINES = ("color-histogram",)


def baseline_embeddings(name: str, samples: Sequence[Sample], weights: str | None = None) -> Embedded:
    if name == "color-histogram":
        vecs = color_histogram(samples)
    else:
        vecs = backbone_features(name, samples, weights=weights,
                                 pretrained=True if weights or backbone_spec(name).pretrained_default else None)
    vecs = F.normalize(vecs.float(), dim=-1)
    return Embedded(vecs.numpy(), labels_tensor(samples).numpy(), list(samples), Metric.COSINE,
                    f"baseline:{name}")


def model_embeddings(model, samples: Sequence[Sample], batch_size: int = 32) -> Embedded:
    training = model.card.get("training") or {}
    if training.get("freeze_backbone") and training.get("pretrained"):
        # the backbone is the pretrained one, untouched: reuse its cached features
        feats = backbone_features(model.card["backbone"], samples, training.get("weights"), True,
                                  pool=model.card.get("pool", "avg"))
        with torch.no_grad():
            vecs = model.encoder.project(feats.float())
    else:
        vecs = run_module(model.encoder, samples, model.preprocess, batch_size, f"{model.model_id}")
    return Embedded(vecs.float().numpy(), labels_tensor(samples).numpy(), list(samples),
                    model.metric, model.model_id)


def similarity_matrix(vectors: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Higher is closer: cosine/dot product, or negative Euclidean distance."""
    return similarities(vectors, vectors, metric)


def neighbours(vectors: np.ndarray, metric: Metric, k: int, rerank: ReRank = NO_RERANK,
               rows: Sequence[int] | None = None) -> np.ndarray:
    """Indices of the k nearest other items for every item (self excluded), ranked as search
    ranks them with ``rerank``; with ``rows``, for those items only (a few queries of a large
    catalogue: rows x N, not N x N)."""
    v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    own = torch.arange(len(v)) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
    return ranked_neighbours(v[own], v, min(k, len(v) - 1), metric, rerank, self_rows=own)[1].numpy()


def recall_at_k(nn_labels: np.ndarray, labels: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """Fraction of queries with at least one same-label item among their first k neighbours."""
    hits = nn_labels == labels[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks if k <= hits.shape[1]}


def map_at_r(ranked_labels: Sequence, label, r: int) -> float:
    """MAP@R of one query from a ranked list (e.g. search results): the mean over the first R
    ranks of precision@i at the ranks holding a relevant item; R = relevant items in the index."""
    if r == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, lab in enumerate(list(ranked_labels)[:r], 1):
        if lab == label:
            hits += 1
            total += hits / i
    return total / r


def retrieval_metrics(emb: Embedded, rerank: ReRank = NO_RERANK, full: bool = True) -> dict:
    """The contract's keys plus the Recall@K curve, over queries that have a relevant item.

    With ``rerank``, the images are an index searched as search does: vectors augmented with
    their neighbours' (DBA), each query expanded with its first-round neighbours (QE).
    ``full=False``: only MAP@R and Precision@1 (= Recall@1), ranking no deeper than R (fast:
    early stopping and sweeps)."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    labels = emb.labels
    counts = np.bincount(labels)
    keep = counts[labels] >= 2
    if keep.sum() < 2:
        raise ConfigError("too few queries: every class needs at least two test images")
    vecs, labels = emb.vectors[keep], labels[keep]
    if rerank.dba_k:
        vecs = augment_database(vecs, rerank.dba_k, rerank.dba_alpha, emb.metric)
    # k = every other item, so mAP ranks all relevant items, not only the first max_bin_count
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r",
                                       *(("mean_average_precision",) if full else ())),
                              k=len(vecs) - 1 if full else "max_bin_count",
                              knn_func=ReRankedKNN(emb.metric, rerank), device=torch.device("cpu"))
    t = torch.from_numpy(np.ascontiguousarray(vecs, dtype=np.float32))
    acc = calc.get_accuracy(t, torch.from_numpy(labels), t, torch.from_numpy(labels),
                            ref_includes_query=True)
    if not full:
        return {"map_at_r": float(acc["mean_average_precision_at_r"]),
                "recall_at_1": float(acc["precision_at_1"]), "n_queries": int(keep.sum())}
    nn = neighbours(vecs, emb.metric, max(RECALL_KS), rerank)
    recall = recall_at_k(labels[nn], labels)
    return {"recall_at_1": recall[1], "recall_at_10": recall.get(10, recall[max(recall)]),
            "map_at_r": float(acc["mean_average_precision_at_r"]),
            "map": float(acc["mean_average_precision"]),
            "precision_at_1": float(acc["precision_at_1"]),
            "recall_at_k": {str(k): v for k, v in recall.items()},
            "n_queries": int(keep.sum()), "n_classes": int((counts >= 2).sum()),
            "metric": emb.metric.value, "name": emb.name, "rerank": rerank.as_dict()}


def evaluate_folder(data_dir: str | Path, *, model_path: str | None = None,
                    baseline: str | None = None, weights: str | None = None,
                    batch_size: int = 64, qe_k: int | None = None,
                    dba_k: int | None = None) -> tuple[dict, Embedded]:
    """Embed every usable image of DATA_DIR with a model or a baseline and score retrieval, ranked as
    search ranks: with the model card's re-ranking (DATA_DIR as the index: DBA, then QE)
    unless ``qe_k`` / ``dba_k`` say otherwise. The metrics list the files skipped as unusable
    (``skipped``)."""
    if bool(model_path) == bool(baseline):
        raise ConfigError("give exactly one of --model or --baseline")
    folder = read_folder(data_dir)
    samples = folder.samples
    rerank = NO_RERANK
    if model_path:
        from ..model.modelfile import load_model
        model = load_model(model_path)
        rerank = ReRank.from_dict(model.card.get("rerank"))
        emb = model_embeddings(model, samples, batch_size)
    else:
        emb = baseline_embeddings(baseline, samples, weights)
    rerank = ReRank(rerank.qe_k if qe_k is None else qe_k, rerank.qe_alpha,
                    rerank.dba_k if dba_k is None else dba_k, rerank.dba_alpha)
    return {**retrieval_metrics(emb, rerank), "skipped": folder.skipped_records()}, emb
