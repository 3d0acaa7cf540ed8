"""Safe image decoding: every input becomes an RGB image or an ImageError with a reason.

Handles truncated, empty and non-image files, decompression bombs, CMYK, 16-bit, palette with
transparency, animated GIF/WebP (first frame), EXIF orientation and wrong file extensions
(the format is sniffed from the bytes, never taken from the name).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

try:  # libjpeg-turbo in one call for plain JPEGs (a dependency; Pillow remains the fallback)
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | Path, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """The file's bytes, or ImageError(missing_file / too_large / empty_file / unreadable)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{path.name}: {size} bytes is over the {limits.max_bytes}-byte limit",
                             reason="too_large")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file", reason="missing_file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory", reason="not_a_file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied", reason="unreadable") from None
    if not data:
        raise ImageError(f"{path.name}: empty file", reason="empty_file")
    return data


def decode(data: bytes, limits: DecodeLimits = DecodeLimits(), draft: int | None = None) -> Image.Image:
    """Decode bytes to an RGB image. ``draft``: let JPEG decode at reduced size (≥ draft px)."""
    if not data:
        raise ImageError("empty file", reason="empty_file")
    fast = _plain_jpeg(data, limits, draft)
    if fast is not None:
        return fast
    img = _open(data, limits)
    if draft and img.format == "JPEG":
        img.draft("RGB", (draft, draft))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"corrupt or truncated {img.format} image: {exc}", reason="corrupt_image") from None
    return to_rgb(img)


def _plain_jpeg(data: bytes, limits: DecodeLimits, draft: int | None) -> Image.Image | None:
    """The common case, a plain baseline/progressive YCbCr or grey JPEG without EXIF, decoded
    by libjpeg-turbo in one GIL-free call (simplejpeg): the same pixels as Pillow's path, with
    Pillow's draft scale (1/2, 1/4, 1/8 when the image is at least that much larger than
    ``draft``), at a fraction of the Python overhead. Anything else, or any doubt (EXIF
    orientation, CMYK, over the pixel limit, a decoder warning), returns None and Pillow
    decides, with its reasons."""
    if simplejpeg is None or data[:3] != b"\xff\xd8\xff" or b"Exif\x00\x00" in data[:65536]:
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray") or not 0 < w * h <= limits.max_pixels:
            return None
        scale = min(w // draft, h // draft) if draft else 1
        k = next((x for x in (8, 4, 2) if scale >= x), 1)
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-h // k),
                                     min_width=-(-w // k), min_factor=k, strict=True)
    except (ValueError, RuntimeError, OSError):
        return None
    return Image.fromarray(arr, "RGB")


def _signature(data: bytes) -> str | None:
    """The allowed format whose signature (magic bytes) ``data`` starts with, if any."""
    Image.init()
    for fmt in sorted(ALLOWED_FORMATS):
        accept = Image.OPEN.get(fmt, (None, None))[1]
        if accept and accept(data[:16]):
            return fmt
    return None


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        fmt = _signature(data)
        if fmt:  # it says it is one of ours, but the header does not parse: truncated or corrupt
            raise ImageError(f"corrupt or truncated {fmt} header", reason="corrupt_image") from None
        raise ImageError("not an image (or an unsupported format)", reason="not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb refused: {exc}", reason="too_many_pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"unreadable image header: {exc}", reason="corrupt_image") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})", reason="corrupt_image")
    if w * h > limits.max_pixels:
        raise ImageError(f"{w}x{h} = {w * h} pixels is over the {limits.max_pixels} limit "
                         "(possible decompression bomb)", reason="too_many_pixels")
    if getattr(img, "is_animated", False):
        img.seek(0)
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; transparency composited on white, 16-bit scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, limits: DecodeLimits = DecodeLimits(), draft: int | None = None):
    """(RGB image, sha256 of the file bytes) for a path; ImageError with a reason otherwise."""
    data = read_bytes(path, limits)
    return decode(data, limits, draft), content_hash(data)
