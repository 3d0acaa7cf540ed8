"""Backbone features cached on disk: pooled features (what a frozen-backbone head trains on and
evaluation reuses), and feature maps with the descriptors pooled from them.

A sweep of poolings (average, GeM), flip-averaging and heads then costs one backbone pass per
image and view instead of one per configuration. Maps are kept in float16 (N x C x H x W).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..model.embed import PIXELS_VERSION, to_tensor
from ..model.encoder import Preprocess, backbone_spec, create_encoder, pool_maps
from ..progressbar import progress_iter
from .data import ImageDataset, Sample, cache_dir, loader
from .featurestore import FeatureStore

log = logging.getLogger(__name__)


def run_module(module: torch.nn.Module, samples: Sequence[Sample], pre: Preprocess,
               batch_size: int = 32, desc: str = "embedding", device: str = "cpu") -> torch.Tensor:
    """Outputs of ``module`` for every sample, in order, with a progress bar; computed on
    ``device`` (the module goes back to the CPU afterwards), returned on the CPU."""
    ds = ImageDataset(samples, lambda im: to_tensor(im, pre), draft=pre.size)
    return run_dataset(module, ds, batch_size, desc, device)


@torch.inference_mode()
def run_dataset(module: torch.nn.Module, ds: Dataset, batch_size: int = 32, desc: str = "embedding",
                device: str = "cpu") -> torch.Tensor:
    """``run_module`` over any dataset of (image tensor, label): e.g. random views of photos."""
    module.eval().to(device)
    try:
        out = [module(x.to(device).contiguous(memory_format=torch.channels_last)).cpu()
               for x, _ in progress_iter(loader(ds, batch_size), desc, total=-(-len(ds) // batch_size))]
    finally:
        module.to("cpu")
    return torch.cat(out) if out else torch.zeros(0)


def feature_config(name: str, weights: str | None, pool: str, extra: str = "") -> str:
    """What computed a feature: backbone, weights (and their file's size and time), preprocessing,
    the pixel path's version, pooling."""
    spec = backbone_spec(name)
    wid = weights
    if weights and os.path.exists(weights):
        st = os.stat(weights)
        wid = f"{os.path.abspath(weights)}:{st.st_size}:{st.st_mtime_ns}"
    return f"{name}|{wid}|{spec.preprocess}|{PIXELS_VERSION}|{pool}|{extra}"


def feature_store() -> FeatureStore:
    return FeatureStore(cache_dir() / "features.sqlite")


def backbone_features(name: str, samples: Sequence[Sample], weights: str | None = None,
                      pretrained: bool | None = None, batch_size: int = 32,
                      module: torch.nn.Module | None = None, pool: str = "avg",
                      device: str = "cpu") -> torch.Tensor:
    """Pooled backbone features (of ``module`` if given); a pretrained backbone's are cached per
    photo (training/featurestore.py), so only photos never seen are computed."""
    spec = backbone_spec(name)
    pool = getattr(module, "pool", pool)

    def compute(positions: list[int]) -> np.ndarray:
        nonlocal module
        if module is None:
            with torch.random.fork_rng(devices=[]):  # an untrained backbone: the same one every run
                torch.manual_seed(0)
                module = create_encoder(name, pretrained=pretrained, weights=weights, pool=pool).backbone
        part = [samples[i] for i in positions]
        return run_module(module, part, spec.preprocess, batch_size, f"{name} features", device).float().numpy()

    if not pretrained:  # random initialisations are not worth keeping
        return torch.from_numpy(compute(list(range(len(samples)))))
    feats = feature_store().features(feature_config(name, weights, pool), [s.path for s in samples], compute)
    return torch.from_numpy(feats)


class _Maps(nn.Module):
    """The backbone's last feature maps (float16), of the image or of its mirror image."""

    def __init__(self, backbone: nn.Module, flip: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return self.backbone.maps(x).half()


def _key(name: str, size: int, flip: bool, samples: Sequence[Sample]) -> str:
    h = hashlib.sha256(f"maps|{name}|{size}|{flip}|{PIXELS_VERSION}|".encode())
    h.update("\n".join(f"{s.path}:{os.path.getmtime(s.path)}" for s in samples).encode())
    return h.hexdigest()[:20]


def feature_maps(name: str, samples: Sequence[Sample], *, size: int | None = None,
                 flip: bool = False, batch_size: int = 32) -> torch.Tensor:
    """N x C x H x W float16 maps of the pretrained backbone ``name`` (an EfficientNet-Lite),
    at ``size`` pixels (default: the size it embeds at), cached on disk."""
    spec = backbone_spec(name)
    size = size or spec.preprocess.size
    path = cache_dir() / f"maps-{name}-{size}-{'flip' if flip else 'id'}-{_key(name, size, flip, samples)}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    backbone = create_encoder(name, pretrained=True).backbone
    pre = Preprocess(size, spec.preprocess.mean, spec.preprocess.std)
    maps = run_module(_Maps(backbone, flip), samples, pre, batch_size, f"{name}@{size} maps")
    torch.save(maps, path)
    return maps


def pooled(maps: torch.Tensor, pool: str = "avg", chunk: int = 512) -> torch.Tensor:
    """N x C float32 descriptors from cached float16 maps."""
    return torch.cat([pool_maps(maps[i:i + chunk].float(), pool) for i in range(0, len(maps), chunk)])


def descriptors(name: str, samples: Sequence[Sample], *, pool: str = "avg", flip: bool = False,
                sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Pooled features; with several views (the image and its mirror image, several input
    sizes) the mean of the views' L2-normalised descriptors. One view: as the encoder pools it."""
    views = [pooled(feature_maps(name, samples, size=size, flip=mirrored), pool)
             for size in (sizes or [None]) for mirrored in ([False, True] if flip else [False])]
    if len(views) == 1:
        return views[0]
    return torch.stack([F.normalize(v, dim=-1) for v in views]).mean(0)
