"""Safe image decoding: every input becomes an RGB image or an ImageError with a reason.

Handles truncated, empty and non-image files, decompression bombs, CMYK, 16-bit, palette with
transparency, animated GIF/WebP (first frame), EXIF orientation and wrong file extensions
(the format is sniffed from the bytes, never taken from the name).
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["ALLOWED_FORMATS", "content_hash", "decode", "DecodeLimits", "DEFAULT_MAX_BYTES",
           "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "image_format", "load_image", "read_bytes", "regular_file",
           "to_rgb"]

try:  # libjpeg-turbo in one call for plain JPEGs (a dependency; Pillow remains the fallback)
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
# file names a training folder reads as images (ingest sniffs every file instead)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def regular_file(path: str | Path) -> bool:
    """True for an existing regular file (not a device, pipe, socket or folder)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_bytes(path: str | Path, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """The bytes of a regular file, never more than ``limits.max_bytes``; ImageError
    (missing_file / not_a_file / too_large / empty_file / unreadable) otherwise.

    Devices, pipes and sockets are refused before they are opened (``/dev/zero`` has size 0
    by ``stat`` and never ends), and checked again on the open file; the read itself is
    bounded, so a file that grows meanwhile cannot exceed the limit either."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(f"{path}: not a regular file", reason="not_a_file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(f"{path}: not a regular file", reason="not_a_file")
            if info.st_size > limits.max_bytes:
                raise ImageError(f"{path.name}: {info.st_size} bytes is over the "
                                 f"{limits.max_bytes}-byte limit", reason="too_large")
            data = fh.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file", reason="missing_file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied", reason="unreadable") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})",
                         reason="unreadable") from None
    if len(data) > limits.max_bytes:
        raise ImageError(f"{path.name}: over the {limits.max_bytes}-byte limit", reason="too_large")
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


def image_format(data: bytes, limits: DecodeLimits = DecodeLimits()) -> str:
    """The format of an image's bytes (``JPEG``, ``PNG``, ...) from its header, sniffed, not
    decoded; ImageError when it is no image of an allowed format, or over the pixel limit."""
    return str(_open(data, limits).format)


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


# 16-bit sample -> 8-bit, in integer arithmetic: x * 255 // 65535 is exactly what the float64
# formula clip(x / 65535 * 255) gave, for every one of the 65536 values.
_LUT16 = (np.arange(65536, dtype=np.uint32) * 255 // 65535).astype(np.uint8)


def _to_8bit(img: Image.Image) -> np.ndarray:
    """A 16-bit or 32-bit grey image as uint8, at most a few bytes per pixel in memory (a
    float64 copy would take 8, and three of them at the 40 Mpixel limit over 300 MB)."""
    if img.mode.startswith("I;16"):
        return _LUT16[np.asarray(img).astype(np.uint16, copy=False)]
    if img.mode == "I":
        arr = np.array(img, dtype=np.int32)
        if arr.max(initial=0) > 255:
            return _LUT16[np.clip(arr, 0, 65535, out=arr).astype(np.uint16)]
        return np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    arr = np.array(img, dtype=np.float32)  # "F": float32 in place
    np.nan_to_num(arr, copy=False, nan=0.0, posinf=65535.0, neginf=0.0)
    if arr.max(initial=0) > 255:
        np.multiply(arr, np.float32(255 / 65535), out=arr)
    return np.clip(arr, 0, 255, out=arr).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; transparency composited on white, 16-bit scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_8bit(img), "L").convert("RGB")
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
