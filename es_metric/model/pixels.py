"""Decoded image -> the runtimes' input (uint8 S x S x 3, centre square), with or without torch.

With torch: its uint8 antialiased bilinear kernel (``embed.to_pixels``, the pixels training
saw). Without torch (a light worker node): Pillow's bilinear resize, the same filter; the
vectors stay within the parity tolerance of torch's (tests/unit/model/test_light_worker.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .runtime import installed


def square_pixels(img: Image.Image, size: int) -> np.ndarray:
    """The centre square of ``img`` resized to ``size`` x ``size``: uint8 H x W x 3."""
    if installed("torch"):
        from .embed import to_pixels

        return to_pixels(img, size).permute(1, 2, 0).numpy()
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=box))


def pixel_stack(pixels: Sequence[np.ndarray]) -> np.ndarray:
    """N x S x S x 3 uint8, contiguous (what the runtimes take)."""
    return np.stack(list(pixels))
