"""Per-query retrieval scores of photos searching a catalogue, and the paired bootstrap that
says whether one model is better than another on the same queries.

A query is a photo; the index is the other photos of the catalogue, each labelled with its
product. Products are ranked by their best photo (as a multi-photo index ranks documents), so
``rank`` is the position of the query's product among products; ``ap_at_r`` ranks photos
(MAP@R, R = the product's photos in the index). With groups (``--group-field``, e.g. a
category), ``group_precision_at_10`` is the share of the first 10 products in the query's
group. Every figure is kept per query, so two models can be compared query by query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..similarity import Metric

__all__ = ["QueryScores", "Interval", "paired_bootstrap", "score_queries", "summary_of",
           "PRODUCT_KS"]

PRODUCT_KS = (1, 2, 4, 8, 10, 16, 32)
GROUP_K = 10
BLOCK = 512  # queries scored at a time (fewer on a large index): memory stays BLOCK x photos
BLOCK_CELLS = 50_000_000  # at most this many query x photo similarities at a time (200 MB)


@dataclass(frozen=True)
class QueryScores:
    """Per-query arrays (one entry per query, in query order)."""

    rank: np.ndarray                     # 1-based rank of the query's product among products
    ap_at_r: np.ndarray                  # average precision over the first R photos
    group_precision: np.ndarray | None   # share of the first GROUP_K products in the query's group
    n_products: int = 0                  # products in the index (Recall@K at K >= it says nothing)
    ap: np.ndarray | None = None         # average precision over every photo of the product (mAP)

    def metric(self, name: str) -> np.ndarray:
        """One per-query metric by name: recall_at_1, mrr, map_at_r, group_precision_at_10."""
        if name == "recall_at_1":
            return (self.rank == 1).astype(np.float64)
        if name == "mrr":
            return 1.0 / self.rank
        if name == "map_at_r":
            return self.ap_at_r
        if name == "map" and self.ap is not None:
            return self.ap
        if name == "group_precision_at_10" and self.group_precision is not None:
            return self.group_precision
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return ("recall_at_1", "mrr", "map_at_r") + (("map",) if self.ap is not None else ()) + (
            ("group_precision_at_10",) if self.group_precision is not None else ())


def _similarities(q: np.ndarray, index: np.ndarray, metric: Metric) -> np.ndarray:
    if metric is Metric.COSINE:
        return q @ index.T
    sq = (q * q).sum(1)[:, None] + (index * index).sum(1)[None, :] - 2 * q @ index.T
    return -np.sqrt(np.clip(sq, 0, None))


def _product_best(sims: np.ndarray, column: np.ndarray, n_products: int) -> np.ndarray:
    """Q x P: each product's best photo similarity (photos of a product need not be adjacent)."""
    best = np.full((sims.shape[0], n_products), -np.inf, dtype=np.float32)
    order = np.argsort(column, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(column[order])) + 1]
    best[:, column[order][starts]] = np.maximum.reduceat(sims[:, order], starts, axis=1)
    return best


def score_queries(queries: np.ndarray, query_products: Sequence[str], index: np.ndarray,
                  index_products: Sequence[str], metric: Metric,
                  groups: dict[str, str] | None = None,
                  self_rows: np.ndarray | None = None, full: bool = False) -> QueryScores:
    """Scores of every query photo searching ``index`` (photos of products). Each query's
    product must have another photo in the index. ``self_rows``: when the queries are photos of
    the index, query i's own row there (it never finds itself). ``full``: also the average
    precision over all of the product's photos (ranks every photo: mAP)."""
    products = sorted(set(index_products))
    pid = {p: i for i, p in enumerate(products)}
    column = np.array([pid[p] for p in index_products])
    target = np.array([pid[p] for p in query_products])
    relevant_count = np.bincount(column, minlength=len(products))
    group_ids = None
    if groups:
        names = {g: i for i, g in enumerate(sorted({groups.get(p, "") for p in products}))}
        group_ids = np.array([names[groups.get(p, "")] if groups.get(p) else -1 - i
                              for i, p in enumerate(products)])  # no group: a group of its own
    ranks, aps, gps, full_aps = [], [], [], []
    block = max(1, min(BLOCK, BLOCK_CELLS // max(1, len(index))))
    for lo in range(0, len(queries), block):
        sims = _similarities(np.asarray(queries[lo:lo + block], np.float32),
                             np.asarray(index, np.float32), metric)
        t = target[lo:lo + block]
        if self_rows is not None:
            sims[np.arange(len(t)), self_rows[lo:lo + block]] = -np.inf
            relevant = relevant_count[t] - 1
        else:
            relevant = relevant_count[t]
        best = _product_best(sims, column, len(products))
        own = best[np.arange(len(t)), t]
        ranks.append(1 + (best > own[:, None]).sum(1))
        aps.append(_ap_at_r(sims, column, t, relevant))
        if full:
            full_aps.append(_average_precision(sims, column, t, relevant))
        if group_ids is not None:
            top = top_stable(best, GROUP_K)
            gps.append((group_ids[top] == group_ids[t][:, None]).mean(1))
    return QueryScores(np.concatenate(ranks), np.concatenate(aps),
                       np.concatenate(gps) if group_ids is not None else None, len(products),
                       np.concatenate(full_aps) if full else None)


def _stable_at_or_above(values: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's columns whose value is at least the row's ``floor``, in the order of
    ``np.argsort(-values, axis=1, kind="stable")`` (ties in column order): (rows, cols, starts),
    row i's columns being ``cols[starts[i]:starts[i + 1]]``. Sorts only those columns."""
    rows, cols = np.nonzero(values >= floor[:, None])
    order = np.lexsort((cols, -values[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    return rows, cols, np.searchsorted(rows, np.arange(len(values)))


def top_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest values, ties in column order: exactly
    ``np.argsort(-values, axis=1, kind="stable")[:, :k]``, without sorting whole rows (a
    partition finds each row's k-th value, then only the columns at or above it are sorted), so
    a query costs O(photos), not O(photos log photos)."""
    n = values.shape[1]
    if k >= n or len(values) == 0:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    negated = np.negative(values)
    negated.partition(k - 1, axis=1)          # in place: np.partition would copy the block again
    kth = -negated[:, k - 1]
    del negated
    rows, cols, starts = _stable_at_or_above(values, kth)
    if (np.diff(starts, append=len(rows)) < k).any():  # NaN: no order to keep
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    return cols[starts[:, None] + np.arange(k)[None, :]]


def _ap_at_r(sims: np.ndarray, column: np.ndarray, target: np.ndarray, r: np.ndarray) -> np.ndarray:
    """MAP@R per query: mean over the first R photos of precision@i at the relevant ones."""
    r_max = int(r.max())
    top = top_stable(sims, r_max)
    hits = column[top] == target[:, None]
    hits &= np.arange(1, r_max + 1)[None, :] <= r[:, None]
    hits &= np.take_along_axis(sims, top, 1) > -np.inf  # a query's own photo is no hit
    precision = np.cumsum(hits, axis=1) / np.arange(1, r_max + 1)[None, :]
    return (precision * hits).sum(1) / r


#: Up to this many photos per product, the average precision over every photo counts each
#: relevant photo's rank (a pass over the row per photo); beyond, it sorts the photos scored at
#: least as high as the row's last relevant one (``_ap_sorted_above``).
COUNTED_AP_PHOTOS = 32


def _average_precision(sims: np.ndarray, column: np.ndarray, target: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The average precision over every photo of the query's product: with few photos per
    product from each relevant photo's rank, counted (1 + the photos scored higher + those
    scored the same in an earlier column: its place in the stable sort, ties included), else by
    sorting what ranks above each row's last relevant photo (``_ap_sorted_above``)."""
    relevant = (column[None, :] == target[:, None]) & (sims > -np.inf)  # a query's own photo is no hit
    per_row = relevant.sum(1)
    width = int(per_row.max()) if len(per_row) else 0
    if width > COUNTED_AP_PHOTOS:
        return _ap_sorted_above(sims, relevant, r)
    rows, cols = np.nonzero(relevant)                       # row-major: each row's columns in order
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows)  # 0.. within its row
    rank = np.full((len(sims), max(width, 1)), np.inf)
    for j in range(width):
        pick = slot == j
        qr, qc = rows[pick], cols[pick]
        value = np.full(len(sims), np.inf, dtype=sims.dtype)  # rows without a j-th photo count none
        value[qr] = sims[qr, qc]
        higher = np.count_nonzero(sims > value[:, None], axis=1)
        tied = np.count_nonzero(sims == value[:, None], axis=1)
        ahead = higher[qr]
        for i in np.flatnonzero(tied[qr] > 1):               # another photo scored the same: column order
            row, col = qr[i], qc[i]
            ahead[i] += np.count_nonzero(sims[row, :col] == value[row])
        rank[qr, j] = 1 + ahead
    rank.sort(axis=1)                                        # each row's relevant photos in ranked order
    precision = np.arange(1, rank.shape[1] + 1)[None, :] / rank
    return precision.sum(1) / r


def _ap_sorted_above(sims: np.ndarray, relevant: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The average precision over every relevant photo from the stable sort of only the photos
    scored at least as high as the row's lowest relevant one (ties in column order, as a stable
    sort of the whole row): a good ranking sorts a few, a bad one up to all."""
    floor = np.where(relevant, sims, np.inf).min(1)        # each row's lowest relevant score
    rows, cols, starts = _stable_at_or_above(sims, floor)
    position = np.arange(1, len(rows) + 1) - starts[rows]  # 1.. within its row
    hit = relevant[rows, cols]
    found = np.cumsum(hit)
    found -= np.concatenate(([0], found))[starts][rows]    # the row's relevant photos so far
    precision = found[hit] / position[hit]
    return np.bincount(rows[hit], weights=precision, minlength=len(sims)) / r


def summary_of(scores: QueryScores) -> dict:
    """Means of every metric, Recall@K over products, and the number of queries."""
    out = {name: float(scores.metric(name).mean()) for name in scores.names}
    out["recall_at_k"] = {str(k): float((scores.rank <= k).mean()) for k in PRODUCT_KS
                          if k < scores.n_products or k == 1}
    out["recall_at_10"] = float((scores.rank <= 10).mean())
    out["n_queries"] = int(len(scores.rank))
    return out


@dataclass(frozen=True)
class Interval:
    """A mean difference (model − baseline) and its 95 % bootstrap interval."""

    metric: str
    difference: float
    low: float
    high: float

    @property
    def better(self) -> bool:
        """The lower end above zero: better beyond what resampling the queries explains."""
        return self.low > 0

    def as_dict(self) -> dict:
        return {"metric": self.metric, "difference": round(self.difference, 6),
                "ci95": [round(self.low, 6), round(self.high, 6)], "better": self.better}


def paired_bootstrap(model: np.ndarray, baseline: np.ndarray, metric: str = "",
                     resamples: int = 2000, seed: int = 0) -> Interval:
    """The paired bootstrap over queries: resample queries with replacement, the mean
    per-query difference each time; the 2.5th and 97.5th percentiles bound it. A tie (the same
    score on every query) gives [0, 0]: never better."""
    diff = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
    diff[np.abs(diff) < 1e-9] = 0.0  # float noise is no difference
    if not len(diff):
        return Interval(metric, 0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for lo in range(0, resamples, 256):  # bounded memory for many queries
        n = min(256, resamples - lo)
        means[lo:lo + n] = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(metric, float(diff.mean()), float(low), float(high))
