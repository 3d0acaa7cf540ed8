"""The near-duplicate threshold, calibrated on validation photos (the gate itself: validate.py)."""
from __future__ import annotations

import numpy as np
import torch

from ..similarity import Metric
from .evaluate import similarity_matrix


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
