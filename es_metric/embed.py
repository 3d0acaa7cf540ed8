"""The embedding path shared by training, evaluation, the workers and search."""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .encoder import Encoder, Preprocess

log = logging.getLogger(__name__)

# Bumped when the pixels fed to the model change (cached features are keyed by it).
PIXELS_VERSION = 2


def to_pixels(img: Image.Image, size: int) -> np.ndarray:
    """The centre square of ``img`` resized to ``size`` x ``size`` (bilinear, antialiased), as
    uint8 HWC. One Pillow call (crop box + resize): the same pixels as resizing the short side
    and centre-cropping, without the intermediate image. Pillow releases the GIL here, so the
    decode threads do this while the model runs."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(out)


def normalise(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 ...HWC -> float32 ...HWC, scaled to [0,1] and normalised (numpy: no GIL, no torch
    thread pool, so it runs beside the forward pass)."""
    x = pixels.astype(np.float32)
    x -= np.asarray(pre.mean, np.float32) * 255
    x *= 1 / (np.asarray(pre.std, np.float32) * 255)
    return x


def hwc_batch(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack float HWC arrays into an NCHW tensor that is channels_last in memory (no copy)."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def to_tensor(img: Image.Image, pre: Preprocess) -> torch.Tensor:
    """Resize the short side to ``pre.size``, centre-crop, scale to [0,1], normalise (CHW)."""
    return torch.from_numpy(normalise(to_pixels(img, pre.size), pre)).permute(2, 0, 1)


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.inference_mode()
def embed_tensors(encoder: Encoder, tensors: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Embeddings (float32, one row per image) for a stack of preprocessed images."""
    encoder.eval()
    out = [encoder(chunk.contiguous(memory_format=torch.channels_last)) for chunk in
           torch.split(tensors, batch_size)]
    return torch.cat(out).float().numpy() if out else np.zeros((0, encoder.dim), np.float32)


def embed_images(encoder: Encoder, images: Sequence[Image.Image], pre: Preprocess,
                 batch_size: int = 64) -> np.ndarray:
    if not images:
        return np.zeros((0, encoder.dim), np.float32)
    return embed_tensors(encoder, hwc_batch([normalise(to_pixels(im, pre.size), pre) for im in images]),
                         batch_size)


def set_threads(n: int | None) -> None:
    """Bound torch's intra-op threads (several worker processes share the cores)."""
    if n and n > 0:
        torch.set_num_threads(n)
