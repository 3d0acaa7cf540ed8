"""Neighbourhood re-ranking: query expansion (QE) and database-side augmentation (DBA).

Both use the neighbourhood the index already has: an image's nearest neighbours are mostly
other photos of the same product, so blending a vector with theirs moves it toward the
product's centre. alpha-weighted (Radenović et al., "Fine-tuning CNN image retrieval with no
human annotation", 2018): ``v' = normalise(v + sum_i max(s_i, 0)^alpha * x_i)`` over the top k
neighbours ``x_i`` with similarities ``s_i``; a large alpha trusts only very close neighbours.

The pure functions here take vectors and return vectors; search and evaluation call them.
The query path (``expand_query``, ``query_similarities``) is numpy only, so a query node without
torch can search; the batch functions of evaluation and DBA import torch when called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..similarity import Metric
from ..types import NO_RERANK as NO_RERANK, ReRank as ReRank  # re-exported: the settings live with the contracts

if TYPE_CHECKING:
    import torch


def neighbour_weights(sims: torch.Tensor, alpha: float, metric: Metric) -> torch.Tensor:
    """Weights of the neighbours: similarity^alpha for cosine (negative similarities count 0);
    equal weights for L2 models, whose distances have no fixed scale."""
    import torch

    if metric is Metric.COSINE:
        return sims.clamp(min=0).pow(alpha)
    return torch.ones_like(sims)


def blend(vectors: torch.Tensor, neighbours: torch.Tensor, sims: torch.Tensor, alpha: float,
          metric: Metric) -> torch.Tensor:
    """``vectors`` (N x d) blended with their ``neighbours`` (N x k x d) of similarities
    ``sims`` (N x k): weight 1 for the vector itself. Normalised for cosine, a weighted mean
    for L2."""
    import torch

    w = neighbour_weights(sims, alpha, metric)
    out = vectors + (w.unsqueeze(-1) * neighbours).sum(1)
    if metric is Metric.COSINE:
        return torch.nn.functional.normalize(out, dim=-1)
    return out / (1 + w.sum(1, keepdim=True))


def expand_query(query: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float = 3.0,
                 metric: Metric = Metric.COSINE) -> np.ndarray:
    """One query vector expanded with its first-round neighbours' vectors (k x d) and their
    similarities (k): the vector the second search round uses (``blend`` of one row, numpy)."""
    q = np.asarray(query, np.float32)
    nb = np.asarray(neighbours, np.float32).reshape(1, -1, q.shape[0])
    return blend_rows(q[None], nb, np.asarray(sims, np.float32).reshape(1, -1), alpha, metric)[0]


def blend_rows(vectors: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float,
               metric: Metric) -> np.ndarray:
    """``blend`` in numpy: ``vectors`` (n x d) with their ``neighbours`` (n x k x d) of
    similarities ``sims`` (n x k); what DBA writes and query expansion searches with."""
    v = np.asarray(vectors, np.float32)
    s = np.asarray(sims, np.float32)
    w = np.clip(s, 0, None) ** alpha if metric is Metric.COSINE else np.ones_like(s)
    out = v + (w[..., None] * np.asarray(neighbours, np.float32)).sum(1)
    if metric is Metric.COSINE:
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return (out / (1 + w.sum(1, keepdims=True))).astype(np.float32)


def query_similarities(query: np.ndarray, refs: np.ndarray, metric: Metric) -> np.ndarray:
    """``similarities`` of one query (d) to ``refs`` (k x d), numpy."""
    if metric is Metric.COSINE:
        return refs @ query
    return -np.linalg.norm(refs - query[None], axis=1)


def similarities(queries: torch.Tensor, refs: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Higher is closer: dot product (cosine on normalised vectors) or negative L2 distance."""
    import torch

    return queries @ refs.T if metric is Metric.COSINE else -torch.cdist(queries, refs)


#: Similarities computed at a time by ``_top_others`` (200 MB of float32): rows of 4,096 queries
#: at most, fewer against a large collection (4,096 x 1M would be 16 GB).
TOP_CELLS = 50_000_000


def _top_others(queries: torch.Tensor, refs: torch.Tensor, k: int, metric: Metric,
                self_rows: torch.Tensor | None = None, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k similarities and indices of every query among ``refs``, in row blocks (memory
    stays chunk x N: by default at most ``TOP_CELLS``); with ``self_rows`` query i is reference
    ``self_rows[i]`` and not its own neighbour."""
    import torch

    chunk = chunk or max(1, min(4096, TOP_CELLS // max(1, refs.shape[0])))
    k = min(k, refs.shape[0] - int(self_rows is not None))
    values, indices = [], []
    for lo in range(0, len(queries), chunk):
        sims = similarities(queries[lo:lo + chunk], refs, metric)
        if self_rows is not None:
            sims[torch.arange(sims.shape[0]), self_rows[lo:lo + chunk]] = float("-inf")
        v, i = sims.topk(k, dim=1)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def augment_database(vectors: np.ndarray, k: int, alpha: float = 3.0,
                     metric: Metric = Metric.COSINE) -> np.ndarray:
    """DBA: every vector blended with its k nearest other vectors of the same collection."""
    import torch

    v = torch.as_tensor(np.ascontiguousarray(vectors, np.float32))
    if k <= 0 or len(v) < 2:
        return v.numpy()
    sims, idx = _top_others(v, v, k, metric, self_rows=torch.arange(len(v)))
    return blend(v, v[idx], sims, alpha, metric).numpy()


def expand_queries(queries: torch.Tensor, refs: torch.Tensor, k: int, alpha: float, metric: Metric,
                   self_rows: torch.Tensor | None = None) -> torch.Tensor:
    """QE for a batch of queries against ``refs`` (the vectors the index holds); query i that
    is ``refs[self_rows[i]]`` is not its own neighbour."""
    if k <= 0:
        return queries
    sims, idx = _top_others(queries, refs, k, metric, self_rows=self_rows)
    return blend(queries, refs[idx], sims, alpha, metric)


def ranked_neighbours(queries: torch.Tensor, refs: torch.Tensor, k: int, metric: Metric, rerank: ReRank,
                      self_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of each query's ``k`` nearest ``refs`` as search ranks them with
    ``rerank``: the query expanded with its neighbours (QE), then searched again; a query that is
    ``refs[self_rows[i]]`` is not its own neighbour in either round. Higher is closer."""
    import torch

    q = expand_queries(queries, refs, rerank.qe_k, rerank.qe_alpha, metric, self_rows=self_rows)
    sims = similarities(q, refs, metric)
    if self_rows is not None:
        sims[torch.arange(len(q)), self_rows] = float("-inf")
    return sims.topk(k, dim=1)


class ReRankedKNN:
    """A k-NN function for pytorch-metric-learning's AccuracyCalculator that ranks as search does
    with ``rerank``: the query expanded with its neighbours, then searched again. With
    ``ref_includes_query`` (every item queries all the others) the item itself is excluded
    from both rounds."""

    def __init__(self, metric: Metric, rerank: ReRank) -> None:
        self.metric = metric
        self.rerank = rerank

    def __call__(self, query: torch.Tensor, k: int, reference: torch.Tensor,
                 ref_includes_query: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        own = torch.arange(len(query)) if ref_includes_query else None
        values, idx = ranked_neighbours(query, reference, k, self.metric, self.rerank, self_rows=own)
        return (values if self.metric is Metric.COSINE else -values), idx
