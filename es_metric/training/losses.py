"""Training objectives, all from pytorch-metric-learning, chosen by name.

Each objective fixes the metric it trains for (cosine on normalised embeddings, or L2 for the
learned Mahalanobis map), which is the similarity the Elasticsearch mapping then uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..similarity import Metric


@dataclass(frozen=True)
class Objective:
    name: str
    metric: Metric
    build: Callable[[Metric, dict], tuple[torch.nn.Module, object | None]]
    summary: str
    frozen_backbone: bool = False  # the objective always trains on fixed backbone features


def _contrastive(metric: Metric, p: dict):
    from pytorch_metric_learning import losses

    if metric is Metric.COSINE:  # similarities: positives pulled above pos_margin, negatives below neg_margin
        loss = losses.ContrastiveLoss(pos_margin=p.get("pos_margin", 1.0), neg_margin=p.get("neg_margin", 0.3),
                                      distance=metric.pml_distance())
    else:
        loss = losses.ContrastiveLoss(pos_margin=p.get("pos_margin", 0.0), neg_margin=p.get("neg_margin", 1.0),
                                      distance=metric.pml_distance())
    return loss, None


def _triplet(metric: Metric, p: dict):
    from pytorch_metric_learning import losses, miners

    margin = p.get("margin", 0.1 if metric is Metric.COSINE else 0.5)
    kind = p.get("miner", "batch-hard")
    if kind == "batch-hard":
        miner = miners.BatchHardMiner(distance=metric.pml_distance())
    elif kind == "semi-hard":
        miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard",
                                          distance=metric.pml_distance())
    else:
        raise ConfigError(f"unknown miner {kind!r}", hint="valid: batch-hard, semi-hard")
    return losses.TripletMarginLoss(margin=margin, distance=metric.pml_distance()), miner


def _multi_similarity(metric: Metric, p: dict):
    from pytorch_metric_learning import losses, miners

    return (losses.MultiSimilarityLoss(alpha=p.get("alpha", 2.0), beta=p.get("beta", 50.0),
                                       base=p.get("base", 0.5)),
            miners.MultiSimilarityMiner(epsilon=p.get("epsilon", 0.1)))


OBJECTIVES: dict[str, Objective] = {o.name: o for o in [
    Objective("contrastive", Metric.COSINE, _contrastive,
              "Siamese pairs: contrastive loss with positive and negative margins"),
    Objective("triplet", Metric.COSINE, _triplet,
              "triplet margin loss with online batch-hard (or semi-hard) mining"),
    Objective("multi-similarity", Metric.COSINE, _multi_similarity,
              "multi-similarity loss with its miner (a strong modern reference)"),
    Objective("mahalanobis", Metric.L2, _triplet,
              "frozen backbone; linear map L so ||L(x-y)|| is the distance (M = LᵀL), "
              "triplet objective; served by Elasticsearch l2_norm", frozen_backbone=True),
]}


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}", hint="valid: " + ", ".join(OBJECTIVES)) from None
