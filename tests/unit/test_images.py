"""Safe decoding: every awkward file is decoded correctly or refused with its reason."""
import io

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
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


# fewest leading bytes by which each allowed format is recognised (its signature)
SIGNATURE_BYTES = {"JPEG": 3, "PNG": 8, "GIF": 6, "WEBP": 16, "BMP": 2, "TIFF": 4}
# conservative: random bytes starting like this might be taken for an image's header
SIGNATURE_STARTS = (b"\xff\xd8", b"\x89P", b"GIF", b"BM", b"RIFF", b"II", b"MM")


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


ENCODED = {fmt: _encoded(fmt) for fmt in SIGNATURE_BYTES}


def _reason(data: bytes) -> str:
    try:
        img = decode(data)
    except ImageError as exc:
        return exc.reason
    assert img.mode == "RGB" and img.size == (32, 24)
    return "ok"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_are_not_an_image(noise):
    """Bytes that start like no allowed format are refused as not_an_image (empty: empty_file)."""
    assume(not noise.startswith(SIGNATURE_STARTS))
    assert _reason(noise) == ("empty_file" if not noise else "not_an_image")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ENCODED)), st.floats(0, 1))
def test_fuzz_truncated_images_have_the_reason_of_where_they_were_cut(fmt, where):
    """An image cut short is: empty, not an image (its signature incomplete), corrupt (cut in
    its header or pixel data), or, complete, decoded."""
    data = ENCODED[fmt]
    cut = round(where * len(data))
    if cut == 0:
        expected = "empty_file"
    elif cut < SIGNATURE_BYTES[fmt]:
        expected = "not_an_image"
    elif cut == len(data):
        expected = "ok"
    elif cut < len(data) - 20:  # (PNG and GIF decode without their last few bytes: trailer, IEND)
        expected = "corrupt_image"
    else:
        return
    assert _reason(data[:cut]) == expected, (fmt, cut, len(data))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(ENCODED)), st.binary(min_size=1, max_size=512))
def test_fuzz_bytes_after_a_complete_image_are_ignored(fmt, tail):
    """A polyglot (an image followed by anything: a zip, HTML) decodes as the image."""
    assert _reason(ENCODED[fmt] + tail) == "ok"


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(ENCODED)), st.integers(0, 10_000), st.binary(min_size=1, max_size=64))
def test_fuzz_overwritten_bytes_give_a_known_outcome(fmt, at, patch):
    """Bytes overwritten anywhere inside a valid image (signature kept): decoded, or refused as
    corrupt or too large; never another outcome, never another exception."""
    data = bytearray(ENCODED[fmt])
    at = SIGNATURE_BYTES[fmt] + at % (len(data) - SIGNATURE_BYTES[fmt])
    data[at:at + len(patch)] = patch
    try:
        img = decode(bytes(data))
    except ImageError as exc:
        assert exc.reason in ("corrupt_image", "too_many_pixels"), exc.reason
    else:
        assert img.mode == "RGB"


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
