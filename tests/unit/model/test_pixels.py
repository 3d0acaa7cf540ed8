"""The two kernels of the runtimes' input (model/pixels.py): Pillow's, which a node without torch
and the query path of ONNX Runtime use, gives torch's pixels up to rounding. No services."""
import numpy as np
import pytest
from PIL import Image

from es_metric.model.pixels import square_pixels


def grainy(w: int, h: int, seed: int = 0) -> Image.Image:
    """Per-pixel grain over a gradient: every column differs from its neighbours, so a filter
    that reaches past the crop's edge shows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 40, h)[:, None, None]
    return Image.fromarray(np.clip(ramp + rng.integers(0, 56, (h, w, 3)), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("w,h,size", [(150, 113, 64), (113, 150, 64), (500, 333, 224), (90, 200, 224),
                                      (64, 64, 64), (30, 50, 48), (348, 348, 224)])
def test_pillow_kernel_gives_torchs_pixels_up_to_rounding(w, h, size):
    """Down- and upscaled, oblong both ways and square: the same centre square, the same filter,
    at most one level apart (a resize of Pillow's ``box`` instead of the cropped square was up to
    14 levels off in the first and last columns)."""
    img = grainy(w, h)
    light = square_pixels(img, size, torch_kernel=False)
    reference = square_pixels(img, size, torch_kernel=True)
    assert light.shape == reference.shape == (size, size, 3) and light.dtype == np.uint8
    diff = np.abs(light.astype(np.int16) - reference.astype(np.int16))
    assert diff.max() <= 1, f"columns off by more than one level: {sorted(set(np.nonzero(diff > 1)[1]))[:8]}"
    assert (diff > 0).mean() < 0.02
