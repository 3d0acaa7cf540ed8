"""A frozen backbone: the head learns on cached features of the catalogue's photos (and of their
augmented views), validated on the run's own queries, then refit on everything.

1. features of every photo (cached on disk), and of ``cfg.views`` augmented views of the photos
   that need them (``cfg.view_photos``: the photos of one-photo products, or all; at most
   ``cfg.max_view_photos`` of them, ``view_photos``);
2. the head trains on the validation split's training photos, early stopping on the gate
   protocol's queries;
3. both protocols, the gate, the re-ranking and the threshold are measured on that head;
4. the shipped head is retrained on every photo for the epoch count early stopping chose.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

import numpy as np
import torch

from ..model.encoder import Encoder, backbone_own
from .catalogue import Catalogue
from .config import EpochCallback, TrainConfig
from .data import Sample
from .features import backbone_features
from .head import fit_head, refit_head
from .headdata import HeadData, head_data
from .losses import Objective
from .validate import Embedder, Validator
from .verdict import calibration_threshold, validation_metrics
from .views import view_features

__all__ = ["CachedFeatures", "train_frozen", "view_photos"]


def view_photos(samples: Sequence[Sample], cfg: TrainConfig) -> tuple[list[Sample], int]:
    """(the photos whose augmented views are computed, in catalogue order; how many could have
    been): every photo (``--view-photos all``) or those of products with at most two; beyond
    ``cfg.max_view_photos`` (0: no bound) the photos of one-photo products first, whose only
    positives are their views, then whole products in an order seeded by the run's seed (a
    product's photos all with views or none: its mean in the whitening is not pulled toward
    the photos that have them)."""
    counts = Counter(s.cls for s in samples)
    wanted = [s for s in samples if cfg.view_photos == "all" or counts[s.cls] <= 2]
    bound = cfg.max_view_photos
    if not bound or len(wanted) <= bound:
        return wanted, len(wanted)
    products = list(dict.fromkeys(s.cls for s in wanted))  # each with all its photos in ``wanted``
    single = [p for p in products if counts[p] == 1]
    others = sorted(p for p in products if counts[p] > 1)
    random.Random(cfg.seed).shuffle(others)
    keep, room = set(single[:bound]), max(0, bound - len(single))
    for p in others:
        if counts[p] <= room:
            keep.add(p)
            room -= counts[p]
    return [s for s in wanted if s.cls in keep], len(wanted)


class CachedFeatures:
    """Backbone features of a catalogue's photos (and augmented views), looked up by path."""

    def __init__(self, cfg: TrainConfig, cat: Catalogue, encoder: Encoder, views: bool = True) -> None:
        self.samples = cat.samples
        self.rows = {s.path: i for i, s in enumerate(cat.samples)}
        self.feats = backbone_features(cfg.backbone, cat.samples, cfg.weights, cfg.pretrained,
                                       module=encoder.backbone, device=cfg.device).float()
        wanted, self.views_of = view_photos(cat.samples, cfg)
        self.view_rows = {s.path: i for i, s in enumerate(wanted)}
        self.views_wanted = bool(views and cfg.views and cfg.augment != "none")
        self.views = (view_features(cfg.backbone, wanted, cfg.views, cfg.augment, weights=cfg.weights,
                                    seed=cfg.seed, device=cfg.device,
                                    module=None if cfg.pretrained else encoder.backbone,
                                    pool=cfg.pool).float()
                      if self.views_wanted and wanted else None)

    def of(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self.feats[[self.rows[s.path] for s in samples]]

    def head_data(self, samples: Sequence[Sample], groups: dict[str, str], single_only: bool) -> HeadData:
        """Rows for ``samples`` and their views (with ``single_only``: only of products with one
        photo among ``samples``, which have no other positive)."""
        if self.views is None:
            return head_data(samples, self.of(samples), groups)
        counts: dict[str, int] = {}
        for s in samples:
            counts[s.cls] = counts.get(s.cls, 0) + 1
        picked = [i for i, s in enumerate(samples) if s.path in self.view_rows
                  and (not single_only or counts[s.cls] == 1)]
        v = self.views.view(-1, len(self.view_rows), self.views.shape[-1])
        views = v[:, [self.view_rows[samples[i].path] for i in picked]].reshape(-1, v.shape[-1])
        return head_data(samples, self.of(samples), groups, views, picked)


def _embedder(encoder: Encoder, cached: CachedFeatures) -> Embedder:
    def embed(samples: Sequence[Sample]) -> np.ndarray:
        with torch.no_grad():
            return encoder.project(cached.of(samples)).numpy()
    return embed


def _raw(cached: CachedFeatures, encoder: Encoder) -> Embedder:
    """The pretrained baseline: the backbone's own features (with ``stages`` pooling, its last
    convolution's part: what ``--head none`` indexes), normalised."""
    return lambda samples: torch.nn.functional.normalize(
        backbone_own(encoder.backbone, cached.of(samples)), dim=-1).numpy()


def train_frozen(encoder: Encoder, obj: Objective, cfg: TrainConfig, cat: Catalogue,
                 validator: Validator, on_epoch: EpochCallback | None = None) -> tuple[list[dict], dict, dict, int]:
    """(history, metrics, the re-ranking chosen, refit epochs); the encoder's head is the shipped one."""
    cached = CachedFeatures(cfg, cat, encoder)
    single = cfg.view_photos != "all"
    embed = _embedder(encoder, cached)
    measured = bool(validator.measurable)
    train_s = validator.split.train if measured else cat.samples
    history, best_epoch = fit_head(encoder, obj, cfg, cached.head_data(train_s, cat.groups, single),
                                   lambda enc: validator.early_stopping_value(embed, enc.metric), on_epoch)
    against = f"pretrained-cosine {cfg.backbone}"
    metrics, rerank = validation_metrics(validator, embed, _raw(cached, encoder), encoder, against, cfg)
    metrics["measured_head"] = "shipped"
    if cached.views_wanted and cached.views_of > len(cached.view_rows):
        metrics["views_sampled"] = (f"augmented views of {len(cached.view_rows)} of {cached.views_of} photos "
                                    "(every photo of the one-photo products, then whole products in a "
                                    "seeded order): --max-view-photos 0 computes them all")
    # the whitening start is learned from the photos too: at epoch 0 the refit recomputes it on all of them
    whitened = history[0].get("start") == "whiten"
    if not (measured and cfg.refit and (best_epoch > 0 or whitened)):
        return history, metrics, rerank, 0
    refit_head(encoder, obj, cfg, cached.head_data(cat.samples, cat.groups, single), best_epoch)
    metrics["measured_head"] = (
        f"early-stopped head (epoch {best_epoch}) before the refit; the shipped head was retrained on every "
        "photo and has no held-out measurement" if best_epoch else
        "learned whitening of the training photos (epoch 0, no epoch beat it); the shipped head is the "
        "whitening of every photo and has no held-out measurement")
    # the threshold only means something in the shipped head's own space: calibrated again there
    metrics["near_duplicate_threshold"] = calibration_threshold(validator, embed, encoder.metric)
    metrics["near_duplicate_threshold_from"] = ("the shipped (refit) head on validation photos it was "
                                                "trained on: optimistic")
    return history, metrics, rerank, best_epoch
