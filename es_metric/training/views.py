"""Augmented views of a photo as its own positives (the contrastive, Siamese objective without
labels): a product with a single photo still teaches the head what must not matter.

Views are random resized crops and mirror images (``crop``), optionally with colour jitter
(``crop+colour``). View ``v`` of a photo is drawn from a generator seeded by the photo's bytes,
``v`` and the run's seed, so it is the same view whichever other photos are computed with it and
however the photo's path is spelt (relative, absolute, a copy in another folder): the
pretrained backbone's features of each view are cached per photo (featurestore), like the plain
features, and a head trains on them in seconds.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..model.encoder import backbone_spec, create_encoder
from .config import AUGMENTATIONS
from .data import ImageDataset, Sample
from .features import feature_config, feature_store, run_dataset

__all__ = ["view_features", "view_transform"]


def view_transform(policy: str, size: int, mean, std):
    """The random view of a photo under ``policy``."""
    import torchvision.transforms.v2 as T

    if policy not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {policy!r}", hint="valid: " + ", ".join(AUGMENTATIONS))
    steps = [T.PILToTensor(), T.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
             T.RandomHorizontalFlip()]
    if policy == "crop+colour":
        steps.append(T.ColorJitter(0.3, 0.3, 0.3, 0.05))
    return T.Compose(steps + [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


class SeededViews(ImageDataset):
    """View ``view`` of each photo, drawn from a generator seeded by the photo's content (its
    SHA-256): the path as typed would give ``photo.jpg`` and ``./photo.jpg`` different crops,
    while the feature cache, keyed by the absolute path, holds whichever was computed first."""

    def __init__(self, samples: Sequence[Sample], transform, view: int, seed: int, draft: int) -> None:
        super().__init__(samples, transform, draft)
        self.view, self.seed = view, seed

    def __getitem__(self, i: int):
        img, content = self.load(i)
        digest = hashlib.sha256(f"{content}|{self.view}|{self.seed}".encode()).digest()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
            return self.transform(img), self.samples[i].label


def view_features(name: str, samples: Sequence[Sample], views: int, policy: str, *,
                  weights: str | None = None, seed: int = 0, device: str = "cpu",
                  module: torch.nn.Module | None = None, pool: str = "avg") -> torch.Tensor:
    """(views x len(samples)) x D features of the pretrained backbone ``name`` (or of ``module``,
    an untrained one: not cached): view v of sample i is row ``v * len(samples) + i``."""
    if views <= 0 or not samples:
        return torch.zeros(0)
    spec = backbone_spec(name)
    transform = view_transform(policy, spec.preprocess.size, spec.preprocess.mean, spec.preprocess.std)
    backbone: list[torch.nn.Module] = [module] if module is not None else []
    out = []
    for v in range(views):
        def compute(positions: list[int], v: int = v) -> np.ndarray:
            if not backbone:
                backbone.append(create_encoder(name, pretrained=True, weights=weights, pool=pool).backbone)
            ds = SeededViews([samples[i] for i in positions], transform, v, seed, spec.preprocess.size * 2)
            return run_dataset(backbone[0], ds, desc=f"{name} views {v + 1}/{views}", device=device).float().numpy()

        if module is not None:
            out.append(compute(list(range(len(samples)))))
            continue
        config = feature_config(name, weights, pool, f"view-content|{policy}|{v}|{seed}")
        out.append(feature_store().features(config, [s.path for s in samples], compute))
    return torch.from_numpy(np.concatenate(out))
