"""Seeding and M-per-class sampling: every batch holds m images of each of its classes, which
is what the pair- and triplet-based objectives learn from."""
from __future__ import annotations

import random

import numpy as np
import torch

from .config import TrainConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def m_per_class_sampler(labels: torch.Tensor, cfg: TrainConfig):
    """(pytorch-metric-learning's MPerClassSampler, batch size): m images per class per batch,
    the batch a multiple of m and no larger than the classes allow."""
    from pytorch_metric_learning.samplers import MPerClassSampler

    batch = min(cfg.batch_size, cfg.m_per_class * len(torch.unique(labels)))
    batch -= batch % cfg.m_per_class
    return MPerClassSampler(labels, m=cfg.m_per_class, batch_size=batch,
                            length_before_new_iter=max(len(labels), batch)), batch


def epoch_batches(labels: torch.Tensor, cfg: TrainConfig) -> list[list[int]]:
    """Index batches of one epoch over cached features."""
    sampler, batch = m_per_class_sampler(labels, cfg)
    order = list(sampler)
    return [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
