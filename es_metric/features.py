"""Backbone feature maps cached on disk, and the descriptors pooled from them.

A sweep of poolings (average, GeM), flip-averaging and heads then costs one backbone pass per
image and view instead of one per configuration. Maps are kept in float16 (N x C x H x W).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import Sample
from .embed import PIXELS_VERSION
from .encoder import Preprocess, backbone_spec, create_encoder, pool_maps
from .evaluate import cache_dir, run_module

log = logging.getLogger(__name__)


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
    at ``size`` pixels (default: its native size), cached on disk."""
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
