"""The embedding path shared by training, evaluation, the workers and search."""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .encoder import Encoder, Preprocess

log = logging.getLogger(__name__)


def to_tensor(img: Image.Image, pre: Preprocess) -> torch.Tensor:
    """Resize the short side to ``pre.size``, centre-crop, scale to [0,1], normalise."""
    img = TF.resize(img, pre.size, antialias=True)
    img = TF.center_crop(img, [pre.size, pre.size])
    t = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return TF.normalize(t, list(pre.mean), list(pre.std))


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
    return embed_tensors(encoder, torch.stack([to_tensor(im, pre) for im in images]), batch_size)


def set_threads(n: int | None) -> None:
    """Bound torch's intra-op threads (several worker processes share the cores)."""
    if n and n > 0:
        torch.set_num_threads(n)
