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
