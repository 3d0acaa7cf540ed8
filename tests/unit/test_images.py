"""Safe decoding: every awkward file is decoded correctly or refused with its reason."""
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from es_metric.errors import ImageError
from es_metric.images import DecodeLimits, decode, read_bytes, to_rgb
from tests.badimages import corpus_files, png_header_only

CORPUS = corpus_files()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_outcome(name):
    data, expected = CORPUS[name]
    if expected == "ok":
        img = decode(data)
        assert img.mode == "RGB" and img.size[0] >= 1
    else:
        with pytest.raises(ImageError) as info:
            decode(data)
        assert info.value.reason == expected


def test_exif_orientation_is_applied():
    img = decode(CORPUS["ok_exif_rotated.jpg"][0])
    assert img.size == (30, 60)  # stored 60x30, displayed rotated


def test_animated_takes_first_frame():
    img = decode(CORPUS["ok_animated.gif"][0])
    r, g, b = img.getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def test_transparency_composited_on_white_and_16bit_scaled():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    sixteen = Image.new("I;16", (2, 1))
    sixteen.putdata([0, 65535])
    assert [to_rgb(sixteen).getpixel((x, 0))[0] for x in (0, 1)] == [0, 255]


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageError, match="over the 100 limit") as info:
        decode(png_header_only(20, 20), DecodeLimits(max_pixels=100))
    assert info.value.reason == "too_many_pixels"


def test_read_bytes_reasons(tmp_path):
    with pytest.raises(ImageError) as info:
        read_bytes(tmp_path / "missing.jpg")
    assert info.value.reason == "missing_file"
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(ImageError) as info:
        read_bytes(big, DecodeLimits(max_bytes=1000))
    assert info.value.reason == "too_large"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 2000))
def test_fuzz_decode_never_crashes(noise, cut):
    """Random bytes, and mutated real images, either decode to RGB or raise ImageError."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buf, "PNG")
    for data in (noise, buf.getvalue()[:cut] + noise, buf.getvalue()[:cut]):
        try:
            assert decode(data).mode == "RGB"
        except ImageError as exc:
            assert exc.reason


def test_only_regular_files_are_read(tmp_path):
    """``/dev/zero`` has size 0 by stat and never ends; a FIFO blocks its reader until a writer
    comes. Neither is read: refused before open."""
    import os

    os.mkfifo(tmp_path / "pipe.jpg")
    for path in ("/dev/zero", tmp_path / "pipe.jpg", tmp_path):
        with pytest.raises(ImageError) as info:
            read_bytes(path, DecodeLimits(max_bytes=1000))
        assert info.value.reason == "not_a_file", path


def _float64_reference(img: Image.Image) -> np.ndarray:
    """The conversion es-metric used before: float64 arithmetic (8 bytes a pixel, 3 copies)."""
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    return np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode,high", [("I;16", 65536), ("I;16B", 65536), ("I", 65536), ("I", 256),
                                       ("I", 70000)])
def test_16bit_conversion_gives_the_float64_pixels(mode, high):
    rng = np.random.default_rng(3)
    values = rng.integers(-5 if mode == "I" else 0, high, 41 * 23)
    values[:6] = [0, 1, 257, 255, high - 1, 32768 % high]
    img = Image.new(mode, (41, 23))
    img.putdata(values.tolist())
    got = np.asarray(to_rgb(img))
    assert got.dtype == np.uint8 and got.shape == (23, 41, 3)
    np.testing.assert_array_equal(got[..., 0], _float64_reference(img))
    assert (got[..., 0] == got[..., 2]).all()


def test_16bit_conversion_every_value_and_peak_memory():
    """All 65536 sample values convert like the float64 formula, and the conversion holds a
    few bytes a pixel, not the 24 of three float64 copies (tracemalloc sees numpy's memory)."""
    import tracemalloc

    ramp = Image.fromarray(np.arange(65536, dtype=np.uint16).reshape(256, 256))
    np.testing.assert_array_equal(np.asarray(to_rgb(ramp))[..., 0], _float64_reference(ramp))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 65536, (600, 800), dtype=np.uint16))
    tracemalloc.start()
    try:
        to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / (600 * 800) < 6, f"{peak / (600 * 800):.1f} bytes per pixel"
