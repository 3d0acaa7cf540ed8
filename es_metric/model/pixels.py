"""Decoded image -> the runtimes' input (uint8 S x S x 3, centre square), with or without torch.

One recipe, two kernels: crop the centre square, then resize it to S x S with an antialiased
bilinear filter. With torch: its uint8 kernel (``embed.to_pixels``, the pixels training saw,
about 2.5x cheaper than Pillow's). Without torch (a light worker node, the query path of a node
that embeds with ONNX Runtime): Pillow's bilinear resize of the cropped square, the filter
torch's kernel was written to match: the pixels differ by at most 1 (rounding), and the vectors
stay within the parity tolerance of torch's (tests/unit/model/test_pixels.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .runtime import installed


def pillow_pixels(img: Image.Image, size: int) -> np.ndarray:
    """The centre square of ``img`` resized to ``size`` x ``size`` by Pillow: uint8 H x W x 3.
    Cropped first, as torch's path does: a resize of a ``box`` would filter across its edges
    with the pixels outside it (up to 14 levels off torch's in the first and last columns)."""
    w, h = img.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img)


def square_pixels(img: Image.Image, size: int, torch_kernel: bool | None = None) -> np.ndarray:
    """The centre square of ``img`` resized to ``size`` x ``size``: uint8 H x W x 3.
    ``torch_kernel``: resize with torch's kernel (None: when torch is installed, as the workers
    and training do; False: never import torch, as the query path of ONNX Runtime does)."""
    if torch_kernel is None:
        torch_kernel = installed("torch")
    if torch_kernel:
        from .embed import to_pixels

        return to_pixels(img, size).permute(1, 2, 0).numpy()
    return pillow_pixels(img, size)


def pixel_stack(pixels: Sequence[np.ndarray]) -> np.ndarray:
    """N x S x S x 3 uint8, contiguous (what the runtimes take)."""
    return np.stack(list(pixels))
