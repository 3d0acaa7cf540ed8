"""Thresholds calibrated at training on held-out validation images: the search cut-off and the
threshold of ``esm duplicates``.

**The cut-off**: a similarity below which a hit is more likely another product.

``esm search --min-similarity auto`` drops hits less similar than a threshold chosen at training
time on the validation images: each one queries the others as a search would (the index's
vectors augmented by DBA, the query expanded by QE, as the card's re-ranking says), and the
threshold is the loosest similarity at which the (query, hit) pairs at least that similar are
the query's own product with the run's precision target (``esm train --cutoff-precision``,
default ``DEFAULT_CUTOFF_PRECISION`` of training/config.py). The card records it as
``metrics.cutoff = {"precision", "similarity", "recall", "from", ...}``, in Elasticsearch's kNN
``similarity`` units (cosine similarity, keep >= t; L2 distance, keep <= t).

**The duplicate threshold** (``metrics.duplicate_threshold``): how alike the model finds a photo
and a copy of it (JPEG quality 70, resized to 90 %, cropped by 4 % a side, all three at once),
measured on copies made of validation images: the similarity that keeps 99 % of the copies.
It is a property of the model's invariance, measured on the catalogue it was trained on, so
it carries to that catalogue's index; the card also says how many pairs of distinct validation
photos it would link (of the same class, and of two classes).
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import EsmError
from ..search.rerank import NO_RERANK, ReRank, augment_database, expand_queries, similarities
from ..similarity import Metric
from ..types import Cutoff, CutoffCheck
from .config import DEFAULT_CUTOFF_PRECISION

__all__ = ["COPY_KINDS", "calibrate_cutoff", "calibrate_duplicates", "check_cutoff",
           "copy_of", "cutoff_check_line", "duplicates_for", "first_pages", "precision_threshold",
           "searched_similarities"]

VALIDATION = ("held-out validation images (with the head the gate measured: measured_head), each "
              "querying the others as search does")
WINDOW = 10        # the hits a search shows (its default k): the precision is that of a first page
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
    queries = expand_queries(raw, index, rerank.qe_k, rerank.qe_alpha, metric, self_rows=torch.arange(len(raw)))
    sims = similarities(queries, index, metric).numpy()
    np.fill_diagonal(sims, -np.inf)
    return sims


def _sampled(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_IMAGES`` of them (the pairs are N x N), the same sample every time."""
    labels = np.asarray(labels)
    if len(labels) > MAX_IMAGES:
        keep = np.sort(np.random.default_rng(0).choice(len(labels), MAX_IMAGES, replace=False))
        return np.asarray(vectors)[keep], labels[keep]
    return np.asarray(vectors), labels


def first_pages(vectors: np.ndarray, labels: np.ndarray, metric: Metric,
                rerank: ReRank = NO_RERANK) -> tuple[np.ndarray, np.ndarray, int]:
    """(similarities, own class?, k) of every image's first page (``WINDOW`` hits) when it queries
    the others as search does; higher similarity is closer (negative L2 distance)."""
    sims = searched_similarities(vectors, metric, rerank)
    k = min(WINDOW, len(labels) - 1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, top, 1), labels[top] == labels[:, None], k


def calibrate_cutoff(vectors: np.ndarray, labels: np.ndarray, metric: Metric,
                     rerank: ReRank = NO_RERANK, precision: float = DEFAULT_CUTOFF_PRECISION,
                     origin: str = VALIDATION) -> Cutoff | None:
    """The card's ``cutoff``: the similarity at which the hits in the first page (``WINDOW``)
    of every query that survive are the query's own class with ``precision``; ``recall``: the
    share of those pages' own-class hits that survive (None: too few images, or no threshold
    reaches the target)."""
    vectors, labels = _sampled(vectors, labels)
    if len(labels) < 3:
        return None
    sims, relevant, k = first_pages(vectors, labels, metric, rerank)
    found = precision_threshold(sims, relevant, precision)
    if found is None:
        return None
    t, recall = found
    return {"precision": precision, "similarity": t if metric is Metric.COSINE else -t,
            "keep": "at least" if metric is Metric.COSINE else "at most", "recall": round(recall, 4),
            "k": k, "from": origin, "n_queries": int(len(labels)),
            "rerank": {"qe_k": rerank.qe_k, "dba_k": rerank.dba_k}}


def check_cutoff(vectors: np.ndarray, labels: np.ndarray, metric: Metric, similarity: float,
                 target: float | None = None, rerank: ReRank = NO_RERANK) -> CutoffCheck | None:
    """How a card's cut-off does on other images (``esm evaluate``): each queries the others as
    search does, and of its first page's hits the cut-off keeps ``kept``; ``precision``: the share
    of the kept hits that are the query's own class (the card's target beside it), ``recall``: the
    share of the pages' own-class hits kept, ``emptied``: queries whose page it empties. None when
    there are fewer than 3 images."""
    vectors, labels = _sampled(vectors, labels)
    if len(labels) < 3:
        return None
    sims, relevant, k = first_pages(vectors, labels, metric, rerank)
    cosine = metric is Metric.COSINE
    kept = sims >= (similarity if cosine else -similarity)
    n_kept, n_right, n_hit = int(kept.sum()), int(relevant.sum()), int((kept & relevant).sum())
    return {"similarity": similarity, "keep": "at least" if cosine else "at most", "target": target, "k": k,
            "n_queries": int(len(labels)), "kept": n_kept,
            "precision": round(n_hit / n_kept, 4) if n_kept else None,
            "recall": round(n_hit / n_right, 4) if n_right else None,
            "emptied": int((~kept.any(axis=1)).sum())}


def cutoff_check_line(cut: object) -> str | None:
    """``check_cutoff``'s figures in a sentence (``esm evaluate`` and its report); None without."""
    if not isinstance(cut, dict) or cut.get("kept") is None:
        return None
    target, precision, recall = cut.get("target"), cut.get("precision"), cut.get("recall")
    return (f"cut-off (--min-similarity auto, {cut.get('keep')} {cut.get('similarity'):.4f}): of the first "
            f"{cut.get('k')} hits of {cut.get('n_queries')} photos it keeps {cut['kept']}, "
            + ("none kept" if precision is None else f"precision {precision:.3f}")
            + (f" (the card's target {target:g})" if isinstance(target, (int, float)) else "")
            + (f", {recall:.1%} of the right hits" if recall is not None else "")
            + f"; {cut.get('emptied')} pages emptied")


COPY_KINDS = ("jpeg70", "resize90", "crop4", "all")
COPIES = 64            # validation images copied (each in every kind)
COPIES_KEPT = 0.99     # the duplicate threshold keeps this share of the copies


def copy_of(img: Image.Image, kind: str) -> tuple[Image.Image, int]:
    """A copy of ``img`` as a catalogue gets them again, and the JPEG quality to save it at:
    ``jpeg70`` (re-encoded), ``resize90`` (90 % of each side), ``crop4`` (4 % off each side),
    ``all`` (cropped, resized, quality 70)."""
    w, h = img.size
    if kind in ("crop4", "all"):
        img = img.crop((round(w * 0.04), round(h * 0.04), round(w * 0.96), round(h * 0.96)))
    if kind in ("resize90", "all"):
        img = img.resize((max(1, round(img.width * 0.9)), max(1, round(img.height * 0.9))), Image.BICUBIC)
    return img, 70 if kind in ("jpeg70", "all") else 90


def copy_similarities(encoder, pre, samples: Sequence, metric: Metric, device: str = "cpu") -> np.ndarray:
    """n x len(COPY_KINDS) similarities (higher is closer) of validation photos to their copies,
    both embedded by ``encoder`` the way training embeds files (photos that cannot be read are
    left out)."""
    import torch

    from ..images import load_image
    from .data import Sample
    from .features import run_module

    with tempfile.TemporaryDirectory() as tmp:
        originals, copies = [], []
        for i, s in enumerate(samples):
            try:
                img, _ = load_image(s.path)
            except EsmError:  # unreadable now: copy the others
                continue
            originals.append(s)
            for kind in COPY_KINDS:
                copy, quality = copy_of(img, kind)
                path = Path(tmp) / f"{i}-{kind}.jpg"
                copy.convert("RGB").save(path, "JPEG", quality=quality)
                copies.append(Sample(str(path), s.label, s.cls))
        if not originals:
            return np.zeros((0, len(COPY_KINDS)), np.float32)
        vecs = run_module(encoder, originals + copies, pre, desc="copies", device=device).float()
    n = len(originals)
    originals, copied = vecs[:n], vecs[n:].reshape(n, len(COPY_KINDS), -1)
    if metric is Metric.COSINE:
        o, c = torch.nn.functional.normalize(originals, dim=-1), torch.nn.functional.normalize(copied, dim=-1)
        return torch.einsum("nd,nkd->nk", o, c).numpy()
    return -torch.linalg.norm(copied - originals[:, None, :], dim=-1).numpy()


def calibrate_duplicates(copy_sims: np.ndarray, vectors: np.ndarray, labels: np.ndarray,
                         metric: Metric) -> dict | None:
    """The card's ``duplicate_threshold`` from the copies' similarities (n x kinds, higher is
    closer): the one that keeps COPIES_KEPT of them, with what it would also link among the
    distinct validation photos ``vectors``."""
    if not copy_sims.size:
        return None
    t = float(np.quantile(copy_sims, 1 - COPIES_KEPT))
    sims = searched_similarities(vectors, metric)[np.triu_indices(len(vectors), 1)]
    same = (labels[:, None] == labels[None, :])[np.triu_indices(len(vectors), 1)]
    linked = sims >= t
    sign = 1 if metric is Metric.COSINE else -1
    return {"similarity": sign * t, "keep": "at least" if metric is Metric.COSINE else "at most",
            "copies_kept": COPIES_KEPT, "n_copied": int(len(copy_sims)),
            "weakest_copy": {k: round(sign * float(v), 4) for k, v in zip(COPY_KINDS, copy_sims.min(0))},
            "distinct_pairs_linked": {"same_class": int((linked & same).sum()),
                                      "other_class": int((linked & ~same).sum()), "of": int(len(sims))},
            "from": f"copies ({', '.join(COPY_KINDS)}) of held-out validation images"}


def duplicates_for(encoder, cfg, samples: Sequence, vectors: np.ndarray, labels: np.ndarray) -> dict | None:
    """``calibrate_duplicates`` for a training run (``cfg``: its TrainConfig) on COPIES of its
    validation ``samples`` (whose vectors and labels are ``vectors``, ``labels``)."""
    from ..model.encoder import backbone_spec

    chosen = random.Random(cfg.seed).sample(list(samples), min(COPIES, len(samples)))
    sims = copy_similarities(encoder, backbone_spec(cfg.backbone).preprocess, chosen, encoder.metric,
                             cfg.device)
    vectors, labels = np.asarray(vectors), np.asarray(labels)
    if len(labels) > MAX_IMAGES:
        keep = np.random.default_rng(0).choice(len(labels), MAX_IMAGES, replace=False)
        vectors, labels = vectors[keep], labels[keep]
    return calibrate_duplicates(sims, vectors, labels, encoder.metric)
