"""Search by several example images, positive and negative, as pure functions on vectors.

Two strategies:

* ``mean``: one query vector, Rocchio-style: the mean of the positives moved away from the
  mean of the negatives (``normalise(mean(p) - gamma * mean(n))`` for cosine models, on
  normalised examples; ``mean(p) + gamma * (mean(p) - mean(n))`` for L2 ones). One kNN search;
  query expansion applies to it.
* ``max``: every candidate scored by its best similarity to any positive, minus ``gamma``
  times its best similarity to any negative. One kNN window per positive gives the candidates.
"""
from __future__ import annotations

import numpy as np

from ..similarity import Metric

STRATEGIES = ("mean", "max")
DEFAULT_GAMMA = 0.5


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def rocchio(positives: np.ndarray, negatives: np.ndarray, metric: Metric,
            gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The ``mean`` strategy's query vector from positives (P x d) and negatives (N x d, N may be 0)."""
    pos = np.asarray(positives, np.float32)
    neg = np.asarray(negatives, np.float32).reshape(-1, pos.shape[1])
    if metric is Metric.COSINE:
        q = _unit(pos).mean(0)
        if len(neg):
            q = q - gamma * _unit(neg).mean(0)
        return _unit(q)
    q = pos.mean(0)
    return q + gamma * (q - neg.mean(0)) if len(neg) else q


def similarity(candidates: np.ndarray, examples: np.ndarray, metric: Metric) -> np.ndarray:
    """Candidates x examples: cosine on normalised vectors, or minus the L2 distance."""
    c, e = np.asarray(candidates, np.float32), np.asarray(examples, np.float32)
    if metric is Metric.COSINE:
        return _unit(c) @ _unit(e).T
    return -np.linalg.norm(c[:, None, :] - e[None, :, :], axis=-1)


def best_score(candidates: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
               metric: Metric, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The ``max`` strategy's score of each candidate (higher first)."""
    score = similarity(candidates, positives, metric).max(1)
    neg = np.asarray(negatives, np.float32)
    if len(neg):
        score = score - gamma * similarity(candidates, neg, metric).max(1)
    return score
