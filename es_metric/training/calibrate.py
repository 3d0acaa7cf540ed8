"""The calibrated search cut-off: a similarity below which a hit is more likely another product.

``esm search --min-similarity auto`` drops hits less similar than a threshold chosen at training
time on the validation images: each one queries the others as a search would (the index's
vectors augmented by DBA, the query expanded by QE, as the card's re-ranking says), and the
threshold is the loosest similarity at which the (query, hit) pairs at least that similar are
the query's own product with precision ``DEFAULT_PRECISION``. The card records it as
``metrics.cutoff = {"precision", "similarity", "recall", "from", ...}``, in Elasticsearch's kNN
``similarity`` units (cosine similarity, keep >= t; L2 distance, keep <= t).
"""
from __future__ import annotations

import numpy as np

from ..search.rerank import NO_RERANK, ReRank, augment_database, expand_queries, similarities
from ..similarity import Metric
from ..types import Cutoff
from .config import DEFAULT_RERANK

__all__ = ["DEFAULT_PRECISION", "calibrate_cutoff", "cutoff_for", "precision_threshold",
           "searched_similarities"]

#: The precision target (see README "Searching": why 0.9).
DEFAULT_PRECISION = 0.9
VALIDATION = "validation images of the training classes, each querying the others"
REFIT_ORIGIN = ("validation images of the training classes, which the shipped (refit) head was "
                "trained on: optimistic")
MAX_IMAGES = 3000   # the pairs are N x N: a larger validation set is sampled down to this


def precision_threshold(sims: np.ndarray, relevant: np.ndarray,
                        precision: float) -> tuple[float, float] | None:
    """(t, recall): the loosest ``t`` at which the pairs with similarity >= t are relevant with
    at least ``precision``, and the share of relevant pairs kept; None when no t reaches it.

    Ties are kept together (a threshold keeps every pair as similar as it), so the precision
    is that of what a search at ``t`` would return."""
    sims, relevant = np.asarray(sims, np.float64).ravel(), np.asarray(relevant, bool).ravel()
    if not relevant.any():
        return None
    order = np.argsort(-sims, kind="stable")
    s, tp = sims[order], np.cumsum(relevant[order])
    last = np.r_[s[1:] != s[:-1], True]            # the end of each run of equal similarities
    n = np.arange(1, len(s) + 1)
    ok = np.nonzero(last & (tp >= precision * n))[0]
    if not len(ok):
        return None
    i = ok[-1]
    return float(s[i]), float(tp[i] / relevant.sum())


def searched_similarities(vectors: np.ndarray, metric: Metric, rerank: ReRank = NO_RERANK) -> np.ndarray:
    """N x N similarities of every vector, as a query, to the others as an index holds them:
    the index's vectors augmented (DBA), the raw query expanded with its neighbours among them
    (QE), itself excluded (-inf on the diagonal). Higher is closer (negative L2 distance)."""
    import torch

    raw = torch.as_tensor(np.ascontiguousarray(vectors, np.float32))
    index = torch.as_tensor(augment_database(raw.numpy(), rerank.dba_k, rerank.dba_alpha, metric))
    queries = expand_queries(raw, index, rerank.qe_k, rerank.qe_alpha, metric, self_index=True)
    sims = similarities(queries, index, metric).numpy()
    np.fill_diagonal(sims, -np.inf)
    return sims


def calibrate_cutoff(vectors: np.ndarray, labels: np.ndarray, metric: Metric,
                     rerank: ReRank = NO_RERANK, precision: float = DEFAULT_PRECISION,
                     origin: str = VALIDATION) -> Cutoff | None:
    """The card's ``cutoff``: the similarity that keeps hits of the query's own class with
    ``precision`` on these vectors (None: too few images, or no threshold reaches it)."""
    labels = np.asarray(labels)
    if len(labels) > MAX_IMAGES:
        keep = np.sort(np.random.default_rng(0).choice(len(labels), MAX_IMAGES, replace=False))
        vectors, labels = np.asarray(vectors)[keep], labels[keep]
    if len(labels) < 3:
        return None
    sims = searched_similarities(vectors, metric, rerank)
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    found = precision_threshold(sims[off_diagonal], (labels[:, None] == labels[None, :])[off_diagonal],
                                precision)
    if found is None:
        return None
    t, recall = found
    return {"precision": precision, "similarity": t if metric is Metric.COSINE else -t,
            "keep": "at least" if metric is Metric.COSINE else "at most", "recall": round(recall, 4),
            "from": origin, "n_queries": int(len(labels)),
            "rerank": {"qe_k": rerank.qe_k, "dba_k": rerank.dba_k}}


def cutoff_for(vectors: np.ndarray, labels: np.ndarray, metric: Metric, cfg,
               origin: str = VALIDATION) -> Cutoff | None:
    """``calibrate_cutoff`` with the re-ranking a training run records on its card (``cfg``:
    its TrainConfig)."""
    rerank = ReRank(cfg.qe_k, cfg.qe_alpha, cfg.dba_k, DEFAULT_RERANK.dba_alpha)
    return calibrate_cutoff(vectors, labels, metric, rerank, origin=origin)
